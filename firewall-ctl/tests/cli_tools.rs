//! The verbs that meet users where they are, run as the real `sgctl`
//! binary: `import aws` (then `check` of its output), `completions`
//! (static and dynamic, the latter answering with interface and group
//! names), `man-pages`, and printing into a closed pipe, which must end
//! quietly with status 0.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::*;

fn sgctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgctl"));
    cmd.env_remove("SGCTL_STATE_DIR").env_remove("SGCTL_COMPLETE").stdin(Stdio::null());
    cmd
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws").join(name)
}

/// Runs `cmd` to the end.
fn run(cmd: &mut Command) -> Run {
    let cmdline = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    Run {
        cmdline,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn import_aws_writes_a_policy_that_check_accepts() {
    let tmp = TempDir::new("import");
    let out = tmp.write("imported.yaml", "");
    let files = ["web-server.json", "app-db-security-groups.json", "app-db-network-interfaces.json"];
    let mut cmd = sgctl();
    cmd.args(["import", "aws"]).args(files.map(fixture)).arg("-o").arg(&out);
    let r = run(&mut cmd).ok();
    assert!(r.stdout.is_empty(), "with -o nothing goes to stdout: {r:?}");
    assert!(r.stderr.contains("4 groups, 12 rules"), "{r:?}");
    assert!(!r.stderr.contains("warning"), "network interfaces fill in every member: {r:?}");
    let checked = run(sgctl().arg("check").arg(&out)).ok();
    assert!(checked.stdout.starts_with("ok: 4 groups, 12 rules"), "{checked:?}");

    // From standard input to standard output; warnings on stderr.
    let mut child = sgctl()
        .args(["import", "aws", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sgctl import");
    let json = std::fs::read(fixture("mixed.json")).expect("fixture");
    child.stdin.take().expect("stdin").write_all(&json).expect("write stdin");
    let out = child.wait_with_output().expect("sgctl import");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sgctl: warning: sg-0ffff000000000006 is referenced but not in the input"), "{stderr}");
    let piped = tmp.write("piped.yaml", &String::from_utf8_lossy(&out.stdout));
    run(sgctl().arg("check").arg(&piped)).ok();

    // --json: the policy and the warnings in one document.
    let r = run(sgctl().args(["import", "aws", "--json"]).arg(fixture("mixed.json"))).ok();
    let doc = r.json();
    assert_eq!(doc["groups"], 3, "{doc}");
    assert_eq!(doc["warnings"].as_array().map(Vec::len), Some(5), "{doc}");
    assert!(doc["policy"].as_str().is_some_and(|p| p.starts_with("# Imported by `sgctl import aws`")), "{doc}");
}

#[test]
fn import_aws_refuses_malformed_json_with_its_path_and_writes_nothing() {
    let tmp = TempDir::new("import-bad");
    let text = std::fs::read_to_string(fixture("web-server.json")).expect("fixture");
    let bad = tmp.write("bad.json", &replace_once(&text, "\"FromPort\": 22,", "\"FromPort\": \"ssh\","));
    let out = tmp.path().join("out.yaml");
    let r = run(sgctl().args(["import", "aws"]).arg(&bad).arg("-o").arg(&out)).code(2);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {r:?}");
    let want = format!("{}: SecurityGroups[0].IpPermissions[1].FromPort: invalid type: string \"ssh\"", bad.display());
    assert!(lines[0].starts_with(&want), "{r:?}");
    assert!(!out.exists(), "a refused import must not write its output");
    let r = run(sgctl().args(["import", "aws"]).arg(tmp.path().join("missing.json"))).code(2);
    assert!(r.stderr.contains("missing.json: cannot read"), "{r:?}");
    run(sgctl().args(["import", "aws", "--prefix-list", "entries.json"]).arg(&bad)).code(2);
}

#[test]
fn completion_scripts_and_man_pages_generate() {
    let verbs = ["check", "apply", "attach", "detach", "status", "stats", "conntrack", "explain", "import"];
    for (shell, marker) in [("bash", "complete -F _sgctl"), ("zsh", "#compdef sgctl"), ("fish", "complete -c sgctl")] {
        let r = run(sgctl().args(["completions", shell])).ok();
        assert!(r.stdout.contains(marker), "{shell} script lacks {marker:?}: {r:?}");
        for verb in verbs {
            assert!(r.stdout.contains(verb), "{shell} script does not know `{verb}`");
        }
        let r = run(sgctl().args(["completions", shell, "--dynamic"])).ok();
        assert!(r.stdout.contains("SGCTL_COMPLETE"), "{shell} dynamic script: {r:?}");
    }
    run(sgctl().args(["completions", "tcsh"])).code(2);

    let tmp = TempDir::new("man");
    let dir = tmp.path().join("man");
    run(sgctl().arg("man-pages").arg(&dir)).ok();
    for page in ["sgctl.1", "sgctl-apply.1", "sgctl-import-aws.1", "sgctl-completions.1", "sgctl-conntrack-gc.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH ") && text.contains(".SH NAME"), "{page} is not a man page:\n{text}");
    }
    let main = std::fs::read_to_string(dir.join("sgctl.1")).expect("sgctl.1");
    assert!(main.contains("sgctl\\-import(1)"), "sgctl.1 lists the verbs:\n{main}");
}

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

/// Spawns `cmd` with its stdout a pipe whose reading end is already closed.
fn spawn_into_closed_pipe(cmd: &mut Command) -> Child {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    cmd.stdout(Stdio::from(write)).stderr(Stdio::piped()).spawn().expect("spawn sgctl")
}

fn wait_within(child: &mut Child, limit: Duration) -> ExitStatus {
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

fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().expect("sgctl output").stderr).into_owned()
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly_with_status_0() {
    for args in [vec!["completions", "bash"], vec!["import", "aws", "FIXTURE"]] {
        let mut cmd = sgctl();
        for a in &args {
            if *a == "FIXTURE" {
                cmd.arg(fixture("web-server.json"));
            } else {
                cmd.arg(a);
            }
        }
        let mut child = spawn_into_closed_pipe(&mut cmd);
        let status = wait_within(&mut child, Duration::from_secs(10));
        let stderr = stderr_of(child);
        assert_eq!(status.code(), Some(0), "sgctl {args:?} into a closed pipe: {status}, stderr: {stderr}");
        assert!(stderr.is_empty(), "sgctl {args:?} into a closed pipe printed: {stderr}");
    }
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
