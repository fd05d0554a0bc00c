//! The compiled policy: what `sgctl` writes and the datapath reads to judge a
//! packet that opens a new flow.
//!
//! A verdict is three bounded map lookups and a bitwise AND, whatever the
//! number of rules:
//!
//! ```text
//! allowed = L4_RULES[dir, proto, port]  &  ( CLASSES[ADDR[peer]].rules  |  any )
//! ```
//!
//! Each lookup yields a [`RuleSet`]: one bit per rule of the interface's
//! compiled table (the union of its attached groups, both directions). A rule
//! is a cross product of its ports and its peers, so "some port matches and
//! some peer matches" is exactly "the rule matches", and one bit per
//! *source-file* rule is enough: lists share the rule's bit and counter.
//! `ADDR` holds CIDR and prefix-list peers and the member addresses of
//! `sg:` peers alike; `any` (in [`SlotMeta`]) the rules for every address.
//!
//! The maps are LPM tries. A trie answers only with the longest matching
//! prefix, so userspace stores in every entry the union of the sets of all
//! the entries that contain it (its ancestors). Any prefix that contains
//! the looked-up point is an ancestor of the longest match, so the longest
//! match alone carries every rule that applies.
//!
//! Single addresses (an IPv4 /32, an IPv6 /128: `sg:` members, host
//! entries of prefix lists) are kept out of the address tries, in an
//! exact-match hash per family (`HOST4`, `HOST6`) that the datapath asks
//! first. A single address is the longest match of nothing but itself, so
//! its entry, ancestors folded in like any other, is what the trie would
//! have answered for it; every other address finds what it found before in
//! the trie. A new flow from one of a million hosts then costs one hash
//! lookup instead of a walk of some twenty trie nodes. A generation without
//! single addresses installs no hash, and the datapath goes straight to the
//! trie.

/// Rule-set width in 64-bit words. 16 words = 1024 rules per interface,
/// counting both directions; `sgctl check` refuses more.
pub const RULE_WORDS: usize = 16;
/// Largest number of rules one interface's attached groups may hold.
pub const MAX_RULES: usize = RULE_WORDS * 64;

/// A set of rule ids: bit `i` is rule `i` of the interface's rule table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleSet {
    pub words: [u64; RULE_WORDS],
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::EMPTY
    }
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

    /// The rule ids in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let mut bits = *w;
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some(i as u32 * 64 + bit)
            })
        })
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
///
/// Four padding bytes follow (never matched: every prefix length is at most
/// 32), so that the trie's value, stored right after the key data, is
/// 8-byte aligned for the `u64` words of [`RuleSet`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct L4Key {
    pub direction: u8,
    pub protocol: u8,
    /// Destination port in network order, or `[icmp type, icmp code]`.
    pub port: [u8; 2],
    pub _pad: [u8; 4],
}

impl L4Key {
    pub const fn new(direction: u8, protocol: u8, port: [u8; 2]) -> Self {
        Self { direction, protocol, port, _pad: [0; 4] }
    }
}

/// Prefix lengths of [`L4Key`], see its documentation.
pub mod l4_prefix {
    pub const ANY_PROTOCOL: u32 = 8;
    pub const ANY_PORT: u32 = 16;
    pub const FULL: u32 = 32;
    pub const ICMP_TYPE: u32 = 24;
}

/// Value of the address tries (`ADDR4`, `ADDR6`) and of the single-address
/// hashes (`HOST4`, `HOST6`): peer address → class.
///
/// The rules themselves live in `CLASSES`, keyed by the class: entries with
/// the same rules share one class, so a trie of a million prefix-list CIDRs
/// holds 8 bytes per entry. The class key is computed from the rules'
/// stable counter slots (see [`COUNTER_SLOTS`]), not from their bit
/// positions, so inserting a rule before others rewrites `CLASSES` and
/// `L4_RULES` but no address entry.
///
/// Two `u32`s, not a `u64`: in the IPv4 trie the value sits 4 bytes into
/// the node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrEntry {
    /// The class key, low and high words.
    pub class: [u32; 2],
}

impl AddrEntry {
    pub fn new(class: u64) -> Self {
        Self { class: [class as u32, (class >> 32) as u32] }
    }

    #[inline(always)]
    pub fn class_key(&self) -> u64 {
        u64::from(self.class[0]) | (u64::from(self.class[1]) << 32)
    }
}

/// Nested prefixes told apart when crediting a flow (below).
pub const MAX_TIERS: usize = 8;

