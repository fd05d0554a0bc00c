//! Types shared by the kernel programs (`firewall-ebpf`) and `sgctl`.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so both
//! sides agree byte for byte and no uninitialised hole reaches the kernel's
//! hash functions.
#![no_std]

pub mod conntrack;
pub mod counters;
pub mod events;
mod layout;
pub mod map_names;
pub mod policy;
pub mod tcp;

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

/// IP protocol numbers the datapath treats specially, and their names.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;

    /// The protocols known by name, in lower case: the one table the policy
    /// parser, `import aws`, `explain`, `trace` and `conntrack list` read.
    pub const NAMES: [(&str, u8); 4] = [("tcp", TCP), ("udp", UDP), ("icmp", ICMP), ("icmpv6", ICMPV6)];

    /// The name of protocol `number`, if it has one.
    pub fn name(number: u8) -> Option<&'static str> {
        NAMES.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
    }

    /// The number of the protocol called `name`, in any case.
    pub fn by_name(name: &str) -> Option<u8> {
        NAMES.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|(_, n)| *n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_and_numbers_map_both_ways_in_any_case() {
            for (name, number) in NAMES {
                assert_eq!(super::name(number), Some(name));
                assert_eq!(by_name(name), Some(number));
            }
            assert_eq!(by_name("ICMPv6"), Some(ICMPV6));
            assert_eq!((by_name("all"), by_name("6"), name(47)), (None, None, None));
        }
    }
}
