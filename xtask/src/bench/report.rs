//! `cargo xtask bench --report`: BENCHMARKS.md's and README.md's generated
//! sections and `bench/figures/*.svg`, made from `bench/results/*.json`
//! alone (the one source of every number). `cargo xtask bench` runs it
//! after measuring; a unit test holds the committed documents to it, so
//! numbers copied by hand, or results committed without their tables,
//! fail CI.
//!
//! A generated section sits between `<!-- generated:NAME ... -->` and
//! `<!-- /generated:NAME -->`; everything outside the markers is written
//! by hand and left alone.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::{figures, results::Results, tables};
use crate::sh;

/// The command that rewrites everything generated.
const COMMAND: &str = "cargo xtask bench --report";

/// Where the figures go, relative to the workspace root.
const FIGURES: &str = "bench/figures";

/// Every file the generator owns, in whole or in part, with its new text.
pub struct Generated {
    /// (path relative to the root, its full new text).
    pub files: Vec<(PathBuf, String)>,
}

/// Makes every generated file from the results under `root`, splicing the
/// generated sections into the documents as they are now.
pub fn generate(root: &Path) -> anyhow::Result<Generated> {
    let results = Results::load(&root.join("bench/results"))?;
    let figures = figures::all(&results)?;
    let links: Vec<(&str, String)> = figures.iter().map(|f| (f.alt, format!("{FIGURES}/{}", f.file))).collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(alt, path)| (*alt, path.as_str())).collect();

    let mut files = Vec::new();
    let benchmarks = read(root, "BENCHMARKS.md")?;
    let benchmarks = splice(&benchmarks, "BENCHMARKS.md", "targets", &tables::targets(&results))?;
    let benchmarks = splice(&benchmarks, "BENCHMARKS.md", "results", &tables::latest_results(&results, &links))?;
    files.push((PathBuf::from("BENCHMARKS.md"), benchmarks));

    let readme = read(root, "README.md")?;
    let mut summary = tables::readme_summary(&results);
    if let Some((alt, path)) = links.iter().find(|(_, p)| p.ends_with("/b2.svg")) {
        summary.push_str(&format!("\n![{alt}]({path})\n"));
    }
    files.push((PathBuf::from("README.md"), splice(&readme, "README.md", "performance", &summary)?));

    for figure in figures {
        files.push((Path::new(FIGURES).join(figure.file), figure.svg));
    }
    Ok(Generated { files })
}

fn read(root: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(root.join(name)).with_context(|| format!("reading {name}"))
}

/// `doc` with the body of its generated section `name` replaced by `body`.
fn splice(doc: &str, file: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let begin = format!("<!-- generated:{name} ");
    let end = format!("<!-- /generated:{name} -->");
    let Some(start) = doc.find(&begin) else {
        bail!("{file} has no `{}` line: put it where the generated {name} goes", begin_marker(name))
    };
    let body_start = start + doc[start..].find("-->\n").context("unterminated marker")? + "-->\n".len();
    let Some(stop) = doc[body_start..].find(&end).map(|i| body_start + i) else {
        bail!("{file}: the generated section {name} has no end marker `{end}`")
    };
    Ok(format!("{}\n{body}\n{}", &doc[..body_start], &doc[stop..]))
}

/// The marker that opens a generated section, as the documents carry it.
fn begin_marker(name: &str) -> String {
    format!("<!-- generated:{name} (`{COMMAND}` writes this from bench/results/*.json; do not edit by hand) -->")
}

/// Writes every generated file under `root`.
pub fn write(root: &Path) -> anyhow::Result<()> {
    let generated = generate(root)?;
    std::fs::create_dir_all(root.join(FIGURES)).with_context(|| format!("creating {FIGURES}"))?;
    for (path, text) in &generated.files {
        std::fs::write(root.join(path), text).with_context(|| format!("writing {}", path.display()))?;
        sh::step("bench report", &format!("wrote {}", path.display()));
    }
    Ok(())
}

/// `cargo xtask bench --report`: rewrites what the stored results make,
/// running nothing.
pub fn run() -> anyhow::Result<()> {
    write(&sh::root())
}

/// The generated files under `root` that differ from what the results
/// make (their paths), empty when everything is up to date.
#[cfg(test)]
fn stale(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let generated = generate(root)?;
    Ok(generated
        .files
        .into_iter()
        .filter(|(path, text)| std::fs::read_to_string(root.join(path)).ok().as_deref() != Some(text.as_str()))
        .map(|(path, _)| path)
        .collect())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    #[test]
    fn committed_tables_and_figures_are_what_the_results_make() {
        let stale = stale(&sh::root()).expect("generating from bench/results");
        assert!(
            stale.is_empty(),
            "{} differ from what bench/results/*.json make: run `{COMMAND}` and commit the result \
             (never edit a generated section by hand)",
            stale.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }

    #[test]
    fn the_documents_carry_each_marker_once() {
        for (file, names) in [("BENCHMARKS.md", &["targets", "results"][..]), ("README.md", &["performance"][..])] {
            let doc = read(&sh::root(), file).unwrap();
            for name in names {
                assert_eq!(doc.matches(&begin_marker(name)).count(), 1, "{file}: {}", begin_marker(name));
                assert_eq!(doc.matches(&format!("<!-- /generated:{name} -->")).count(), 1, "{file}: end of {name}");
            }
        }
    }

    #[test]
    fn splices_only_between_the_markers() {
        let doc = format!("hand\n{}\nold\n<!-- /generated:x -->\nafter\n", begin_marker("x"));
        let new = splice(&doc, "T.md", "x", "new\n").unwrap();
        assert_eq!(new, format!("hand\n{}\n\nnew\n\n<!-- /generated:x -->\nafter\n", begin_marker("x")));
        assert_eq!(splice(&new, "T.md", "x", "new\n").unwrap(), new, "splicing twice changes nothing");
        assert!(splice("no markers\n", "T.md", "x", "new").unwrap_err().to_string().contains("T.md"));
    }

    #[test]
    fn generated_parts_carry_no_dates_or_issue_numbers() {
        let generated = generate(&sh::root()).unwrap();
        for (path, text) in generated.files.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "md")) {
            let doc = text.as_str();
            let name = path.display().to_string();
            for section in ["targets", "results", "performance"] {
                let Some(start) = doc.find(&format!("<!-- generated:{section} ")) else { continue };
                let end = doc.find(&format!("<!-- /generated:{section} -->")).unwrap();
                let body = &doc[start..end];
                assert!(!body.contains("issue "), "{name} {section}: an issue number");
                assert!(!body.contains("measured 20"), "{name} {section}: a run's date");
                assert!(!body.contains("2026-"), "{name} {section}: a date");
            }
        }
    }
}
