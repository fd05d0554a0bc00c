//! How much policy input sgctl reads, and why each bound is where it is.
//!
//! `sgctl check` runs without privilege on files anyone may hand it, so no
//! input may make it use memory or time out of proportion to what a real
//! policy needs: a YAML alias bomb ("billion laughs"), a 1 GB file, a list
//! nested a million deep, or a prefix list referenced by every rule. Each
//! bound is far above what a host's policy can use — the kernel maps hold at
//! most 1024 rules and 16384 entries per interface — and each is reported as
//! a located error naming the bound (docs/policy-format.md, "Limits").
//! The sizes admit a policy of 1,000 rules with prefix lists of a million
//! CIDRs (issue-7 scale: a country's address blocks), which parses in about
//! a second; an alias bomb is charged its expanded size without being
//! expanded, so it is refused as fast as before.

use firewall_common::policy::MAX_RULES;

/// Bytes of YAML, all files of one policy together: a million quoted CIDRs
/// take about 32 MiB.
pub const MAX_BYTES: usize = 48 << 20;

/// YAML nodes (scalars, lists, maps), all files together, counted after
/// alias expansion: an alias costs as much as the node it repeats, so
/// aliases cannot multiply the work of the later stages.
pub const MAX_NODES: usize = 2_500_000;

/// Nesting of lists and maps, aliases expanded. A policy needs 6 (top
/// level, `groups`, a group, `inbound`, a rule, `source`); the tree is
/// dropped recursively, so it must stay shallow.
pub const MAX_DEPTH: usize = 16;

/// Bytes in one scalar (keys included). The longest meaningful value is a
/// description, at most 255 characters (1020 bytes of UTF-8).
pub const MAX_SCALAR_BYTES: usize = 1024;

/// Groups in one policy; AWS's default quota is 2500 per VPC.
pub const MAX_GROUPS: usize = 4096;

/// Prefix lists in one policy; AWS's default quota is 100 per region.
pub const MAX_PREFIX_LISTS: usize = 1024;

/// Rules of one group, both directions, the implicit outbound rule
/// included: a group with more could not be attached anywhere.
pub const MAX_RULES_PER_GROUP: usize = MAX_RULES;

/// Groups listed for one interface; AWS allows at most 16 per network
/// interface.
pub const MAX_GROUPS_PER_INTERFACE: usize = 256;

/// Addresses named by the rules, each prefix list (`pl:`), group (`sg:`,
/// its `members:`) and CIDR counted once however many rules name it:
/// compiling an interface expands each once, so this bounds its time and
/// memory.
pub const MAX_RULE_ADDRESSES: usize = 4 << 20;

#[cfg(test)]
mod tests {
    //! One test per bound: the input just over it is refused with a located
    //! error naming the bound, the input at it is accepted where that is
    //! cheap to build, and hostile input is refused quickly.

