//! The byte size of every key and value the kernel and `sgctl` share,
//! checked when either side compiles: a field added, moved or resized on
//! one side shows here first, not as a map of garbage at run time (and a
//! size that is not a multiple of 8 would hint at a padding hole).
use core::mem::size_of;

use crate::{
    conntrack::{legacy, FlowEntry, FlowKey, FlowKey4, FlowKey6, TcpSeen, Timeouts},
    counters::{ReasonCounters, RuleCounters},
    events::{EventBudget, FlowEvent, TraceMatch},
    policy::{Active, Addr4, Addr6, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta},
};

const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowKey4>() == 16);
const _: () = assert!(size_of::<FlowKey6>() == 40);
const _: () = assert!(size_of::<FlowEntry>() == 96);
const _: () = assert!(size_of::<TcpSeen>() == 20);
const _: () = assert!(size_of::<legacy::FlowEntry>() == 48);
const _: () = assert!(size_of::<legacy::TcpSeen>() == 16);
const _: () = assert!(size_of::<Timeouts>() == 48);
const _: () = assert!(size_of::<RuleCounters>() == 24);
const _: () = assert!(size_of::<ReasonCounters>() == 16);
const _: () = assert!(size_of::<RuleSet>() == 128);
const _: () = assert!(size_of::<L4Key>() == 8);
const _: () = assert!(size_of::<AddrEntry>() == 8);
const _: () = assert!(size_of::<ClassRules>() == 1152);
const _: () = assert!(size_of::<Addr4>() == 4);
const _: () = assert!(size_of::<Addr6>() == 16);
const _: () = assert!(size_of::<Active>() == 16);
const _: () = assert!(size_of::<SlotMeta>() == 264);
const _: () = assert!(size_of::<FlowEvent>() == 72);
const _: () = assert!(size_of::<EventBudget>() == 24);
const _: () = assert!(size_of::<TraceMatch>() == 80);
