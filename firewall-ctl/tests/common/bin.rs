//! The real `sgctl` binary run as a user runs it, outside any lab: a bare
//! command, its whole output, and a standard output nobody reads.
use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::Run;

/// `sgctl` without what a test's own environment may set (a state
/// directory, the completion mode), its stdin empty.
pub fn sgctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgctl"));
    cmd.env_remove("SGCTL_STATE_DIR").env_remove("SGCTL_COMPLETE").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to the end.
pub fn run(cmd: &mut Command) -> Run {
    let cmdline = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    Run {
        cmdline,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Spawns `cmd` with its stdout a pipe whose reading end is already closed.
pub fn spawn_into_closed_pipe(cmd: &mut Command) -> Child {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    cmd.stdout(Stdio::from(write)).stderr(Stdio::piped()).spawn().expect("spawn sgctl")
}

/// Waits for `child` to exit, at most `limit` (then kills it and fails).
pub fn wait_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("sgctl still runs {limit:?} after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `child` printed on stderr, once it has exited.
pub fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().expect("sgctl output").stderr).into_owned()
}
