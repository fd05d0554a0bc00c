//! Human output: aligned tables. (`--json` output is serde structs, kept in
//! each verb's module.)

/// Renders rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes to standard output, as `print!` does, except on failure: a closed
/// pipe (`sgctl stats --watch 1 | head -1`) ends the process quietly with
/// status 0, as ripgrep does, since whoever reads has all it wanted; any
/// other write error ends it with status 1 and a message. Exiting here
/// rather than returning the error keeps a `--watch` loop from running on
/// with nobody reading; the verbs print only after their work is done.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("sgctl: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` for the verbs' results; see [`write_stdout`] for a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(format_args!($($arg)*)) };
}

/// `println!` for the verbs' results; see [`write_stdout`] for a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
