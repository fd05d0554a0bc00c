//! The verbs of `tests/offline/cli_tools.rs` that need a lab host, run as the real `sgctl`
//! binary: dynamic completions answering with the interfaces of the
//! namespace and the groups applied there, and `stats --watch` into a pipe
//! whose reader goes away, which must end quietly with status 0.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    time::Duration,
};

use common::{bin::*, *};

use crate::common;

/// What the dynamic completion answers for `words`, completing the last one.
fn complete(state_dir: Option<&Path>, words: &[&str]) -> Vec<String> {
    let mut cmd = sgctl();
    cmd.env("SGCTL_COMPLETE", "bash")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .arg("--")
        .args(words);
    if let Some(dir) = state_dir {
        cmd.env("SGCTL_STATE_DIR", dir);
    }
    let r = run(&mut cmd).ok();
    r.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn dynamic_completions_offer_interfaces_and_applied_groups() {
    let lab = lab("complete");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let state_dir = lab.state_dir().expect("state dir");
    // Interfaces of the namespace sgctl runs in (here: the test's).
    assert!(complete(None, &["sgctl", "attach", "l"]).contains(&"lo".to_owned()));
    assert!(complete(None, &["sgctl", "explain", "--iface", "l"]).contains(&"lo".to_owned()));
    assert_eq!(complete(Some(&state_dir), &["sgctl", "attach", "lo", "--groups", ""]), Vec::<String>::new());
    sg.apply(&[&policy("app-server.yaml"), &policy("database.yaml")]);
    let groups = complete(Some(&state_dir), &["sgctl", "attach", "lo", "--groups", ""]);
    assert_eq!(groups, ["app-server", "database", "load-balancer"]);
    let rest = complete(Some(&state_dir), &["sgctl", "attach", "lo", "--groups", "database,"]);
    assert_eq!(rest, ["database,app-server", "database,database", "database,load-balancer"]);
    assert_eq!(
        complete(Some(&state_dir), &["sgctl", "attach", "lo", "--groups", "database,l"]),
        ["database,load-balancer"]
    );
    let verbs = complete(None, &["sgctl", "st"]);
    assert_eq!(verbs, ["status", "stats"]);
}

#[test]
fn stats_watch_into_head_ends_quietly_with_status_0() {
    let lab = lab("pipe");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    let state_dir = lab.state_dir().expect("state dir");
    // `sgctl stats --watch 1 | head -1`: read one line, then close the pipe.
    let mut child = sgctl()
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["-n", sg.netns(), "stats", "--watch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sgctl stats");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("read a line");
    assert!(first.starts_with("RULE"), "first line of stats: {first:?}");
    // The reader is gone: the next round's write must end sgctl, status 0, no panic.
    let status = wait_within(&mut child, Duration::from_secs(10));
    let stderr = stderr_of(child);
    assert_eq!(status.code(), Some(0), "stats --watch into a closed pipe: {status}, stderr: {stderr}");
    assert!(stderr.is_empty(), "stats --watch into a closed pipe printed: {stderr}");

    // And a pipe closed before the first line.
    let mut cmd = sgctl();
    cmd.arg("--state-dir").arg(&state_dir).args(["-n", sg.netns(), "stats", "--watch", "1"]);
    let mut child = spawn_into_closed_pipe(&mut cmd);
    let status = wait_within(&mut child, Duration::from_secs(10));
    let stderr = stderr_of(child);
    assert_eq!(status.code(), Some(0), "{status}, stderr: {stderr}");
}