    use std::{
        fmt::Write as _,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::policy::{load_files, parse_sources, Policy, PolicyError};

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        parse_sources(&[("p.yaml".to_owned(), text.to_owned())])
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{}", text.chars().take(400).collect::<String>()),
            Err(e) => e.to_string(),
        }
    }

    /// `groups: {g: {inbound: [RULES]}}` with `n` tcp rules, ports 1..=n.
    fn rules(n: usize, rule_tail: &str) -> String {
        let mut text = String::from("groups:\n  g:\n    outbound: []\n    inbound:\n");
        for i in 0..n {
            let _ = writeln!(text, "      - {{ protocol: tcp, ports: {}, {rule_tail} }}", i % 65535 + 1);
        }
        text
    }

    #[test]
    fn an_empty_group_list_for_an_interface_is_refused_where_it_is() {
        let hint = "an interface without groups is not filtered, so remove the entry to leave it unfiltered, or \
                    list the groups that filter it (eth0: [web-server])";
        let base = "groups:\n  a: {}\ninterfaces:\n";
        assert_eq!(
            err(&format!("{base}  eth0: []\n")),
            format!("p.yaml:4:9: no group listed for interface \"eth0\": {hint}")
        );
        assert_eq!(
            err(&format!("{base}  eth0: [a]\n  eth1:\n")),
            format!("p.yaml:5:3: no group listed for interface \"eth1\": {hint}")
        );
        assert_eq!(
            err(&format!("{base}  eth0: ~\n")),
            format!("p.yaml:4:3: no group listed for interface \"eth0\": {hint}")
        );
        assert_eq!(
            err("groups: {a: {}}\ninterfaces: {eth0: [a], eth1: []}\n"),
            format!("p.yaml:2:31: no group listed for interface \"eth1\": {hint}")
        );
    }

    #[test]
    fn billion_laughs_is_refused_at_the_alias_that_runs_out_quickly() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            let _ = writeln!(text, "a{i}: &a{i} [{refs}]");
        }
        let started = Instant::now();
        let e = err(&text);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        // a0 to a5 hold 11, 111, ..., 1111111 nodes (about 1.23 million in
        // all, with the first *a5 in a6 2.35 million): the second *a5, in a6,
        // is the first alias over 2500000.
        assert_eq!(
            e,
            "p.yaml:7:15: the policy has more than 2500000 YAML values (lists, maps and scalars, aliases counted as \
             what they repeat): that is the most sgctl reads for one policy"
        );
    }

    #[test]
    fn aliases_within_the_budget_are_read_as_copies() {
        let text = "prefix_lists:\n  office: &office [192.0.2.0/24, 198.51.100.0/24]\n  branch: *office\n\
                    groups:\n  a:\n    inbound:\n      - &ssh { protocol: tcp, ports: 22, source: pl:office }\n      - *ssh\n";
        let p = parse(text).expect("aliases are allowed");
        assert_eq!(p.prefix_list("branch").expect("defined").cidrs.len(), 2);
        assert_eq!(p.groups[0].inbound.len(), 2);
        // A copy keeps the position of what it copies.
        assert_eq!((p.groups[0].inbound[1].at.line, p.groups[0].inbound[1].at.col), (7, 9));
    }

    /// Small bounds for the tests of the byte and value budgets: the
    /// mechanism is the same as at the real bounds, which would take a debug
    /// build tens of seconds to fill.
    const TEST_BYTES: usize = 4 << 20;
    const TEST_NODES: usize = 200_000;

    fn parse_small(sources: &[(&str, String)]) -> Result<Policy, PolicyError> {
        let sources: Vec<(String, String)> = sources.iter().map(|(f, t)| ((*f).to_owned(), t.clone())).collect();
        crate::policy::parse_within(&sources, TEST_BYTES, TEST_NODES)
    }

    #[test]
    fn nodes_beyond_the_budget_are_refused_across_files() {
        let list = |n: usize| format!("prefix_lists:\n  l: [{}]\n", vec!["10.0.0.0/8"; n].join(", "));
        // Two maps, two keys and the list: 5 nodes besides the items.
        assert!(parse_small(&[("p.yaml", list(TEST_NODES - 5))]).is_ok());
        let e = parse_small(&[("p.yaml", list(TEST_NODES - 4))]).expect_err("over").to_string();
        assert!(e.starts_with("p.yaml:2:"), "{e}");
        assert!(e.contains(&format!("more than {TEST_NODES} YAML values")), "{e}");
        // The budget is for the policy, not per file.
        let half = list(TEST_NODES / 2);
        let e = parse_small(&[("one.yaml", half.clone()), ("two.yaml", half)]).expect_err("over");
        assert!(e.to_string().starts_with("two.yaml:2:"), "{e}");
        // The real bound is far above a million CIDRs' worth of values.
        const { assert!(MAX_NODES > 2_000_000) };
    }

    #[test]
    fn nesting_beyond_the_depth_is_refused_even_through_aliases() {
        let nested = |n: usize| format!("x: {}{}\n", "[".repeat(n), "]".repeat(n));
        // The top-level map is one level.
        assert!(err(&nested(MAX_DEPTH - 1)).contains("unknown key \"x\""));
        assert_eq!(
            err(&nested(MAX_DEPTH)),
            format!(
                "p.yaml:1:{}: lists and maps nested more than 16 deep (aliases expanded): a policy needs 6 levels",
                MAX_DEPTH + 3
            )
        );
        // Each alias is shallow where it is written; copies would nest 8 levels per step.
        let mut text = String::from("a: &a0 [[[[[[[[]]]]]]]]\n");
        for i in 1..4 {
            let _ = writeln!(text, "b{i}: &a{i} [[[[[[[*a{}]]]]]]]", i - 1);
        }
        assert_eq!(
            err(&text),
            "p.yaml:3:16: lists and maps nested more than 16 deep (aliases expanded): a policy needs 6 levels"
        );
        // Block style, far deeper than the parser's own flow limit of 255.
        let mut text = String::from("x:\n");
        for i in 0..300 {
            let _ = writeln!(text, "{}- ", "  ".repeat(i + 1));
        }
        let e = err(&text);
        assert!(e.contains("nested more than 16 deep"), "{e}");
    }

    #[test]
    fn long_values_are_refused_with_their_start_quoted() {
        let long = "x".repeat(MAX_SCALAR_BYTES + 1);
        assert_eq!(
            err(&format!("groups:\n  a:\n    description: {long}\n")),
            "p.yaml:3:18: value \"xxxxxxxxxxxxxxxxxxxx...\" is 1025 bytes long: values are at most 1024 bytes"
        );
        assert!(err(&format!("{long}: 1\n")).starts_with("p.yaml:1:1: value \"xxxx"));
        // At the bound, the value's own check speaks.
        let at_bound = "x".repeat(MAX_SCALAR_BYTES);
        assert!(err(&format!("groups:\n  a:\n    description: {at_bound}\n"))
            .contains("is 1024 characters long: at most 255"));
    }

    #[test]
    fn merge_keys_are_refused() {
        let text = "base: &base { protocol: tcp }\ngroups:\n  a:\n    inbound:\n      - { <<: *base, ports: 22, source: 10.0.0.0/8 }\n";
        assert_eq!(
            err(text),
            "p.yaml:5:11: YAML merge keys (<<) are not supported: write the keys out in each map (prefix_lists: share \
             address lists)"
        );
    }

    #[test]
    fn files_beyond_the_size_are_refused_where_the_size_runs_out() {
        // TEST_BYTES of comments, then one line more.
        let line = format!("#{}\n", "x".repeat(1022));
        let text = line.repeat(TEST_BYTES / 1024) + "groups: {}\n";
        assert_eq!(
            parse_small(&[("p.yaml", text)]).expect_err("over").to_string(),
            format!(
                "p.yaml:{}:1: the policy files are larger than {TEST_BYTES} bytes together: that is the most sgctl \
                 reads for one policy",
                TEST_BYTES / 1024 + 1
            )
        );
        let half = line.repeat(TEST_BYTES / 2048);
        let e = parse_small(&[("one.yaml", half.clone()), ("two.yaml", half + "x")]).expect_err("over");
        assert!(e
            .to_string()
            .starts_with(&format!("two.yaml:{}:1: the policy files are larger", TEST_BYTES / 2048 + 1)));
        // The real bound holds a million quoted CIDRs.
        const { assert!(MAX_BYTES > 40 << 20) };
    }

    #[test]
    fn an_endless_file_is_refused_without_reading_it_whole() {
        // /dev/zero never ends: returning at all shows reading stopped at
        // the bound (no timing asserted: a loaded CI machine is slow).
        let e = load_files(&["/dev/zero"]).expect_err("too large");
        assert!(e.to_string().starts_with("/dev/zero:1:"), "{e}");
        assert!(e.to_string().contains(&format!("larger than {MAX_BYTES} bytes")), "{e}");
    }

    #[test]
    fn text_that_is_not_utf8_is_located_at_the_first_bad_byte() {
        let path = std::env::temp_dir().join(format!("sgctl-limits-{}.yaml", std::process::id()));
        std::fs::write(&path, b"groups:\n  a: {description: caf\xe9}\n").expect("temp file");
        let e = load_files(&[&path]).expect_err("not UTF-8").to_string();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e, format!("{}:2:23: the file is not UTF-8 text: policies are UTF-8 YAML", path.display()));
    }

    #[test]
    fn too_many_groups_or_prefix_lists() {
        let mut text = String::from("groups:\n");
        for i in 0..=MAX_GROUPS {
            let _ = writeln!(text, "  g{i}: {{}}");
        }
        assert_eq!(
            err(&text),
            format!("p.yaml:{}:3: more than 4096 groups: that is the most one policy defines", MAX_GROUPS + 2)
        );
        let mut text = String::from("prefix_lists:\n");
        for i in 0..=MAX_PREFIX_LISTS {
            let _ = writeln!(text, "  l{i}: []");
        }
        assert_eq!(
            err(&text),
            format!(
                "p.yaml:{}:3: more than 1024 prefix lists: that is the most one policy defines; merge lists",
                MAX_PREFIX_LISTS + 2
            )
        );
    }

    #[test]
    fn too_many_rules_in_one_group() {
        let tail = "source: 10.0.0.0/8";
        assert_eq!(parse(&rules(MAX_RULES_PER_GROUP, tail)).expect("at the bound").groups[0].inbound.len(), 1024);
        assert_eq!(
            err(&rules(MAX_RULES_PER_GROUP + 1, tail)),
            format!(
                "p.yaml:{}:9: more than 1024 rules in group \"g\": that is all one interface holds; split the group",
                MAX_RULES_PER_GROUP + 5
            )
        );
        // The implicit outbound rule counts: it is at the group's name.
        let text = rules(MAX_RULES_PER_GROUP, tail).replacen("    outbound: []\n", "", 1);
        assert!(err(&text).starts_with("p.yaml:2:3: more than 1024 rules in group \"g\""));
    }

    #[test]
    fn too_many_groups_for_one_interface() {
        let mut text = String::from("groups:\n");
        for i in 0..=MAX_GROUPS_PER_INTERFACE {
            let _ = writeln!(text, "  g{i}: {{}}");
        }
        let names: Vec<String> = (0..=MAX_GROUPS_PER_INTERFACE).map(|i| format!("g{i}")).collect();
        let _ = writeln!(text, "interfaces:\n  eth0: [{}]", names.join(", "));
        let line = MAX_GROUPS_PER_INTERFACE + 4;
        let col = 10 + names[..MAX_GROUPS_PER_INTERFACE].iter().map(|n| n.len() + 2).sum::<usize>();
        assert_eq!(
            err(&text),
            format!(
                "p.yaml:{line}:{col}: more than 256 groups for interface \"eth0\": merge groups that are always \
                 attached together"
            )
        );
    }

    #[test]
    fn too_many_addresses_named_by_rules() {
        // A list named by 513 rules counts once; lists, groups and CIDRs add
        // up. Checked with a bound of 3000 (the real one takes millions of
        // values to reach).
        let mut text = rules(513, "source: pl:big");
        let nets: Vec<String> = (0..2048).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
        let _ = writeln!(text, "prefix_lists:\n  big: [{}]\n  small: [{}]", nets.join(", "), nets[..951].join(", "));
        let within = |text: &str| super::super::merge::check_rule_addresses_within(&parse(text)?, 3000);
        assert!(within(&text).is_ok());
        let text = text.replacen("ports: 2, source: pl:big", "ports: 2, source: [pl:small, pl:big, 192.0.2.0/24]", 1);
        assert!(within(&text).is_ok(), "2048 + 951 + 1");
        let over = text.replacen("ports: 3, source: pl:big", "ports: 3, source: [198.51.100.0/24, pl:big]", 1);
        assert_eq!(
            within(&over).expect_err("3000 + 1").to_string(),
            "p.yaml:7:45: the rules name more than 3000 addresses together (each pl: its entries, each sg: its \
             members, each counted once however many rules name it): that is the most one policy's rules name"
        );
    }

    #[test]
    fn numbers_of_any_size_get_a_located_error() {
        let huge = "9".repeat(400);
        let rule = |r: &str| format!("groups:\n  a:\n    inbound:\n      - {{ {r} }}\n");
        for (text, want) in [
            (rule(&format!("protocol: tcp, ports: {huge}, source: 10.0.0.0/8")), "p.yaml:4:33: invalid port"),
            (rule(&format!("protocol: {huge}, source: 10.0.0.0/8")), "p.yaml:4:21: invalid protocol"),
            (rule(&format!("protocol: icmp, icmp_type: {huge}, source: 10.0.0.0/8")), "p.yaml:4:38: invalid icmp_type"),
            (rule(&format!("protocol: all, source: 10.0.0.0/{huge}")), "p.yaml:4:34: invalid CIDR"),
            (format!("conntrack:\n  udp_timeout: {huge}\n"), "p.yaml:2:16: invalid udp_timeout"),
        ] {
            let e = err(&text);
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn control_characters_in_values_keep_the_message_on_one_line() {
        let e = err("groups:\n  a:\n    inbound:\n      - { protocol: \"tcp\\nudp\", source: 10.0.0.0/8 }\n");
        assert_eq!(
            e,
            "p.yaml:4:21: invalid protocol \"tcp\\nudp\": expected tcp, udp, icmp, icmpv6, all, -1 or a protocol number 0-255"
        );
    }

    #[test]
    fn characters_yaml_does_not_allow_are_refused_where_they_are() {
        // Fuzzer finding (fuzz/regressions/nul-byte-shifts-positions): the
        // parser took a NUL for a line end without counting it.
        assert_eq!(
            err("%g@\u{0}\u{0}\nt\u{13}\n"),
            "p.yaml:1:4: character \\u{0} is not allowed in YAML: remove it, or write it as an escape in a \
             \"double-quoted\" value"
        );
        // Lines end at \n, \r\n or a lone \r, as in the YAML parser.
        assert!(err("a: 1\r\nb: 2\rc: \u{7f}\n").starts_with("p.yaml:3:4: character \\u{7f} is not allowed"));
        // Fuzzer finding (fuzz/regressions/directive-counts-bytes-as-chars):
        // the parser counted the bytes of a directive's parameters as
        // characters, so a later error pointed past the end of its line.
        assert_eq!(
            err("groups:\n%r.### é#\u{feff}As:\n"),
            "p.yaml:2:8: a line that starts with % is a YAML directive, and directives are ASCII (%YAML 1.2): remove \
             the line"
        );
        assert!(parse("%YAML 1.2\n---\ngroups: {}\n").is_ok());
        // Tabs, NEL, BOM and printable Unicode are allowed.
        assert!(parse("\u{feff}groups:\t{}\n# \u{85} é 中 \u{1f600}\n").is_ok());
    }

    #[test]
    fn many_keys_and_references_stay_fast() {
        // Duplicate keys, references and repeated attachments are checked
        // with hash sets: 4096 groups, each referencing every 64th group.
        let mut text = String::from("groups:\n");
        for i in 0..MAX_GROUPS {
            let peers: Vec<String> = (0..32).map(|j| format!("sg:g{}", (i + j * 64) % MAX_GROUPS)).collect();
            let _ = writeln!(text, "  g{i}: {{ inbound: [{{ protocol: all, source: [{}] }}] }}", peers.join(", "));
        }
        let started = Instant::now();
        assert_eq!(parse(&text).expect("valid").groups.len(), MAX_GROUPS);
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}
