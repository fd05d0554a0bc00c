//! Policy files (YAML, docs/policy-format.md) → a validated [`Policy`].
//!
//! Stages, one module each: `yaml` (text → located tree, see there for why
//! saphyr-parser), `values` (one scalar → one typed value), `parse` (one
//! file's tree → its definitions), `merge` (all files → one policy, with
//! duplicate and reference checks). Every error is a [`PolicyError`]
//! located at the offending value. How much input is read at all is bounded
//! in `limits`, so a hostile file costs `sgctl check` little.

mod error;
pub mod limits;
mod merge;
mod parse;
mod validated;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

use std::{io::Read as _, path::Path};

pub use error::{ErrorKind, Location, PolicyError};
pub use validated::{
    Attachment, Conntrack, Group, GroupMode, Members, Peer, PeerTarget, Policy, PortRange, Ports, PrefixList, Protocol,
    Rule, RuleDirection, DEFAULT_OUTBOUND_DESCRIPTION,
};
pub use values::{is_valid_name, parse_cidr, CidrError};
pub use yaml::yaml_lines;

/// Reads and parses policy files, merged in the order given. Reading stops
/// at [`limits::MAX_BYTES`] over all files, so a huge file (or `/dev/zero`)
/// is refused without being read whole.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Policy, PolicyError> {
    parse_sources(&read_files(paths)?)
}

/// Reads policy files: `(file name, text)` pairs for [`parse_sources`].
pub fn read_files(paths: &[impl AsRef<Path>]) -> Result<Vec<(String, String)>, PolicyError> {
    let mut sources = Vec::with_capacity(paths.len());
    let mut left = limits::MAX_BYTES;
    for path in paths {
        let path = path.as_ref();
        let name = path.display().to_string();
        let at = Location { file_index: u32::try_from(sources.len()).unwrap_or(u32::MAX), line: 1, col: 1, file: name };
        let mut bytes = Vec::new();
        // One byte past the allowance tells a file that is too large.
        let read = std::fs::File::open(path).and_then(|f| f.take(left as u64 + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Err(PolicyError::new(&at, ErrorKind::Read(e)));
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let at = yaml::location_at(&at, &String::from_utf8_lossy(valid), valid.len());
                return Err(PolicyError::new(&at, ErrorKind::NotUtf8));
            }
        };
        left = left.saturating_sub(text.len());
        sources.push((at.file, text));
    }
    Ok(sources)
}

/// Parses `(file name, text)` pairs, merged in the order given. The file
/// name is only used in locations.
pub fn parse_sources(sources: &[(String, String)]) -> Result<Policy, PolicyError> {
    parse_within(sources, limits::MAX_BYTES, limits::MAX_NODES)
}

/// [`parse_sources`] with other bounds on bytes and YAML values (the tests
/// of the bounds use small ones).
pub(crate) fn parse_within(
    sources: &[(String, String)],
    max_bytes: usize,
    max_nodes: usize,
) -> Result<Policy, PolicyError> {
    let mut parts = Vec::with_capacity(sources.len());
    let mut budget = yaml::Budget::new(max_nodes);
    let mut bytes_left = max_bytes;
    for (index, (file, text)) in sources.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        if text.len() > bytes_left {
            let start = Location { file_index: index, line: 1, col: 1, file: file.clone() };
            let at = yaml::location_at(&start, text, bytes_left);
            return Err(PolicyError::new(&at, ErrorKind::TooLarge { max: max_bytes }));
        }
        bytes_left -= text.len();
        match yaml::parse(file, index, text, &mut budget)? {
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
