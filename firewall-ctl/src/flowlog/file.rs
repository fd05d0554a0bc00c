//! The flow-log file: custom-format lines under a header line, appended,
//! and rotated by size (`FILE` → `FILE.1` → … → `FILE.KEEP`, the oldest
//! deleted), as logrotate would, so the agent never fills a disk.
use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::record::{custom_fields, Record};

/// Appends records to a log file, rotating it past `max_bytes`.
pub struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl Writer {
    pub fn new(path: &Path, max_bytes: u64, keep: u32) -> Self {
        Self { path: path.to_owned(), max_bytes, keep, file: None, size: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records` (a whole window at once), rotating first if the
    /// file is full; flushed to the kernel before returning, so a killed
    /// agent loses at most the window it was aggregating.
    pub fn write(&mut self, records: &[Record]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.size >= self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.open()?,
        };
        let mut text = String::new();
        for r in records {
            text.push_str(&r.custom_line());
            text.push('\n');
        }
        file.write_all(text.as_bytes()).with_context(|| format!("writing {}", self.path.display()))?;
        self.size += text.len() as u64;
        Ok(())
    }

    fn open(&mut self) -> anyhow::Result<&mut File> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        self.size = file.metadata()?.len();
        // A file an older sgctl wrote names fewer fields: the lines
        // appended now go under a header of their own.
        let header = custom_fields().join(" ");
        if self.size == 0 || last_header(&self.path)?.as_deref() != Some(header.as_str()) {
            let line = format!("{header}\n");
            file.write_all(line.as_bytes())?;
            self.size += line.len() as u64;
        }
        Ok(self.file.insert(file))
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        self.file = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, numbered(1)).with_context(|| format!("rotating {}", self.path.display()))?;
        }
        self.size = 0;
        Ok(())
    }
}

/// The last header line of the log at `path`.
fn last_header(path: &Path) -> anyhow::Result<Option<String>> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut last = None;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.starts_with("version ") {
            last = Some(line);
        }
    }
    Ok(last)
}

/// Every record of the log at `path` and its rotated files, oldest first.
/// Lines that do not parse under their file's header are skipped.
pub fn read_all(path: &Path, keep: u32) -> anyhow::Result<Vec<Record>> {
    let mut files: Vec<PathBuf> = (1..=keep).rev().map(|n| PathBuf::from(format!("{}.{n}", path.display()))).collect();
    files.push(path.to_owned());
    let mut out = Vec::new();
    let mut found = false;
    for file in files {
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        found = true;
        let mut header: Vec<String> = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line?;
            if line.starts_with("version ") {
                header = line.split(' ').map(str::to_owned).collect();
            } else if let Some(r) = Record::parse(&header, &line) {
                out.push(r);
            }
        }
    }
    anyhow::ensure!(found, crate::InputError::NoFlowLog { path: path.to_owned() });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_reads_back_in_order() {
        let dir = std::env::temp_dir().join(format!("sgctl-flowlog-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("flows.log");
        let mut w = Writer::new(&path, 300, 2);
        for i in 0..10 {
            let mut r = Record::empty();
            r.set("interface-id", format!("eth{i}"));
            w.write(&[r]).expect("write");
        }
        let all = read_all(&path, 2).expect("read");
        assert!(path.with_extension("log.2").exists(), "rotated twice");
        assert!(!path.with_extension("log.3").exists(), "keeps 2");
        let names: Vec<&str> = all.iter().map(|r| r.get("interface-id")).collect();
        assert_eq!(names.last(), Some(&"eth9"));
        assert!(names.windows(2).all(|w| w[0] < w[1]), "oldest first: {names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_under_a_header_of_its_own_to_a_file_of_fewer_fields() {
        let dir = std::env::temp_dir().join(format!("sgctl-flowlog-header-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("flows.log");
        let old_header = custom_fields()[..20].join(" ");
        std::fs::write(&path, format!("{old_header}\n2 - eth0 - - - - - - - 1 2 - SKIPDATA - - - - - x\n"))
            .expect("old");
        let mut r = Record::empty();
        r.set("interface-id", "eth1");
        r.set("counted", "flow");
        Writer::new(&path, 1 << 20, 1).write(&[r.clone()]).expect("write");
        Writer::new(&path, 1 << 20, 1).write(&[r]).expect("write again");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().filter(|l| l.starts_with("version ")).count(), 2, "{text}");
        let all = read_all(&path, 1).expect("read back");
        let names: Vec<&str> = all.iter().map(|r| r.get("interface-id")).collect();
        assert_eq!(names, ["eth0", "eth1", "eth1"]);
        assert_eq!(all[0].get("counted"), "-");
        assert_eq!(all[1].get("counted"), "flow");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
