//! `sgctl import aws FILE... [--prefix-list ID=FILE]... [-o FILE]`: reads
//! the files, runs the pure importer, checks that its output parses as a
//! policy, and writes it. Warnings go to stderr, one line each.
use std::{io::Read as _, path::Path};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::{ImportAwsArgs, ImportFrom},
    import::aws::{self, Source},
    policy, InputError,
};

#[derive(Serialize)]
struct Report<'a> {
    policy: &'a str,
    warnings: &'a [String],
    groups: usize,
    rules: usize,
    output: Option<String>,
}

pub fn run(from: &ImportFrom, json: bool) -> anyhow::Result<()> {
    let ImportFrom::Aws(args) = from;
    aws_import(args, json)
}

fn aws_import(args: &ImportAwsArgs, json: bool) -> anyhow::Result<()> {
    let mut sources = Vec::new();
    let mut stdin_used = false;
    for file in &args.files {
        sources.push(Source {
            name: file.display().to_string(),
            text: read(file, &mut stdin_used)?,
            prefix_list_id: None,
        });
    }
    for (id, file) in &args.prefix_lists {
        let text = read(file, &mut stdin_used)?;
        sources.push(Source { name: file.display().to_string(), text, prefix_list_id: Some(id.clone()) });
    }
    let imported = aws::import(&sources)?;
    // The importer's output must be a policy `check` accepts; if not, that
    // is sgctl's bug, not the user's input (exit 1).
    let name = args.output.as_ref().map_or("(imported policy)".to_owned(), |p| p.display().to_string());
    policy::parse_sources(&[(name, imported.yaml.clone())])
        .map_err(|e| anyhow::anyhow!("the imported policy does not parse ({e}); please report this with the input"))?;
    for w in &imported.warnings {
        eprintln!("sgctl: warning: {w}");
    }
    if let Some(path) = &args.output {
        write_whole(path, &imported.yaml)?;
    }
    if json {
        let output = args.output.as_ref().map(|p| p.display().to_string());
        let report = Report {
            policy: &imported.yaml,
            warnings: &imported.warnings,
            groups: imported.groups,
            rules: imported.rules,
            output,
        };
        return crate::cli::output::print_json(&report);
    }
    match &args.output {
        Some(path) => {
            eprintln!("sgctl: wrote {}: {} groups, {} rules", path.display(), imported.groups, imported.rules)
        }
        None => crate::out!("{}", imported.yaml),
    }
    Ok(())
}

/// A file's text, or standard input for `-` (at most once).
fn read(path: &Path, stdin_used: &mut bool) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        if std::mem::replace(stdin_used, true) {
            return Err(InputError::StdinTwice.into());
        }
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|error| InputError::Unreadable { path: path.to_owned(), error }.into())
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it,
/// renamed over it.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let file_name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}
