//! What a failed test said, again at the end of `cargo xtask test`.
//!
//! libtest prints a failed test's captured output and its panic message in
//! a `failures:` section after the test list of its binary: in the middle
//! of a 40-minute log, far from its tail, which is what a CI page shows. A
//! failure a reader cannot see ends in guessing (a flaky test's one CI
//! failure said nothing but its name). So each tier keeps, for every
//! failed test, the lines from its panic on (or the last of its output when
//! it did not panic), and `cargo xtask test` prints them beside its summary.

/// Lines kept of one failed test: enough for the panic message and the
/// first frames or log lines after it, never a whole agent log.
const KEPT_LINES: usize = 30;

/// Reads a test binary's stdout line by line and keeps, per failed test,
/// an excerpt of what its `---- NAME stdout ----` block says.
#[derive(Default)]
pub struct Failures {
    /// The block being read: the test's name and its lines so far.
    open: Option<(String, Vec<String>)>,
    done: Vec<Excerpt>,
}

/// One failed test and the lines kept of its output.
#[derive(Debug, PartialEq, Eq)]
pub struct Excerpt {
    pub test: String,
    pub lines: Vec<String>,
}

impl Failures {
    /// Takes the next line of a test binary's stdout.
    pub fn feed(&mut self, line: &str) {
        if let Some(test) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.close();
            self.open = Some((test.to_owned(), Vec::new()));
        } else if line == "failures:" || line.starts_with("test result: ") {
            // The list of failed names, or the binary's summary: no block reaches past it.
            self.close();
        } else if let Some((_, lines)) = &mut self.open {
            lines.push(line.to_owned());
        }
    }

    /// Every failed test read so far, each with its excerpt.
    pub fn finish(mut self) -> Vec<Excerpt> {
        self.close();
        self.done
    }

    fn close(&mut self) {
        if let Some((test, lines)) = self.open.take() {
            self.done.push(Excerpt { test, lines: excerpt(lines) });
        }
    }
}

/// From the last `panicked at` on, up to a backtrace and at most
/// [`KEPT_LINES`] lines; without a panic, the last [`KEPT_LINES`] lines.
fn excerpt(mut lines: Vec<String>) -> Vec<String> {
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    match lines.iter().rposition(|l| l.starts_with("thread '") && l.contains(" panicked at ")) {
        // The message, not the frames of RUST_BACKTRACE=1 after it.
        Some(at) => lines.into_iter().skip(at).take_while(|l| l != "stack backtrace:").take(KEPT_LINES).collect(),
        None => {
            let skip = lines.len().saturating_sub(KEPT_LINES);
            lines.into_iter().skip(skip).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Excerpt> {
        let mut failures = Failures::default();
        text.lines().for_each(|l| failures.feed(l));
        failures.finish()
    }

    #[test]
    fn keeps_each_failed_tests_panic_and_what_follows() {
        let out = "\
running 3 tests
test a::one ... ok
test a::two ... FAILED
test a::three ... FAILED

failures:

---- a::two stdout ----
agent: started
agent: lost etcd

thread 'a::two' (3135) panicked at firewall-ctl/tests/e2e/fleet.rs:180:65:
app1's app: None, db's db: Some(..)
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
stack backtrace:
   0: __rustc::rust_begin_unwind

---- a::three stdout ----
only a log line

failures:
    a::two
    a::three

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s
";
        let got = read(out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].test, "a::two");
        assert_eq!(
            got[0].lines,
            [
                "thread 'a::two' (3135) panicked at firewall-ctl/tests/e2e/fleet.rs:180:65:",
                "app1's app: None, db's db: Some(..)",
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
            ]
        );
        assert_eq!(got[1], Excerpt { test: "a::three".into(), lines: vec!["only a log line".into()] });
    }

    #[test]
    fn a_long_output_is_cut_and_a_passing_run_keeps_nothing() {
        let mut out = String::from("---- t stdout ----\n");
        for i in 0..100 {
            out.push_str(&format!("line {i}\n"));
        }
        let got = read(&out);
        assert_eq!(got[0].lines.len(), KEPT_LINES);
        assert_eq!(got[0].lines.last().map(String::as_str), Some("line 99"));
        assert!(read("running 1 test\ntest t ... ok\n\ntest result: ok. 1 passed; 0 failed;\n").is_empty());
    }
}
