//! The real `sgctl check` binary on hostile policy files: each is refused
//! quickly, in little memory, with exit status 2 and one located line.
//! `check` needs no privilege, so anyone can hand it such a file; these
//! run unprivileged too (docs/policy-format.md, "Limits").
use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{assert_located_error, Run, TempDir};

use crate::common;

/// What a refusal may cost at most. sgctl needs a few MiB; a billion-laughs
/// file expanded eagerly needs tens of GiB. Time is CPU time (user and
/// system), which other work on a busy machine does not inflate as it does
/// the wall clock: these tests run in parallel with the policy fuzzer.
const MAX_RSS_KIB: i64 = 128 << 10;
const MAX_CPU_TIME: Duration = Duration::from_secs(10);
/// A hard cap on the child's address space, so a regression fails the test
/// instead of exhausting the machine.
const ADDRESS_SPACE_CAP: libc::rlim_t = 2 << 30;

/// Runs `sgctl check FILE` under the caps; returns what it did, its peak
/// resident memory (KiB) and the CPU time it used.
#[expect(clippy::zombie_processes, reason = "reaped by wait4, which also reports its peak memory")]
fn check(file: &Path) -> (Run, i64, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgctl"));
    cmd.arg("check").arg(file).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let cap = libc::rlimit { rlim_cur: ADDRESS_SPACE_CAP, rlim_max: ADDRESS_SPACE_CAP };
    let cpu = libc::rlimit { rlim_cur: 60, rlim_max: 60 };
    // SAFETY: setrlimit is async-signal-safe and only touches the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 || libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("starting sgctl");
    let pid = i32::try_from(child.id()).expect("pid");
    // Read the pipes on threads, so a chatty child cannot block on them.
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let stdout = std::thread::spawn(move || std::io::read_to_string(&mut out).unwrap_or_default());
    let stderr = std::thread::spawn(move || std::io::read_to_string(&mut err).unwrap_or_default());
    // wait4 reaps the child and reports its own peak memory.
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped; status and usage are valid pointers.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let cpu_time = duration(usage.ru_utime) + duration(usage.ru_stime);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let run = Run {
        cmdline: format!("sgctl check {}", file.display()),
        code,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    (run, usage.ru_maxrss, cpu_time)
}

fn duration(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// Asserts a quick, cheap, located refusal pointing at `line` and mentioning `what`.
#[track_caller]
fn refused(file: &Path, line: u32, what: &str) {
    let (run, rss_kib, cpu_time) = check(file);
    assert_located_error(&run, file, line, what);
    assert!(rss_kib < MAX_RSS_KIB, "sgctl check used {rss_kib} KiB: {run:?}");
    assert!(cpu_time < MAX_CPU_TIME, "sgctl check used {cpu_time:?} of CPU: {run:?}");
    eprintln!("{}: refused in {cpu_time:?} of CPU, peak {} KiB", file.display(), rss_kib);
}

#[test]
fn billion_laughs_is_refused_quickly_in_little_memory() {
    let tmp = TempDir::new("laughs");
    // Nine levels of ten aliases each: a billion scalars when expanded.
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text += &format!("a{i}: &a{i} [{refs}]\n");
    }
    refused(&tmp.write("laughs.yaml", &text), 7, "YAML values");
}

#[test]
fn aliases_of_a_long_value_cost_no_copies() {
    let tmp = TempDir::new("longalias");
    // 190000 aliases of a 1000-byte value: 190 MB if each were a copy.
    let refs = vec!["*s"; 190_000].join(", ");
    let text = format!("groups:\n  a: {{description: &s \"{}\"}}\nprefix_lists:\n  l: [{refs}]\n", "x".repeat(1000));
    refused(&tmp.write("longalias.yaml", &text), 2, "1000 characters long");
}

#[test]
fn an_empty_group_list_under_interfaces_is_refused_at_the_list() {
    let tmp = TempDir::new("emptyiface");
    let file = tmp.write("empty.yaml", "groups:\n  web: {}\ninterfaces:\n  lo: []\n");
    refused(&file, 4, "no group listed for interface \"lo\"");
}

#[test]
fn endless_deep_and_binary_input_is_refused() {
    let tmp = TempDir::new("hostile");
    refused(Path::new("/dev/zero"), 1, "larger than 50331648 bytes");
    let deep = format!("groups: {}{}\n", "[".repeat(200), "]".repeat(200));
    refused(&tmp.write("deep.yaml", &deep), 1, "nested more than 16 deep");
    let nul = tmp.write("nul.yaml", "groups:\n  a: {}\n\u{0}\n");
    refused(&nul, 3, "is not allowed in YAML");
    let path = tmp.write("latin1.yaml", "");
    std::fs::write(&path, b"groups:\n  caf\xe9: {}\n").expect("writing");
    refused(&path, 2, "not UTF-8");
}
