//! The verbs that meet users where they are, run as the real `sgctl`
//! binary with no privilege: `import aws` (then `check` of its output),
//! `completions`, `man-pages`, and printing into a closed pipe, which must
//! end quietly with status 0. Those that need a lab host (dynamic
//! completions, `stats --watch`) are in `tests/e2e/cli_tools.rs`.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::{bin::*, *};

use crate::common;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws").join(name)
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

/// `sgctl flows --top N --by bytes|packets --since D` over a log written
/// partly by an older sgctl (fewer fields, its own header): each flow's
/// records summed, most first; `--since` keeps the recent windows.
#[test]
fn flows_top_sums_each_flow_over_its_records() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let old_header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start \
                      end action log-status flow-direction tcp-flags type rule-id group drop-reason";
    let header = format!("{old_header} end-reason counted");
    let line = |src: &str, packets: u64, bytes: u64, end: u64, extra: &str| {
        format!(
            "2 - eth0 {src} 10.0.0.1 40000 5000 17 {packets} {bytes} {} {end} ACCEPT OK ingress - IPv4 db/inbound/0 db \
             -{extra}\n",
            end - 10
        )
    };
    let text = [
        format!("{old_header}\n"),
        line("10.0.0.9", 1, 60, now - 7200, ""),
        format!("{header}\n"),
        line("10.0.0.2", 10, 10_000, now - 100, " - flow"),
        line("10.0.0.3", 500, 50_000, now - 100, " - flow"),
        line("10.0.0.2", 10, 10_000, now - 50, " - flow"),
    ]
    .concat();
    let tmp = TempDir::new("flows-top");
    let log = tmp.write("flows.log", &text);
    let top = |args: &[&str]| -> Vec<(String, u64, u64)> {
        let r = run(sgctl().args(["flows", "--file"]).arg(&log).args(args).arg("--json")).ok();
        let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        doc["top"]
            .as_array()
            .expect("top")
            .iter()
            .map(|t| {
                (
                    t["srcaddr"].as_str().unwrap_or("").to_owned(),
                    t["packets"].as_u64().unwrap_or(0),
                    t["bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(
        top(&["--top", "5"]),
        [("10.0.0.3".into(), 500, 50_000), ("10.0.0.2".into(), 20, 20_000), ("10.0.0.9".into(), 1, 60)],
        "by bytes by default, each flow summed, the older file's lines too"
    );
    assert_eq!(top(&["--top", "1", "--by", "packets"]), [("10.0.0.3".into(), 500, 50_000)]);
    assert_eq!(top(&["--top", "5", "--by", "bytes", "--since", "1h"]).len(), 2, "the two-hour-old window is left out");
    let r = run(sgctl().args(["flows", "--file"]).arg(&log).args(["--since", "ten minutes"]));
    assert_eq!(r.code, Some(2), "a bad duration is a usage error: {r:?}");
    let r = run(sgctl().args(["flows", "--file"]).arg(&log).args(["--by", "bytes"]));
    assert_eq!(r.code, Some(2), "--by goes with --top: {r:?}");
}
