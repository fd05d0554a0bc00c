//! Policy names for AWS groups: `GroupName` fitted to the name grammar of
//! policy-format.md (`[a-z0-9][a-z0-9._-]{0,62}`), unique, never taking the
//! name of a referenced group that is not in the input (those are named by
//! their id, which the grammar accepts as it is).

use std::collections::BTreeMap;

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
    let cut: String = trimmed.chars().take(63).collect();
    let cut = cut.trim_end_matches('-');
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// Names for every group id: `groups` are `(id, GroupName)` of the input in
/// order; `placeholders` are ids referenced but not in the input.
pub fn assign(groups: &[(String, Option<String>)], placeholders: &[String]) -> BTreeMap<String, String> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let taken = |names: &BTreeMap<String, String>, name: &str| {
        names.values().any(|n| n == name) || placeholders.iter().any(|p| p == name)
    };
    for (id, aws_name) in groups {
        let name = match aws_name.as_deref().and_then(normalise) {
            Some(name) if !taken(&names, &name) => name,
            // A second "default" (one per VPC) or another clash: add the id.
            Some(name) => {
                let keep = 63 - id.len() - 1;
                let stem: String = name.chars().take(keep).collect();
                let with_id = format!("{}-{id}", stem.trim_end_matches('-'));
                if taken(&names, &with_id) {
                    id.clone()
                } else {
                    with_id
                }
            }
            None => id.clone(),
        };
        names.insert(id.clone(), name);
    }
    for id in placeholders {
        names.insert(id.clone(), id.clone());
    }
    names
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
}