/// Value of `CLASSES`: the rules of the addresses of one class.
///
/// `rules` decides the verdict: every rule whose peer contains the
/// address. `tiers` decides which of the rules that allow a packet is
/// credited with the flow (cli.md: the most specific address match, then
/// the first in file order): the rules of the longest containing prefix,
/// then the next, …, then the rules for every address; the datapath takes
/// the first tier that allows the packet and the lowest rule id in it.
/// Prefixes nested deeper than [`MAX_TIERS`] share the last tier.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassRules {
    pub rules: RuleSet,
    pub tiers: [RuleSet; MAX_TIERS],
}

/// Key data of `ADDR4`: an IPv4 address, network order.
pub type Addr4 = [u8; 4];
/// Key data of `ADDR6`: an IPv6 address as four words
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

/// Counter slots per interface: `RULE_STATS` entries. A rule keeps its
/// slot, and so its counters, for as long as its content is unchanged,
/// whatever rules are added or removed around it; a removed rule's slot is
/// reused only once no tracked flow credits it any more. Twice the rules an
/// interface can hold, so a whole policy can be replaced while the old
/// one's flows are still tracked.
pub const COUNTER_SLOTS: u32 = 2 * MAX_RULES as u32;

/// Counter slot of flows whose rule was removed and whose own slot had to
/// be reused (only when more than [`MAX_RULES`] removed rules still have
/// tracked flows).
pub const SLOT_REMOVED: u32 = COUNTER_SLOTS - 1;

/// Counter slot of flows that no rule allowed and that passed because a
/// group of the interface is in audit mode (`Reason::PassAudit`): their
/// packets and bytes, and `flows` the would-be drops that opened them.
/// Never given to a rule.
pub const SLOT_AUDIT: u32 = COUNTER_SLOTS - 2;

/// Which of the two policy generations of a scope is in force: value of the
/// scope's `ACTIVE` map, shared by the programs of all its interfaces and
/// read once per packet. `sgctl apply` writes the other generation
/// completely, then switches with one write of this value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// 0 or 1: the slot of every generation-indexed map in force.
    pub slot: u32,
    /// 1 once no program can still be reading the other slot (a grace
    /// period has passed since the switch); userspace only, the datapath
    /// ignores it.
    pub settled: u32,
    /// The policy generation in force (for reports; the datapath ignores it).
    pub generation: u64,
}

/// What an interface does in one generation: value of `SLOT_META[slot]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotMeta {
    /// One of [`slot_state`]. Anything else drops every packet.
    pub state: u32,
    /// Bits of [`slot_flags`].
    pub flags: u32,
    /// Rules whose peer is every IPv4 address (`0.0.0.0/0`), and every IPv6
    /// address (`::/0`): they need no address lookup, and keeping them out
    /// of the tries means adding such a rule rewrites no address entry.
    pub any4: RuleSet,
    pub any6: RuleSet,
}

/// [`SlotMeta::state`] values.
pub mod slot_state {
    /// Never written: the datapath drops everything (fail closed).
    pub const UNSET: u32 = 0;
    /// The generation's policy maps judge every packet.
    pub const ENFORCE: u32 = 1;
    /// The interface is not filtered in this generation (being attached,
    /// before the switch; or being detached, after it): every packet passes.
    pub const UNFILTERED: u32 = 2;
}

/// [`SlotMeta::flags`] bits.
pub mod slot_flags {
    /// A group attached to the interface is in audit mode: a packet no rule
    /// allows passes as `would_drop` instead of being dropped. Read only on
    /// the drop path.
    pub const AUDIT: u32 = 1;
    /// `conntrack: { accounting: true }`: each tracked flow counts its
    /// packets and bytes per direction (`FlowEntry::packets`, `bytes`),
    /// one atomic add of each per packet.
    pub const ACCOUNTING: u32 = 2;
}

/// `max_entries` of the inner-map templates declared in the object (the
/// kernel checks an installed inner map against its template's type, key,
/// value and flags, not its size). The maps `sgctl` installs are sized to
/// the compiled policy; 1 keeps the transient template small.
pub mod template {
    pub const L4: u32 = 1;
    pub const ADDRS: u32 = 1;
    pub const HOSTS: u32 = 1;
    pub const CLASSES: u32 = 1;
    pub const CONNTRACK: u32 = 1;
    /// Map flags of the single-address hashes, which an installed map must
    /// share with its template: `BPF_F_NO_PREALLOC`, so that the room kept
    /// for `sgctl members` costs nothing until used (as a trie's does), and
    /// an element replaced or deleted in place is freed only after every
    /// program reading it has finished.
    pub const HOST_FLAGS: u32 = 1;
}
