//! Policies at scale (issue 7 item 2): a prefix list of 100,000 CIDRs loads
//! and filters, the kernel memory `sgctl check` predicts is what the kernel
//! charges, and a policy over the memory limit is refused with nothing
//! changed.
use std::{fmt::Write as _, time::Instant};

use common::*;
use rand_xoshiro::{
    rand_core::{Rng as _, SeedableRng as _},
    SplitMix64,
};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// `n` varied networks, policy data only (no packet goes to them): half
/// IPv4 in 10.0.0.0/8 (/16 to /32), half IPv6 in 2001:db8::/32 (/48 to /128).
fn varied_cidrs(n: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let len = 16 + rng.next_u64() % 17;
                let addr = (10_u32 << 24) | (rng.next_u64() as u32 & 0x00ff_ffff);
                let mask = if len == 32 { u32::MAX } else { !(u32::MAX >> len) };
                format!("{}/{len}", std::net::Ipv4Addr::from(addr & mask))
            } else {
                let len = 48 + rng.next_u64() % 81;
                let low = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) & ((1_u128 << 96) - 1);
                let addr = (0x2001_0db8_u128 << 96) | low;
                let mask = if len == 128 { u128::MAX } else { !(u128::MAX >> len) };
                format!("\"{}/{len}\"", std::net::Ipv6Addr::from(addr & mask))
            }
        })
        .collect()
}

/// A prefix list `big` of `cidrs` (one per line).
fn prefix_list(cidrs: &[String]) -> String {
    let mut text = String::from("prefix_lists:\n  big:\n");
    for c in cidrs {
        let _ = writeln!(text, "    - {c}");
    }
    text
}

