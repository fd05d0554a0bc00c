//! Verbs that change or read the kernel need CAP_BPF (or CAP_SYS_ADMIN) and
//! CAP_NET_ADMIN; say which are missing in one line rather than fail deep
//! in a syscall.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

pub fn require(verb: &str) -> anyhow::Result<()> {
    let caps = effective_caps();
    let mut missing = Vec::new();
    if !has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(caps, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("sgctl {verb} needs CAP_BPF and CAP_NET_ADMIN (missing: {}); run it as root", missing.join(", "))
    }
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}
