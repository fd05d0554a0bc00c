//! Compile errors located in the policy files, for `sgctl check` and the
//! policy fuzz target: a [`CompileError`] says what does not fit, this adds
//! where the files ask for it, the `interfaces:` entry.

use super::{summarize, CompileError, Summary};
use crate::policy::{ErrorKind, Location, Policy, PolicyError};

/// [`summarize`], with a failure located at the `interfaces:` entry of the
/// interface that does not compile.
pub fn summarize_located(policy: &Policy) -> Result<Summary, PolicyError> {
    summarize(policy).map_err(|e| locate(policy, e))
}

/// `e`, located at the `interfaces:` entry of the interface it names (or
/// at the start of the policy).
pub fn locate(policy: &Policy, e: CompileError) -> PolicyError {
    let at = match &e {
        CompileError::OnInterface { interface, .. } => {
            policy.interfaces.iter().find(|a| &a.interface == interface).map(|a| &a.at)
        }
        _ => None,
    };
    PolicyError::new(at.unwrap_or(&whole_policy(policy)), ErrorKind::DoesNotFit(e.to_string()))
}

/// Where an error about the policy as a whole points: its first file.
fn whole_policy(policy: &Policy) -> Location {
    let file = policy.files.first().cloned().unwrap_or_default();
    Location { file_index: 0, line: 1, col: 1, file }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fmt::Write as _};

    use firewall_common::policy::MAX_RULES;

    use super::*;
    use crate::{compile::compile_interface, policy::parse_sources};

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
    fn a_group_at_the_rule_limit_compiles_alone() {
        // The parser's bound on a group's rules is what one interface holds.
        let p = policy(&big_and_small(MAX_RULES));
        let compiled = compile_interface(&p, &["big".to_owned()], &BTreeMap::new()).expect("fits");
        assert_eq!(compiled.rules.len(), MAX_RULES);
    }
}