#[test]
fn a_prefix_list_of_100k_cidrs_loads_and_filters() {
    let lab = lab("pl100k");
    let srv = host(&lab, "srv", &["198.51.100.1/24"]);
    let cli = host(&lab, "cli", &["198.51.100.10/24"]);
    cli.add_addr("198.51.100.20/24").expect("second client address");
    let _listeners = listen(&srv, &["198.51.100.1:80"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("pl100k");
    // 100,000 CIDRs; one of them, a /30, holds the first client address and not the second.
    let mut cidrs = varied_cidrs(99_999, 0x1009_7a11);
    cidrs.insert(54_321, "198.51.100.8/30".to_owned());
    let text = format!(
        "groups:\n  web:\n    inbound:\n      - {{ protocol: tcp, ports: 80, source: pl:big, description: from the \
         list }}\n{}interfaces:\n  eth0: [web]\n",
        prefix_list(&cidrs)
    );
    let file = files.write("pl100k.yaml", &text);

    let started = Instant::now();
    let applied = sg.apply(&[&file]);
    let took = started.elapsed();
    eprintln!("apply of 100,000 CIDRs (debug build): {took:?}");
    assert!(applied["kernel_memory"]["resident"].as_u64().is_some_and(|b| b > 1 << 20), "{applied:#}");
    let status = sg.status();
    assert!(count(&status["interfaces"][0], "kernel_memory") > 4 << 20, "{status:#}");

    let outcomes = [
        cli.tcp_connect_from(
            "198.51.100.10:0".parse().expect("addr"),
            "198.51.100.1:80".parse().expect("addr"),
            ALLOWED,
        ),
        cli.tcp_connect_from(
            "198.51.100.20:0".parse().expect("addr"),
            "198.51.100.1:80".parse().expect("addr"),
            BLOCKED,
        ),
    ];
    assert_eq!(outcomes, [Connected, TimedOut], "a source in the list connects, one outside does not");
    let stats = sg.stats();
    assert_eq!(count(rule_stats(&stats, "web/inbound/0"), "flows"), 1, "{stats:#}");
}

/// The `accounted` bytes of the maps `names_pinned` selects, from a
/// `kernel_memory.detail` map list.
fn accounted(maps: &Value, pinned: impl Fn(&str) -> bool) -> u64 {
    maps.as_array()
        .expect("maps")
        .iter()
        .filter(|m| pinned(m["map"].as_str().unwrap_or_default()))
        .map(|m| count(m, "accounted"))
        .sum()
}

#[test]
fn the_memory_check_predicts_is_what_the_kernel_charges() {
    let lab = lab("memory");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("memory");
    // 300 rules of one /24 each, a 20,000-CIDR list named by two rules, a
    // group of 2,000 members, and a conntrack table of 4096.
    let mut text = String::from("groups:\n  big:\n    inbound:\n");
    for i in 0..300 {
        let _ =
            writeln!(text, "      - {{ protocol: tcp, ports: {}, source: 10.{}.{}.0/24 }}", 1000 + i, i / 250, i % 250);
    }
    text +=
        "      - { protocol: tcp, ports: 80, source: pl:big }\n      - { protocol: udp, ports: 53, source: pl:big }\n";
    text += "      - { protocol: tcp, ports: 443, source: sg:fleet, description: DESCRIPTION }\n  fleet: {}\n";
    text += &prefix_list(&varied_cidrs(20_000, 0x3e3));
    text += "members:\n  fleet:\n";
    for i in 0..2000 {
        let _ = writeln!(text, "    - 172.16.{}.{}", i / 200, i % 200 + 1);
    }
    text += "interfaces:\n  eth0: [big]\nconntrack:\n  max_entries: 4096\n";
    let first = files.write("memory.yaml", &text.replace("DESCRIPTION", "first"));
    // The same maps with another description: both generation slots get a record.
    let second = files.write("memory2.yaml", &text.replace("DESCRIPTION", "second"));

    let predicted = sg.json(&["check", first.to_str().expect("utf-8")])["kernel_memory"].clone();
    let applied = sg.apply(&[&first]);
    sg.apply(&[&second]);
    let status = sg.status();
    // The single addresses (the members, the list's /32s and /128s) are
    // counted in their hashes, in the check and in the apply report alike.
    for report in [&predicted, &applied["kernel_memory"]] {
        let maps = report["detail"]["interfaces"][0]["maps"].as_array().expect("maps");
        for hash in ["HOST4 (in force)", "HOST6 (in force)"] {
            let entries = maps.iter().find(|m| m["map"] == hash).map(|m| count(m, "entries"));
            assert!(entries.is_some_and(|n| n > 0), "{hash} not counted: {report:#}");
        }
    }

    // The maps the kernel holds pinned or installed in a generation slot
    // (the programs' own scratch and read-only data are neither).
    let detail = &predicted["detail"];
    let interface = accounted(&detail["interfaces"][0]["maps"], |m| m != ".rodata" && m != "SCRATCH");
    let scope = accounted(&detail["scope"], |_| true);
    let charged = (count(&status["interfaces"][0], "kernel_memory"), count(&status, "kernel_memory"));
    eprintln!("predicted {interface} + {scope} bytes, the kernel charges {} + {}", charged.0, charged.1);
    // Within 1% (the records differ by a few bytes of paths and numbers,
    // which can cost one more 64 KiB element).
    let close = |a: u64, b: u64| a.abs_diff(b) * 100 <= b;
    assert!(close(interface, charged.0), "interface: predicted {interface}, kernel {}: {detail:#}", charged.0);
    assert!(close(scope, charged.1), "scope: predicted {scope}, kernel {}", charged.1);
    // What it really holds is more: tries' intermediate nodes, slab rounding.
    assert!(count(&predicted, "resident") > count(&predicted, "accounted"), "{predicted:#}");
    assert!(count(&predicted, "peak") > count(&predicted, "resident"), "{predicted:#}");
}

#[test]
fn a_policy_over_the_memory_limit_is_refused_and_nothing_changes() {
    let lab = lab("memlimit");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24"]);
    let _listeners = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("memlimit");
    let policy = |port: u16, max: u32| {
        format!(
            "groups:\n  web:\n    inbound:\n      - {{ protocol: tcp, ports: {port}, source: 0.0.0.0/0 }}\n\
             interfaces:\n  eth0: [web]\nconntrack:\n  max_entries: {max}\n"
        )
    };
    let small = files.write("small.yaml", &policy(80, 4096));
    let large = files.write("large.yaml", &policy(8080, 1 << 20));
    let (small, large) = (small.to_str().expect("utf-8"), large.to_str().expect("utf-8"));
    sg.ok(&["apply", small]);
    let before = sg.status();

    // A million-flow table alone is over 100 MiB.
    for verb in [vec!["check", large], vec!["apply", large], vec!["apply", "--dry-run", large]] {
        let mut args = verb.clone();
        args.extend(["--max-kernel-memory", "64M"]);
        let run = sg.run(&args).code(2);
        assert!(
            run.stderr.contains("of kernel memory while it is put in force")
                && run.stderr.contains("over the limit of 64.0 MiB")
                && run.stderr.contains("most of it CT"),
            "{verb:?}: {}",
            run.stderr
        );
    }
    // Nothing changed: the same generation, port 80 open and 8080 closed.
    assert_eq!(sg.status()["generation"], before["generation"]);
    let to = |port: u16| format!("203.0.113.1:{port}").parse().expect("addr");
    assert_eq!([cli.tcp_connect(to(80), ALLOWED), cli.tcp_connect(to(8080), BLOCKED)], [Connected, TimedOut]);

    // A bad limit is a usage error; the environment sets it too.
    let run = sg.run(&["check", small, "--max-kernel-memory", "lots"]).code(2);
    assert!(run.stderr.contains("invalid memory limit \"lots\""), "{}", run.stderr);
    let run = sg.command(&["check", large]).env("SGCTL_MAX_KERNEL_MEMORY", "64M").output().expect("sgctl runs");
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    // Under a larger limit the large table goes in.
    sg.ok(&["apply", large, "--max-kernel-memory", "2G"]);
    assert_eq!(cli.tcp_connect(to(8080), ALLOWED), Connected);
}
