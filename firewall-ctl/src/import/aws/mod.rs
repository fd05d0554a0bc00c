//! `aws ec2` JSON → policy YAML: `describe-security-groups`,
//! `describe-security-group-rules`, `describe-network-interfaces` (who
//! carries each group) and `get-managed-prefix-list-entries` (what a `pl-`
//! reference holds).
//!
//! One security group becomes one group, named from its `GroupName` (its
//! `GroupId` in a comment above it); `IpPermissions` become `inbound`,
//! `IpPermissionsEgress` `outbound` (always written, `[]` if empty: AWS
//! lists the default allow-all egress as a rule, so a missing egress list
//! means none). Each address range, prefix list and group of a permission
//! becomes a rule of its own with its own description. Groups and prefix
//! lists referenced but not in the input become empty definitions, and a
//! warning says what to fill in.
//!
//! Stages: `json` (the documents' shape), `read` (documents → checked
//! inventory, errors with JSON paths), `names` (GroupName → policy names),
//! `emit` (inventory → YAML).

mod emit;
mod json;
mod names;
mod read;

#[cfg(test)]
mod tests;

/// One input document.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file name, for messages (`-` for standard input).
    pub name: String,
    pub text: String,
    /// For `get-managed-prefix-list-entries` output, which prints no id:
    /// the list it holds (`--prefix-list ID=FILE`).
    pub prefix_list_id: Option<String>,
}

/// The policy text and what the user must still do.
#[derive(Clone, Debug)]
pub struct Imported {
    pub yaml: String,
    /// One line each: references to fill in, values adjusted to fit.
    pub warnings: Vec<String>,
    /// Groups written, those referenced but not in the input included.
    pub groups: usize,
    pub rules: usize,
}

/// Input that is not what the `aws` commands print: `FILE: JSON-PATH:
/// what is wrong: what was expected`, or `FILE:LINE:COL: …` for JSON syntax.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ImportError {
    pub location: String,
    pub message: String,
}

impl ImportError {
    fn new(file: &str, path: &str, message: String) -> Self {
        Self::located(format!("{file}: {path}"), message)
    }

    fn located(location: String, message: String) -> Self {
        Self { location, message }
    }

    fn at_position(file: &str, line: usize, col: usize, message: String) -> Self {
        Self::located(format!("{file}:{line}:{col}"), message)
    }
}

/// Imports every source into one policy.
pub fn import(sources: &[Source]) -> Result<Imported, ImportError> {
    let inv = read::inventory(sources)?;
    if inv.groups.is_empty() {
        let files = sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        let message = "no security group to import: expected SecurityGroups or SecurityGroupRules".to_owned();
        return Err(ImportError::located(files, message));
    }
    let files: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let emitted = emit::policy(&inv, &files);
    let mut warnings = inv.warnings;
    warnings.extend(emitted.warnings);
    Ok(Imported { yaml: emitted.yaml, warnings, groups: emitted.groups, rules: emitted.rules })
}
