//! Where the network header starts: set per interface when `sgctl` loads
//! the object (each interface gets its own copy), read-only afterwards, so
//! the verifier sees constants and keeps only the branch that applies.
use aya_ebpf::Global;

/// 1 on a device without an Ethernet header (tun, WireGuard, IP tunnels,
/// PPP): the network header comes first and `skb->protocol` says which it
/// is. 0: an Ethernet header (and VLAN tags) comes first. Read by the tc
/// programs only; `sgctl` never attaches XDP to such a device.
#[no_mangle]
pub static LINK_BARE_IP: Global<u32> = Global::new(0);

/// Where the network header starts when [`LINK_BARE_IP`] is set: 0 on a
/// real device. The verdict tests set 14: `BPF_PROG_TEST_RUN` hands an skb
/// program a frame that begins with an Ethernet header (and takes
/// `skb->protocol` from it), whatever device the program is meant for.
#[no_mangle]
pub static LINK_NET_OFFSET: Global<u32> = Global::new(0);
