//! B4: the control plane. `sgctl check` and `sgctl apply` (first: load,
//! verify, attach; again: maps only) of the generated policies, wall time
//! and peak RSS, and the kernel memory of the maps they leave (what the
//! kernel charges, from `sgctl status`, and sgctl's estimate of what they
//! hold); beside `nft -f` of the exported ruleset in the same namespace.
//! Then a one-address membership change in a group of 100,000 members:
//! `sgctl members add|remove` (in place), `apply` of the edited file, and
//! `nft add|delete element`.
use std::{path::Path, process::Stdio, time::Duration};

use serde_json::json;
use testlab::Lab;

use super::{
    harness::{self, cell, median, ratio, Bench, Measured, Report, Sgctl},
    policies::{self, IFACE},
};

const RUNS: usize = 3;

/// A cell for a command that may have failed: its median time, or why not.
fn outcome(runs: &[Measured]) -> (f64, f64, String) {
    match runs.iter().find(|m| !m.success) {
        Some(bad) => (f64::NAN, f64::NAN, bad.why()),
        None => {
            let ms: Vec<f64> = runs.iter().map(Measured::ms).collect();
            let rss: Vec<f64> = runs.iter().map(|m| m.max_rss_kib as f64 / 1024.0).collect();
            (median(&ms), median(&rss), String::new())
        }
    }
}

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.dir("b4")?;
    let lab = Lab::new("b4")?;
    let srv = lab.host("srv", &[])?;
    let peer = lab.host("peer", &[])?;
    lab.link(&srv, IFACE, &["198.19.0.1/15"], &peer, "p0", &["198.18.0.1/15"])?;
    let state = lab.state_dir()?;
    let sg = Sgctl { bin: &b.sgctl, state: state.clone(), lib: lab.lib_dir()?, netns: srv.netns().to_owned() };
    let files = policies::control_set(&b.work.join("policies"))?;

    let mut rows = Vec::new();
    let mut results = Vec::new();
    for file in &files {
        let path = file.path.to_str().unwrap_or_default();
        let runs = if file.cidrs >= 1_000_000 { 1 } else { RUNS };
        let measure = |args: &[&str]| harness::measured(&b.work, &sg.command(args));
        let check: Vec<Measured> = (0..runs).map(|_| measure(&["check", path])).collect::<anyhow::Result<_>>()?;
        let (check_ms, check_rss, check_err) = outcome(&check);
        let (mut first, mut again) = (Vec::new(), Vec::new());
        let (mut charged_kib, mut resident_kib, mut peak_kib) = (f64::NAN, f64::NAN, f64::NAN);
        if check_err.is_empty() {
            for _ in 0..runs {
                let applied = measure(&["apply", "--json", path])?;
                if let Ok(report) = serde_json::from_str::<serde_json::Value>(&applied.stdout) {
                    let kib = |field: &str| report["kernel_memory"][field].as_f64().unwrap_or(f64::NAN) / 1024.0;
                    (resident_kib, peak_kib) = (kib("resident"), kib("peak"));
                }
                first.push(applied);
                again.push(measure(&["apply", path])?);
                charged_kib = charged(&sg)? as f64 / 1024.0;
                sg.run(&["detach", IFACE])?;
            }
        }
        let (first_ms, first_rss, first_err) =
            if check_err.is_empty() { outcome(&first) } else { (f64::NAN, f64::NAN, check_err.clone()) };
        let (again_ms, _, _) = if check_err.is_empty() { outcome(&again) } else { (f64::NAN, f64::NAN, String::new()) };

        // The peer: export (the default form), then nft -f in the same namespace.
        let attach = format!("{IFACE}={}", policies::GROUP);
        let export = measure(&["export", "nftables", path, "--attach", &attach])?;
        let ruleset = dir.join(format!("{}.nft", file.name));
        std::fs::write(&ruleset, &export.stdout)?;
        let nft_path = ruleset.to_str().unwrap_or_default();
        let mut nft_runs = Vec::new();
        let mut nft_kib = f64::NAN;
        for _ in 0..runs {
            let _ = harness::nft(&srv, &["delete", "table", "inet", "sgctl"]);
            std::thread::sleep(Duration::from_millis(300));
            let before = harness::slab_unreclaimable_kib();
            let m = harness::measured(
                &b.work,
                std::process::Command::new("ip").args(["netns", "exec", srv.netns(), "nft", "-f", nft_path]),
            )?;
            std::thread::sleep(Duration::from_millis(300));
            nft_kib = harness::slab_unreclaimable_kib().saturating_sub(before) as f64;
            nft_runs.push(m);
        }
        let _ = harness::nft(&srv, &["delete", "table", "inet", "sgctl"]);
        let (nft_ms, nft_rss, nft_err) = outcome(&nft_runs);
        println!(
            "b4: {}: check {check_ms:.1} ms, apply {first_ms:.1} / {again_ms:.1} ms, nft -f {nft_ms:.1} ms",
            file.name
        );

        let status = if first_err.is_empty() { String::new() } else { format!("failed: {first_err}") };
        rows.push(vec![
            file.name.clone(),
            cell(check_ms, 1),
            cell(check_rss, 1),
            cell(first_ms, 1),
            cell(again_ms, 1),
            cell(first_rss, 1),
            cell(charged_kib / 1024.0, 1),
            format!("{} ({})", cell(resident_kib / 1024.0, 1), cell(peak_kib / 1024.0, 1)),
            if nft_err.is_empty() { cell(nft_ms, 1) } else { format!("failed: {nft_err}") },
            cell(nft_rss, 1),
            cell(nft_kib / 1024.0, 1),
            ratio(first_ms, nft_ms),
            status.clone(),
        ]);
        results.push(json!({
            "policy": file.name, "rules": file.rules, "cidrs": file.cidrs,
            "check_ms": check_ms, "check_rss_mib": check_rss,
            "apply_first_ms": first_ms, "apply_again_ms": again_ms, "apply_rss_mib": first_rss,
            "kernel_charged_kib": charged_kib, "kernel_resident_kib": resident_kib, "kernel_peak_kib": peak_kib,
            "export_ms": export.ms(),
            "nft_ms": nft_ms, "nft_rss_mib": nft_rss, "nft_slab_kib": nft_kib, "nft_error": nft_err,
            "status": status,
        }));
    }

    let mut report = Report::new("b4", "control plane: check, apply and nft -f");
    report.table(
        &format!("Wall time (ms) and peak RSS (MiB), median of {RUNS} (1M CIDRs: one run)"),
        &[
            "policy",
            "check ms",
            "check MiB",
            "apply ms (load+attach)",
            "re-apply ms",
            "apply MiB",
            "kernel MiB charged (memlock)",
            "kernel MiB held (peak), est.",
            "nft -f ms",
            "nft MiB",
            "nft kernel MiB (≈)",
            "apply / nft -f",
            "status",
        ],
        &rows,
    );
    report.note(
        "`rules-N`: N rules, one /24 each; `cidrs-N`: N varied CIDRs (half IPv4, half IPv6) in one prefix list \
         used by two rules; `rules-1000-cidrs-100k`: both (the issue's target). sgctl runs with `-n` in a lab \
         namespace whose `r0` the policies name; `apply` is measured from a detached interface (load, verify, \
         attach three programs) and again at once (nothing changed: parse, compile, compare). Kernel memory \
         charged is what `sgctl status` reports, the sum of every map's `memlock` (pinned maps, the policy \
         maps installed in a generation slot, the records); held is sgctl's estimate of what the maps really \
         hold (tries' intermediate nodes and slab rounding, which `memlock` leaves out; docs/cli.md, Kernel \
         memory) once in force, and in parentheses while a change is put in force (a second generation of the \
         policy maps). nftables' kernel memory is the growth of unreclaimable slab while loading, approximate \
         (other work on the machine moves it too).",
    );

    let (membership_rows, membership) = membership_change(b, &sg, &srv, &dir)?;
    report.table(
        &format!("A one-address membership change in `sg:fleet` (100,000 members), median of {}", RUNS * 4),
        &["step", "sgctl", "nftables"],
        &membership_rows,
    );
    report.note(
        "sgctl `members add|remove` changes the one address entry in the maps in force (docs/cli.md, `sgctl \
         members`); `apply` of the edited file rebuilds the group's address map as a new generation. Wall time of \
         the whole command, process start included. nftables: `nft add|delete element` on the exported set.",
    );
    report.json["results"] = json!(results);
    report.json["membership_change"] = membership;
    Ok(report)
}

