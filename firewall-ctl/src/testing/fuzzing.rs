//! The property the policy fuzzers hold sgctl to, shared by the cargo-fuzz
//! target (`fuzz/`, `cargo xtask fuzz`) and the generator that runs on
//! stable in every `cargo test` (`tests/offline/fuzz_policy.rs`): whatever the
//! bytes, the parser and the compiler never panic, and every error they
//! return is one line that starts with `FILE:LINE:COL: `, a place inside
//! the files given (docs/policy-format.md, "Errors").

use std::collections::BTreeMap;

use crate::{
    compile,
    policy::{self, Policy, PolicyError},
};

/// A line of its own in a fuzz input that starts the next policy file, so
/// one input can exercise the merging of several files.
pub const FILE_SEPARATOR: &str = "\n#--- next file ---\n";

/// Errors are one line of at most this many bytes: the quoted value is at
/// most one scalar (`policy::limits::MAX_SCALAR_BYTES`) plus the message.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Splits one fuzz input into policy files `f0.yaml`, `f1.yaml`, ...
/// Bytes that are not UTF-8 are replaced (the UTF-8 check of `load_files`
/// has its own tests), so every input reaches the YAML parser.
pub fn files_of(input: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(input);
    text.split(FILE_SEPARATOR).enumerate().map(|(i, t)| (format!("f{i}.yaml"), t.to_owned())).collect()
}

/// Parses and compiles `files` as `sgctl check` does (every `interfaces:`
/// entry), then every group alone, and checks the property. Returns why it
/// is broken; a panic inside sgctl propagates to the caller, which is the
/// fuzzer's other failure.
pub fn check_files(files: &[(String, String)]) -> Result<(), String> {
    let policy = match policy::parse_sources(files) {
        Ok(p) => p,
        Err(e) => return check_located(&e, files),
    };
    if let Err(e) = compile::summarize_located(&policy) {
        return check_located(&e, files);
    }
    // Any group the parser accepts fits on an interface alone (its rules
    // are bounded by `policy::limits::MAX_RULES_PER_GROUP`), as
    // `sgctl attach IFACE --groups GROUP` would compile it.
    for group in &policy.groups {
        let groups = std::slice::from_ref(&group.name);
        if let Err(e) = compile::compile_interface(&policy, groups, &BTreeMap::new()) {
            return Err(format!("group {:?} alone does not compile: {e}", group.name));
        }
    }
    // `apply` stores the policy as JSON and `attach` reads it back.
    let json = serde_json::to_string(&policy).map_err(|e| format!("the policy does not serialize: {e}"))?;
    serde_json::from_str::<Policy>(&json).map_err(|e| format!("the stored policy does not read back: {e}"))?;
    Ok(())
}

/// Whether `e` is one line that points inside one of `files`: its file
/// name, a line of that file (or the one just past its end) and a column
/// at most one past that line's last character.
pub fn check_located(e: &PolicyError, files: &[(String, String)]) -> Result<(), String> {
    let message = e.to_string();
    let fail = |why: &str| Err(format!("{why}: {message}"));
    if message.len() > MAX_MESSAGE_BYTES {
        return fail("error message too long");
    }
    if message.chars().any(char::is_control) {
        return fail("error message is not one line");
    }
    let Some((_, text)) = files.iter().find(|(name, _)| *name == e.file) else {
        return fail("error names a file that was not given");
    };
    if !message.starts_with(&format!("{}:{}:{}: ", e.file, e.line, e.col)) {
        return fail("error does not start with FILE:LINE:COL");
    }
    let lines = policy::yaml_lines(text);
    let line = usize::try_from(e.line).unwrap_or(usize::MAX);
    let col = usize::try_from(e.col).unwrap_or(usize::MAX);
    if line == 0 || col == 0 || line > lines.len() + 1 {
        return fail("error line is outside the file");
    }
    let width = lines.get(line - 1).map_or(0, |l| l.chars().count());
    if col > width + 1 {
        return fail("error column is beyond the end of its line");
    }
    Ok(())
}

/// Where `cargo xtask fuzz` asks the unit tests to leave their policy texts
/// as seeds for the fuzz corpus (the variable names a directory).
pub const SEEDS_ENV: &str = "SGCTL_FUZZ_SEEDS";

/// Called by the unit tests' parse helpers: when [`SEEDS_ENV`] is set,
/// keeps `files` there as one fuzz input (named by its hash, so repeated
/// texts are kept once). Inputs over 64 KiB are left out: libFuzzer's
/// inputs are shorter.
pub fn record_seed(files: &[(String, String)]) {
    use std::hash::{Hash as _, Hasher as _};
    let Some(dir) = std::env::var_os(SEEDS_ENV) else { return };
    let texts: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
    let input = texts.join(FILE_SEPARATOR);
    if input.len() > 64 << 10 {
        return;
    }
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hash);
    let path = std::path::Path::new(&dir).join(format!("unit-{:016x}", hash.finish()));
    // Best effort: a seed that cannot be written only makes the corpus smaller.
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(path, input));
}
