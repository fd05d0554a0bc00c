//! Policy files (YAML, spec/policy-format.md) → a validated [`Policy`].
//!
//! Stages, one module each: `yaml` (text → located tree, see there for why
//! saphyr-parser), `values` (one scalar → one typed value), `parse` (one
//! file's tree → its definitions), `merge` (all files → one policy, with
//! duplicate and reference checks). Every error is a [`PolicyError`]
//! located at the offending value.

mod error;
mod merge;
mod model;
mod parse;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ErrorKind, Location, PolicyError};
pub use model::{
    Attachment, Conntrack, Group, GroupMode, Members, Peer, PeerTarget, Policy, PortRange, Ports, PrefixList, Protocol, Rule,
    RuleDirection, DEFAULT_OUTBOUND_DESCRIPTION,
};

/// Reads and parses policy files, merged in the order given.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Policy, PolicyError> {
    parse_sources(&read_files(paths)?)
}

/// Reads policy files: `(file name, text)` pairs for [`parse_sources`].
pub fn read_files(paths: &[impl AsRef<Path>]) -> Result<Vec<(String, String)>, PolicyError> {
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref();
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((name, text)),
            Err(e) => {
                let at = Location { file_index: 0, line: 1, col: 1, file: name };
                return Err(PolicyError::new(&at, ErrorKind::Read(e)));
            }
        }
    }
    Ok(sources)
}

/// Parses `(file name, text)` pairs, merged in the order given. The file
/// name is only used in locations.
pub fn parse_sources(sources: &[(String, String)]) -> Result<Policy, PolicyError> {
    let mut parts = Vec::with_capacity(sources.len());
    for (index, (file, text)) in sources.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        match yaml::parse(file, index, text)? {
            Some(root) => parts.push(parse::file(&root)?),
            None => parts.push(parse::FileParts::default()),
        }
    }
    merge::merge(sources.iter().map(|(f, _)| f.clone()).collect(), parts)
}

/// Checks that every interface under `interfaces:` exists, as told by
/// `exists` (the caller looks in the right network namespace), and reports
/// the first missing one where the file names it.
pub fn check_interfaces(policy: &Policy, exists: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
    match policy.interfaces.iter().find(|a| !exists(&a.interface)) {
        Some(a) => Err(PolicyError::new(&a.at, ErrorKind::NoSuchInterface(a.interface.clone()))),
        None => Ok(()),
    }
}
