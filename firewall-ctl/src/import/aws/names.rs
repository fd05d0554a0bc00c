//! Policy names for AWS groups: `GroupName` fitted to the name grammar of
//! policy-format.md (`[a-z0-9][a-z0-9._-]{0,62}`), unique, never taking the
//! name of a referenced group that is not in the input (those are named by
//! their id, which the grammar accepts as it is).

use std::collections::{BTreeMap, BTreeSet};

/// `GroupName` → a valid policy name, or `None` if nothing of it is left
/// (a name of only punctuation). Letters are lowercased, every other
/// character becomes `-`, runs of `-` are folded, and the result is cut to
/// 63 characters.
pub fn normalise(aws_name: &str) -> Option<String> {
    let mut out = String::with_capacity(aws_name.len());
    for c in aws_name.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_') { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut = cut(trimmed, MAX_NAME);
    (!cut.is_empty()).then_some(cut)
}

/// Names for every group id: `groups` are `(id, GroupName)` of the input in
/// order; `placeholders` are ids referenced but not in the input. Every
/// name is unique, whatever the input: each group's id (unique, and a valid
/// name as it is) is kept for that group alone, and is its name when it has
/// no usable `GroupName` or is a placeholder. A named group takes its
/// normalised name unless another group has it, or it is another group's
/// id (a second VPC's `default`, two names that normalise alike, a name
/// that reads `sg-…`); then the name with its id appended; then its id.
pub fn assign(groups: &[(String, Option<String>)], placeholders: &[String]) -> BTreeMap<String, String> {
    let mut taken: BTreeSet<String> = groups.iter().map(|(id, _)| id).chain(placeholders).cloned().collect();
    let mut names: BTreeMap<String, String> = placeholders.iter().map(|id| (id.clone(), id.clone())).collect();
    for (id, aws_name) in groups {
        let name = aws_name.as_deref().and_then(normalise).and_then(|name| {
            // Room for at least one character of the name, `-` and the id.
            let with_id = (id.len() + 2 <= MAX_NAME).then(|| format!("{}-{id}", cut(&name, MAX_NAME - id.len() - 1)));
            [Some(name), with_id].into_iter().flatten().find(|c| !taken.contains(c))
        });
        let name = name.unwrap_or_else(|| id.clone());
        taken.insert(name.clone());
        names.insert(id.clone(), name);
    }
    names
}

/// The longest name the grammar allows.
const MAX_NAME: usize = 63;

/// `name` cut to at most `max` characters, without a trailing `-`.
fn cut(name: &str, max: usize) -> String {
    let cut: String = name.chars().take(max).collect();
    cut.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_sources;

    #[test]
    fn names_fit_the_grammar() {
        assert_eq!(normalise("web-server").as_deref(), Some("web-server"));
        assert_eq!(normalise("My Web SG (prod)").as_deref(), Some("my-web-sg-prod"));
        assert_eq!(normalise("_launch-wizard-1").as_deref(), Some("launch-wizard-1"));
        assert_eq!(normalise("Ünïcode").as_deref(), Some("n-code"));
        assert_eq!(normalise("--"), None);
        assert_eq!(normalise(&"x".repeat(300)).map(|n| n.len()), Some(63));
        for name in ["a b", "A.B_c", "x/y:z", "ääa", &"long-".repeat(30)] {
            let n = normalise(name).expect("a name is left");
            let yaml = format!("groups:\n  {n}:\n    outbound: []\n");
            assert!(parse_sources(&[("n.yaml".into(), yaml)]).is_ok(), "{name} → {n} is not a valid name");
        }
    }

    #[test]
    fn clashes_get_the_group_id() {
        let groups = vec![
            ("sg-01".to_owned(), Some("default".to_owned())),
            ("sg-02".to_owned(), Some("default".to_owned())),
            ("sg-03".to_owned(), Some("sg-09".to_owned())),
            ("sg-04".to_owned(), Some("***".to_owned())),
            ("sg-05".to_owned(), None),
        ];
        let names = assign(&groups, &["sg-09".to_owned()]);
        assert_eq!(names["sg-01"], "default");
        assert_eq!(names["sg-02"], "default-sg-02");
        assert_eq!(names["sg-03"], "sg-09-sg-03");
        assert_eq!(names["sg-04"], "sg-04");
        assert_eq!(names["sg-05"], "sg-05");
        assert_eq!(names["sg-09"], "sg-09");
    }

    #[test]
    fn a_name_that_is_another_groups_id_never_takes_it() {
        // sg-01 calls itself "sg-02", the id sg-02 needs (it has no usable
        // name); sg-03 takes sg-01's fallback; sg-04 and sg-05 normalise
        // alike; sg-07 and sg-08 take what others got or need.
        let groups = vec![
            ("sg-01".to_owned(), Some("sg-02".to_owned())),
            ("sg-02".to_owned(), Some("???".to_owned())),
            ("sg-03".to_owned(), Some("sg-02-sg-01".to_owned())),
            ("sg-04".to_owned(), Some("Web Server".to_owned())),
            ("sg-05".to_owned(), Some("web server".to_owned())),
            ("sg-06".to_owned(), Some("web-server".to_owned())),
            ("sg-07".to_owned(), Some("web-server-sg-06".to_owned())),
            ("sg-08".to_owned(), Some("sg-07".to_owned())),
        ];
        let names = assign(&groups, &[]);
        assert_eq!(names["sg-02"], "sg-02");
        assert_eq!(names["sg-01"], "sg-02-sg-01");
        assert_eq!(names["sg-03"], "sg-02-sg-01-sg-03");
        assert_eq!(names["sg-04"], "web-server");
        assert_eq!(names["sg-05"], "web-server-sg-05");
        assert_eq!(names["sg-06"], "web-server-sg-06");
        assert_eq!(names["sg-07"], "web-server-sg-06-sg-07");
        assert_eq!(names["sg-08"], "sg-07-sg-08");
        let unique: BTreeSet<&String> = names.values().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // The longest ids and names still fit the grammar.
        let long_id = format!("sg-{}", "a".repeat(60));
        let groups = vec![
            (long_id.clone(), Some("x".repeat(80))),
            ("sg-1".to_owned(), Some("x".repeat(80))),
            ("sg-2".to_owned(), Some(long_id.clone())),
            ("sg-3".to_owned(), Some(long_id.clone())),
        ];
        let names = assign(&groups, &[]);
        for name in names.values() {
            let yaml = format!("groups:\n  {name}:\n    outbound: []\n");
            assert!(parse_sources(&[("n.yaml".into(), yaml)]).is_ok(), "{name} is not a valid name");
        }
        let unique: BTreeSet<&String> = names.values().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
