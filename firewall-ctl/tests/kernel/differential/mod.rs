//! The differential test (issue 6, item 6): random policies and random
//! packets through the real kernel programs (XDP and tc ingress, tc
//! egress) with BPF_PROG_TEST_RUN, each verdict and credited rule held to
//! `firewall_ctl::model`, and `compile::simulate` held to it on the way.
//!
//! One program set is loaded per generated policy and probed with
//! [`PACKETS_PER_POLICY`] packets; every packet is judged as the first of
//! its flow (the conntrack table is emptied after each run). A run draws a
//! fresh seed and prints it on failure with the command that replays it;
//! proptest also keeps the seed of every failing case it has seen in
//! `regressions.txt` (committed) and replays those first on every run.
//! Each disagreement found also has an explicit test in `regressions.rs`.

mod generate;
mod hosts;
mod kernel;
mod regressions;

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    fmt::Write as _,
    hash::{BuildHasher as _, RandomState},
    net::IpAddr,
    time::Instant,
};

use firewall_common::counters::Reason;
use firewall_ctl::{
    compile::{self, CompiledInterface},
    model::{IpPacket, Model, RuleRef, Transport, Verdict, CREDIT_DEPTH},
    policy::{self, RuleDirection},
};
use ipnet::IpNet;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, FileFailurePersistence, RngSeed, TestError, TestRunner},
};

use crate::differential::{
    generate::{PacketSpec, PolicySpec},
    kernel::{Hook, Kernel, Observed},
};

/// Policies per run, unless `PROPTEST_CASES` says otherwise. Loading the
/// programs for a policy costs ~0.3-0.7 s (the verifier), a packet ~0.2 ms.
const POLICIES: u32 = 48;
const PACKETS_PER_POLICY: usize = 220;
/// Packets judged by kernel and model in a default run, at least.
const MIN_CASES: u64 = 10_000;

#[derive(Default)]
struct Tally {
    policies: Cell<u64>,
    /// Policies whose interface has more rules than one 64-bit word holds.
    wide_policies: Cell<u64>,
    packets: Cell<u64>,
    program_runs: Cell<u64>,
    allowed: Cell<u64>,
    denied: Cell<u64>,
    unfiltered: Cell<u64>,
    /// Allowed packets whose peer sits under more nested prefixes than
    /// the kernel's crediting walk visits.
    deeper_than_walk: Cell<u64>,
    /// ... and whose most specific allowing prefix lies past the walk.
    credited_past_walk: Cell<u64>,
    /// Allowed packets from a single address the policy names (its own
    /// entry in the kernel's single-address hash) that shorter prefixes of
    /// the policy contain too (in the trie): IPv4, IPv6.
    hosts_under_prefixes: [Cell<u64>; 2],
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

#[test]
fn kernel_and_simulate_agree_with_the_model() {
    assert!(nix::unistd::Uid::effective().is_root(), "the differential test loads eBPF programs: run it as root");
    let seed = match std::env::var("PROPTEST_RNG_SEED") {
        Ok(s) => s.parse().expect("PROPTEST_RNG_SEED is a number"),
        Err(_) => RandomState::new().hash_one(std::time::SystemTime::now()),
    };
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok());
    let config = Config {
        cases: cases.unwrap_or(POLICIES),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/kernel/differential/regressions.txt",
        ))),
        // A shrink step that changes the policy loads the programs again.
        max_shrink_iters: 300,
        max_shrink_time: 300_000,
        ..Config::default()
    };
    let strategy = generate::policy().prop_flat_map(|spec| {
        let packets = vec(generate::packet(&spec), PACKETS_PER_POLICY);
        (Just(spec), packets, any::<u16>())
    });
    let tally = Tally::default();
    let loaded = RefCell::new(None);
    let started = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |(spec, packets, sport)| {
        check(&spec, &packets, sport, &tally, &loaded).map_err(TestCaseError::fail)
    });
    let elapsed = started.elapsed();
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, _)) => panic!(
            "the kernel or simulate disagrees with the model (seed {seed}).\n\
             Replay this run: PROPTEST_RNG_SEED={seed} cargo test -p firewall-ctl --test kernel differential:: (as root); \
             the minimal case's own seed is now in tests/kernel/differential/regressions.txt, which every run replays \
             first. Minimal case found:\n{why}"
        ),
        Err(e) => panic!("seed {seed}: {e}"),
    }
    let t = |c: &Cell<u64>| c.get();
    println!(
        "differential (seed {seed}): {} policies ({} with over 64 rules), {} packets ({} program runs) in {:.1} s: {} allowed, {} dropped, \
         {} unfiltered; {} allowed under more than {CREDIT_DEPTH} nested prefixes, {} of them credited past the \
         kernel's walk; {} / {} allowed from a single address under shorter prefixes (IPv4 / IPv6)",
        t(&tally.policies),
        t(&tally.wide_policies),
        t(&tally.packets),
        t(&tally.program_runs),
        elapsed.as_secs_f64(),
        t(&tally.allowed),
        t(&tally.denied),
        t(&tally.unfiltered),
        t(&tally.deeper_than_walk),
        t(&tally.credited_past_walk),
        t(&tally.hosts_under_prefixes[0]),
        t(&tally.hosts_under_prefixes[1]),
    );
    if cases.is_none() {
        assert!(t(&tally.packets) >= MIN_CASES, "only {} packets", t(&tally.packets));
    }
    // The generator must reach every outcome, or the test proves little.
    let share = |c: &Cell<u64>| t(c) * 100 / t(&tally.packets).max(1);
    assert!(share(&tally.allowed) >= 15 && share(&tally.denied) >= 15, "allowed/dropped mix too thin");
    assert!(
        t(&tally.unfiltered) > 0 && t(&tally.credited_past_walk) > 0 && t(&tally.wide_policies) > 0,
        "some outcomes never generated"
    );
    if cases.is_none() {
        assert!(
            tally.hosts_under_prefixes.iter().all(|c| t(c) > 0),
            "no allowed packet from a single address under shorter prefixes in some family"
        );
    }
}

