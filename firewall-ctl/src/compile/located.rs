//! Compile errors located in the policy files, for `sgctl check` and the
//! policy fuzz target: a [`CompileError`] says what does not fit, these
//! functions add where the files ask for it — the `interfaces:` entry, or
//! the group that does not fit even alone.

use std::collections::BTreeMap;

use super::{compile_interface, summarize, CompileError, CompiledInterface, Summary};
use crate::policy::{ErrorKind, Group, Location, Policy, PolicyError};

/// [`summarize`], with a failure located at the `interfaces:` entry of the
/// interface that does not compile.
pub fn summarize_located(policy: &Policy) -> Result<Summary, PolicyError> {
    summarize(policy).map_err(|e| {
        let at = match &e {
            CompileError::OnInterface { interface, .. } => {
                policy.interfaces.iter().find(|a| &a.interface == interface).map(|a| &a.at)
            }
            _ => None,
        };
        PolicyError::new(at.unwrap_or(&whole_policy(policy)), ErrorKind::DoesNotFit(e))
    })
}

/// Compiles `group` alone, as `sgctl attach IFACE --groups GROUP` would
/// (without local interface addresses); a group that fails here can never
/// be attached, which is said at its name.
pub fn compile_group_located(policy: &Policy, group: &Group) -> Result<CompiledInterface, PolicyError> {
    compile_interface(policy, std::slice::from_ref(&group.name), &BTreeMap::new())
        .map_err(|error| PolicyError::new(&group.at, ErrorKind::GroupDoesNotFit { group: group.name.clone(), error }))
}

/// Where an error about the policy as a whole points: its first file.
fn whole_policy(policy: &Policy) -> Location {
    let file = policy.files.first().cloned().unwrap_or_default();
    Location { file_index: 0, line: 1, col: 1, file }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use firewall_common::policy::MAX_RULES;

    use super::*;
    use crate::policy::parse_sources;

    fn policy(text: &str) -> Policy {
        parse_sources(&[("t.yaml".into(), text.into())]).expect("test policy parses")
    }

    /// Group `big` with `n` inbound rules and no outbound one, group `small` with its implicit outbound rule.
    fn big_and_small(n: usize) -> String {
        let mut text = String::from("groups:\n  small: {}\n  big:\n    outbound: []\n    inbound:\n");
        for i in 0..n {
            let _ = writeln!(text, "      - {{ protocol: tcp, ports: {}, source: 10.0.0.0/8 }}", i + 1);
        }
        text
    }

    #[test]
    fn an_interface_with_too_many_rules_is_refused_at_its_entry() {
        let text = big_and_small(MAX_RULES) + "interfaces:\n  lo: [small]\n  eth0: [big, small]\n";
        let e = summarize_located(&policy(&text)).expect_err("too many rules");
        assert_eq!(
            e.to_string(),
            format!(
                "t.yaml:{}:3: interface eth0: groups big, small have 1025 rules together: at most 1024 fit on one \
                 interface",
                MAX_RULES + 8
            )
        );
    }

    #[test]
    fn a_group_that_fills_a_map_alone_is_refused_at_its_name() {
        // 16385 distinct /32s fill CIDR_RULES4 by one.
        let nets: Vec<String> =
            (0..=16384_u32).map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string()).collect();
        let text = format!(
            "groups:\n  ok: {{}}\n  wide:\n    outbound: []\n    inbound:\n      - {{ protocol: all, source: pl:many }}\nprefix_lists:\n  many: [{}]\n",
            nets.join(", ")
        );
        let p = policy(&text);
        assert!(compile_group_located(&p, &p.groups[0]).is_ok());
        let e = compile_group_located(&p, &p.groups[1]).expect_err("does not fit");
        assert_eq!(
            e.to_string(),
            "t.yaml:3:3: group \"wide\" does not fit on any interface: the CIDR_RULES4 map needs 16385 entries: at \
             most 16384 fit"
        );
    }
}
