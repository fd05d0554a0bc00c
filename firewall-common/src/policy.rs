//! The compiled policy: what `sgctl` writes and the datapath reads to judge a
//! packet that opens a new flow.
//!
//! A verdict is three bounded map lookups and a bitwise AND, whatever the
//! number of rules:
//!
//! ```text
//! allowed = L4_RULES[dir, proto, port]  &  ( CIDR_RULES[peer]  |  SG_RULES[peer] )
//! ```
//!
//! Each lookup returns a [`RuleSet`]: one bit per rule of the interface's
//! compiled table (the union of its attached groups, both directions). A rule
//! is a cross product of its ports and its peers, so "some port matches and
//! some peer matches" is exactly "the rule matches", and one bit per
//! *source-file* rule is enough: lists share the rule's bit and counter.
//!
//! All three maps are LPM tries. A trie answers only with the longest
//! matching prefix, so userspace stores in every entry the union of the sets
//! of all the entries that contain it (its ancestors). Any prefix that
//! contains the looked-up point is an ancestor of the longest match, so the
//! longest match alone carries every rule that applies.

/// Rule-set width in 64-bit words. 16 words = 1024 rules per interface,
/// counting both directions; `sgctl check` refuses more.
pub const RULE_WORDS: usize = 16;
/// Largest number of rules one interface's attached groups may hold.
pub const MAX_RULES: usize = RULE_WORDS * 64;

/// A set of rule ids: bit `i` is rule `i` of the interface's rule table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub words: [u64; RULE_WORDS],
}

impl RuleSet {
    pub const EMPTY: Self = Self { words: [0; RULE_WORDS] };

    pub fn insert(&mut self, rule: u32) {
        self.words[(rule / 64) as usize] |= 1 << (rule % 64);
    }

    pub fn contains(&self, rule: u32) -> bool {
        self.words[(rule / 64) as usize] & (1 << (rule % 64)) != 0
    }

    pub fn union_with(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= *b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
}

/// Key data of `L4_RULES`, an LPM trie over `(direction, protocol, port)`.
///
/// The prefix length chooses what a rule pins down:
/// - 8: direction only — protocol `all`;
/// - 16: direction and protocol — any port, any ICMP type, other protocols;
/// - 16 + k: the first k bits of the port, big-endian. A port range is split
///   into the few aligned prefix blocks that cover it exactly (at most 30
///   for 1-65535), as Cilium does for its port masks;
/// - ICMP/ICMPv6 put `[type, code]` where the port goes: 24 pins the type,
///   32 the type and code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct L4Key {
    pub direction: u8,
    pub protocol: u8,
    /// Destination port in network order, or `[icmp type, icmp code]`.
    pub port: [u8; 2],
}

/// Prefix lengths of [`L4Key`], see its documentation.
pub mod l4_prefix {
    pub const ANY_PROTOCOL: u32 = 8;
    pub const ANY_PORT: u32 = 16;
    pub const FULL: u32 = 32;
    pub const ICMP_TYPE: u32 = 24;
}

/// Value of the address tries (`CIDR_RULES*`, `SG_RULES*`).
///
/// `rules` decides the verdict: the entry's own rules and its ancestors'.
/// The rest lets the datapath credit the rule with the most specific
/// address match (docs/cli.md) without a loop over rules: `own` holds the rules
/// with a peer of exactly this prefix, and `parent_len` finds the next
/// less specific entry (a lookup of the same address with that prefix
/// length), so the datapath walks the few prefixes containing the address,
/// longest first, and stops at the first whose `own` rules allow the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRules {
    pub rules: RuleSet,
    pub own: RuleSet,
    pub prefix_len: u32,
    /// Prefix length of the nearest containing entry, or [`NO_PARENT`].
    pub parent_len: u32,
}

/// [`AddrRules::parent_len`] of an entry that no other entry contains.
pub const NO_PARENT: u32 = u32::MAX;

/// Key data of `CIDR_RULES4` / `SG_RULES4`: an IPv4 address, network order.
pub type Addr4 = [u8; 4];
/// Key data of `CIDR_RULES6` / `SG_RULES6`: an IPv6 address as four words
/// whose memory holds the 16 network-order bytes. Words, not bytes, so the
/// datapath moves addresses with four loads and stores instead of the
/// byte-loop `memcpy` the BPF backend emits for byte arrays.
pub type Addr6 = [u32; 4];

/// The [`Addr6`] of 16 network-order bytes.
pub fn addr6_from_octets(o: [u8; 16]) -> Addr6 {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The 16 network-order bytes of an [`Addr6`].
pub fn addr6_octets(a: Addr6) -> [u8; 16] {
    let mut o = [0u8; 16];
    for (chunk, word) in o.chunks_exact_mut(4).zip(a) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    o
}

/// Fixed capacities of the policy maps of one interface.
pub mod capacity {
    /// `L4_RULES` entries (port blocks, protocols, ICMP types).
    pub const L4: u32 = 16384;
    /// Entries in each address trie (CIDRs, or member addresses for `sg:`).
    pub const ADDRS: u32 = 16384;
}