/// The programs loaded for the last policy, kept while shrinking tries
/// fewer packets against the same policy (a load takes ~0.3 s).
type LoadedFor = RefCell<Option<(String, Kernel)>>;

/// Runs every packet through the kernel and checks it against the model.
fn check(
    spec: &PolicySpec,
    packets: &[PacketSpec],
    sport: u16,
    tally: &Tally,
    loaded: &LoadedFor,
) -> Result<(), String> {
    let files = spec.files();
    let (groups, local) = (spec.attached_names(), spec.local_members());
    let setting = || describe_policy(&files, &groups, &local);
    let policy = policy::parse_sources(&files).map_err(|e| format!("generated policy refused: {e}\n{}", setting()))?;
    let compiled = compile::compile_interface(&policy, &groups, &local)
        .map_err(|e| format!("generated policy does not compile: {e}\n{}", setting()))?;
    let model = Model::new(&policy, &groups, &local).map_err(|e| e.to_string())?;
    let setting_text = setting();
    let mut loaded = loaded.borrow_mut();
    if loaded.as_ref().is_none_or(|(text, _)| *text != setting_text) {
        *loaded = None;
        let kernel = Kernel::load(compiled.clone()).map_err(|e| format!("{e:#}\n{setting_text}"))?;
        *loaded = Some((setting_text, kernel));
        bump(&tally.policies);
        if compiled.rules.len() > 64 {
            bump(&tally.wide_policies);
        }
    }
    let (_, kernel) = loaded.as_mut().expect("loaded above");
    for (i, packet) in packets.iter().enumerate() {
        let (direction, verdict, simulated) = judge(&model, &compiled, packet);
        let disagree = |what: String| {
            format!("{what}\n  packet: {}\n  model: {}\n{}", show(packet), show_verdict(&verdict), setting())
        };
        if let Some(simulated) = simulated {
            let modelled = match &verdict {
                Verdict::Allowed(rule) => Some(rule),
                _ => None,
            };
            if simulated.as_ref() != modelled {
                return Err(disagree(format!("simulate credits {simulated:?}")));
            }
        }
        let frame = kernel::frame(packet, sport.wrapping_add(i as u16));
        let hooks: &[Hook] = match direction {
            RuleDirection::Inbound => &[Hook::XdpIngress, Hook::TcIngress],
            RuleDirection::Outbound => &[Hook::TcEgress],
        };
        for &hook in hooks {
            let got = kernel.run(hook, &frame).map_err(|e| disagree(format!("{e:#}")))?;
            bump(&tally.program_runs);
            if got != expected(&verdict, packet) {
                return Err(disagree(format!("{hook:?} {}", show_observed(&got))));
            }
        }
        bump(&tally.packets);
        match &verdict {
            Verdict::Allowed(_) => {
                bump(&tally.allowed);
                if let PacketSpec::Ip { direction, peer, local, transport, .. } = packet {
                    let nested = model.rules().nested_prefix_lengths(*peer);
                    if nested.len() > CREDIT_DEPTH {
                        bump(&tally.deeper_than_walk);
                    }
                    let full = if peer.is_ipv4() { 32 } else { 128 };
                    if nested.len() > 1 && nested.first() == Some(&full) {
                        bump(&tally.hosts_under_prefixes[usize::from(peer.is_ipv6())]);
                    }
                    let (protocol, key) = ip_packet(*direction, *peer, *local, *transport).rule_key();
                    if model.rules().credit(*direction, protocol, key, *peer).is_some_and(|c| c.past_walk) {
                        bump(&tally.credited_past_walk);
                    }
                }
            }
            Verdict::Denied => bump(&tally.denied),
            Verdict::Unfiltered(_) => bump(&tally.unfiltered),
        }
    }
    Ok(())
}