/// Applies a policy whose one rule references a 100,000-member group, then
/// changes one member: with `sgctl members add|remove` (in place), with
/// `apply` of the file with that member swapped, and as `nft add|delete
/// element` on the exported set.
fn membership_change(
    b: &Bench,
    sg: &Sgctl<'_>,
    srv: &testlab::LabHost,
    dir: &Path,
) -> anyhow::Result<(Vec<Vec<String>>, serde_json::Value)> {
    let base = policies::write(dir, "members-100k", &policies::members_policy(100_000, false))?;
    let changed = policies::write(dir, "members-100k-changed", &policies::members_policy(100_000, true))?;
    let (base, changed) = (base.to_str().unwrap_or_default(), changed.to_str().unwrap_or_default());
    let measure = |args: &[&str]| harness::measured(&b.work, &sg.command(args));
    // Milliseconds of one command, timed here (not under GNU time, whose
    // own start would count).
    let timed = |cmd: &mut std::process::Command| -> anyhow::Result<f64> {
        let start = std::time::Instant::now();
        let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr).trim());
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };

    let first = measure(&["apply", base])?;
    anyhow::ensure!(first.success, "applying the 100k-member policy: {}", first.why());
    let mut in_place = Vec::new();
    for i in 0..RUNS * 4 {
        let verb = if i % 2 == 0 { "add" } else { "remove" };
        in_place.push(timed(&mut sg.command(&["members", verb, "fleet", "10.255.255.254"]))?);
    }
    let mut by_apply = Vec::new();
    for i in 0..RUNS * 2 {
        by_apply.push(timed(&mut sg.command(&["apply", if i % 2 == 0 { changed } else { base }]))?);
    }
    let _ = sg.run(&["detach", IFACE]);

    let attach = format!("{IFACE}={}", policies::GROUP);
    let ruleset = dir.join("members-100k.nft");
    std::fs::write(&ruleset, sg.run(&["export", "nftables", base, "--attach", &attach])?)?;
    let in_netns = |args: &[&str]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", srv.netns()]).args(args);
        cmd
    };
    let load = harness::measured(&b.work, &in_netns(&["nft", "-f", ruleset.to_str().unwrap_or_default()]))?;
    let mut nft_change = Vec::new();
    for i in 0..RUNS * 4 {
        let verb = if i % 2 == 0 { "add" } else { "delete" };
        nft_change.push(timed(&mut in_netns(&[
            "nft",
            verb,
            "element",
            "inet",
            "sgctl",
            "sg/fleet/v4",
            "{ 10.255.255.254 }",
        ]))?);
    }
    let _ = harness::nft(srv, &["delete", "table", "inet", "sgctl"]);
    let ms = |v: &[f64]| cell(median(v), 1) + " ms";
    let rows = vec![
        vec!["load the 100k-member policy".to_owned(), cell(first.ms(), 1) + " ms", cell(load.ms(), 1) + " ms"],
        vec![
            "change one member in place (`sgctl members add/remove`; `nft add/delete element`)".to_owned(),
            ms(&in_place),
            ms(&nft_change),
        ],
        vec!["change one member by applying the edited file".to_owned(), ms(&by_apply), "—".to_owned()],
    ];
    Ok((
        rows,
        json!({
            "sgctl_first_ms": first.ms(), "sgctl_members_ms": in_place, "sgctl_apply_edited_ms": by_apply,
            "nft_load_ms": load.ms(), "nft_element_ms": nft_change,
        }),
    ))
}

/// What the kernel charges for sgctl's maps in the lab's scope (`sgctl
/// status`: every interface's maps and records, and the scope's own).
fn charged(sg: &Sgctl<'_>) -> anyhow::Result<u64> {
    let status: serde_json::Value = serde_json::from_str(&sg.run(&["status", "--json"])?)?;
    let scope = &status["scopes"][0];
    let interfaces: u64 =
        scope["interfaces"].as_array().into_iter().flatten().filter_map(|i| i["kernel_memory"].as_u64()).sum();
    Ok(interfaces + scope["kernel_memory"].as_u64().unwrap_or(0))
}
