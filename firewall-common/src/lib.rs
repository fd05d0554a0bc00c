//! Types shared by the kernel programs (`firewall-ebpf`) and `sgctl`.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so both
//! sides agree byte for byte and no uninitialised hole reaches the kernel's
//! hash functions.
#![no_std]

pub mod conntrack;
pub mod counters;
pub mod events;
pub mod policy;

#[cfg(feature = "user")]
mod user;

/// Traffic direction as seen from the filtered interface's host.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Arriving on the interface (ingress program): rules match the source.
    Inbound = 0,
    /// Leaving through the interface (egress program): rules match the destination.
    Outbound = 1,
}

/// IP protocol numbers the datapath treats specially.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}