/// The packet's direction, the model's verdict, and for a packet the rules
/// judge, `simulate`'s credited rule.
pub fn judge(
    model: &Model,
    compiled: &CompiledInterface,
    packet: &PacketSpec,
) -> (RuleDirection, Verdict, Option<Option<RuleRef>>) {
    match packet {
        PacketSpec::Link { direction, ether_type } => (*direction, model.judge_link_frame(*ether_type), None),
        PacketSpec::Ip { direction, peer, local, transport, .. } => {
            let ip = ip_packet(*direction, *peer, *local, *transport);
            let verdict = model.judge(*direction, &ip);
            if let Verdict::Unfiltered(_) = verdict {
                return (*direction, verdict, None);
            }
            let (protocol, key) = ip.rule_key();
            let simulated = compile::lookup(compiled, *direction, protocol, key, *peer).map(|id| {
                let r = &compiled.rules[id as usize];
                RuleRef { group: r.group.clone(), direction: r.direction, index: r.index }
            });
            (*direction, verdict, Some(simulated))
        }
    }
}

pub fn ip_packet(direction: RuleDirection, peer: IpAddr, local: IpAddr, transport: Transport) -> IpPacket {
    let (src, dst) = match direction {
        RuleDirection::Inbound => (peer, local),
        RuleDirection::Outbound => (local, peer),
    };
    IpPacket::new(src, dst, transport).expect("the generator makes valid packets")
}

/// What a program run must show for the model's verdict.
pub fn expected(verdict: &Verdict, packet: &PacketSpec) -> Observed {
    let opens_flow = match packet {
        PacketSpec::Ip { direction, peer, local, transport, .. } => {
            ip_packet(*direction, *peer, *local, *transport).opens_flow()
        }
        PacketSpec::Link { .. } => false,
    };
    match verdict {
        Verdict::Unfiltered(_) => Observed { passed: true, reason: Reason::PassUnfiltered, credited: None },
        Verdict::Allowed(rule) => Observed {
            passed: true,
            reason: if opens_flow { Reason::PassNewFlow } else { Reason::PassUntracked },
            credited: Some(rule.clone()),
        },
        Verdict::Denied => Observed { passed: false, reason: Reason::DropNoRule, credited: None },
    }
}

fn show(packet: &PacketSpec) -> String {
    match packet {
        PacketSpec::Link { direction, ether_type } => format!("{direction} link frame, EtherType {ether_type:#06x}"),
        PacketSpec::Ip { direction, peer, local, transport, shape } => {
            format!("{direction}, peer {peer}, local {local}, {transport:?}, {shape:?}")
        }
    }
}

fn show_verdict(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allowed(rule) => format!("allowed, credited to {rule}"),
        Verdict::Denied => "dropped (default deny)".to_owned(),
        Verdict::Unfiltered(why) => format!("unfiltered: {}", why.why()),
    }
}

fn show_observed(got: &Observed) -> String {
    format!(
        "{}, counted as {}, credited to {}",
        if got.passed { "passed" } else { "dropped" },
        got.reason.name(),
        got.credited.as_ref().map_or_else(|| "no rule".to_owned(), ToString::to_string)
    )
}

pub fn describe_policy(files: &[(String, String)], groups: &[String], local: &BTreeMap<String, Vec<IpNet>>) -> String {
    let mut out = format!("  attached groups: {groups:?}; local interface addresses: {local:?}\n");
    for (name, text) in files {
        let _ = write!(out, "--- {name}\n{text}");
    }
    out
}
