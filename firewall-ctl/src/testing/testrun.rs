//! One interface's programs and maps loaded but not attached, run with
//! `BPF_PROG_TEST_RUN` on frames from [`crate::testing::frames`]: the verdict tests
//! and the per-packet benchmark share this.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    programs::{Program, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
    Ebpf,
};
use firewall_common::{counters::RuleCounters, policy::Active};

use crate::{
    compile::{
        counter_slots::{self, SlotTable},
        image, CompiledInterface,
    },
    datapath::{
        self, generation,
        hooks::LinkLayer,
        maps::{self, IfaceMaps},
        Pins,
    },
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// -1: pass on to the next tcx program.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;

/// Baseline program in the object: returns XDP_PASS and does nothing else.
pub const PROG_EMPTY_XDP: &str = "bench_empty_xdp";

pub struct Loaded {
    dir: PathBuf,
    ebpf: Ebpf,
    /// Counter slot of each rule id.
    rule_slots: Vec<u32>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Loaded {
    /// Loads `compiled` with every program verified, its maps pinned in a
    /// fresh directory on bpffs (removed on drop), the policy in force as
    /// generation 1 in slot 0.
    pub fn new(compiled: &CompiledInterface) -> anyhow::Result<Self> {
        Self::with_link(compiled, LinkLayer::Ethernet)
    }

    /// [`Loaded::new`] for a device without an Ethernet header (tun,
    /// WireGuard, ...). `BPF_PROG_TEST_RUN` gives an skb program a frame that
    /// starts with 14 bytes of Ethernet header (and takes `skb->protocol`
    /// from its EtherType), so this copy looks for the IP header at offset
    /// 14 and takes the protocol from the skb, as on a real such device it
    /// does at offset 0. Only its tc programs can judge.
    pub fn new_bare_ip(compiled: &CompiledInterface) -> anyhow::Result<Self> {
        Self::with_link(compiled, LinkLayer::BareIp)
    }

    /// [`Loaded::new`] with another build of the kernel programs (the
    /// per-packet benchmark compares builds with it).
    pub fn with_object(compiled: &CompiledInterface, object: &[u8]) -> anyhow::Result<Self> {
        Self::load(compiled, LinkLayer::Ethernet, object)
    }

    fn with_link(compiled: &CompiledInterface, link: LinkLayer) -> anyhow::Result<Self> {
        Self::load(compiled, link, datapath::OBJECT)
    }

    fn load(compiled: &CompiledInterface, link: LinkLayer, object: &[u8]) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/sgctl-testrun-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).context("creating a directory on bpffs (/sys/fs/bpf)")?;
        let active = dir.join(maps::ACTIVE);
        maps::create_active(&active)?;
        let net_offset = if link == LinkLayer::BareIp { 14 } else { 0 };
        let pins = Pins::new(&dir, active.clone());
        let ebpf = datapath::load_object(object, &pins, compiled.conntrack_capacity, link, net_offset)?;
        let rule_slots = counter_slots::assign(&SlotTable::default(), &compiled.rules, 1, Default::default).by_rule;
        let image = image::build(compiled, &rule_slots)?;
        let iface = IfaceMaps::at(&dir);
        generation::write(&iface, 0, &image, None)?;
        iface.set_timeouts(compiled.timeouts)?;
        maps::write_active(&active, Active { slot: 0, settled: 1, generation: 1 })?;
        let mut loaded = Self { ebpf, dir, rule_slots };
        for name in [datapath::PROG_INGRESS_TC, datapath::PROG_EGRESS_TC] {
            let p: &mut SchedClassifier = loaded.ebpf.program_mut(name).context(name)?.try_into()?;
            p.load().with_context(|| format!("verifier rejected {name}"))?;
        }
        for name in [datapath::PROG_INGRESS_XDP, PROG_EMPTY_XDP] {
            let p: &mut Xdp = loaded.ebpf.program_mut(name).context(name)?.try_into()?;
            p.load().with_context(|| format!("verifier rejected {name}"))?;
        }
        Ok(loaded)
    }

    /// Runs `program` on `frame` `repeat` times; the action and the kernel's
    /// mean time per run.
    pub fn run(&self, program: &str, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
        let result = match self.ebpf.program(program).with_context(|| format!("no program {program}"))? {
            Program::Xdp(p) => p.test_run(opts),
            Program::SchedClassifier(p) => p.test_run(opts),
            _ => anyhow::bail!("{program} cannot be test-run"),
        }
        .context("BPF_PROG_TEST_RUN")?;
        Ok((result.return_value, result.duration))
    }

    pub fn maps(&self) -> IfaceMaps {
        IfaceMaps::at(&self.dir)
    }

    /// The counters of each rule, in rule-id order.
    pub fn rule_counters(&self) -> anyhow::Result<Vec<RuleCounters>> {
        self.maps().rule_counters(&self.rule_slots)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
