//! `aya::Pod` for every map key and value: only on the userspace side.
use crate::{
    conntrack::{legacy, FlowEntry, FlowKey, FlowKey4, FlowKey6, Timeouts},
    counters::{ReasonCounters, RuleCounters},
    events::{EventBudget, FlowEvent, TraceMatch},
    policy::{Active, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta},
};

// SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and byte
// arrays, with every padding byte spelled out as a field.
unsafe impl aya::Pod for RuleSet {}
unsafe impl aya::Pod for L4Key {}
unsafe impl aya::Pod for AddrEntry {}
unsafe impl aya::Pod for ClassRules {}
unsafe impl aya::Pod for Active {}
unsafe impl aya::Pod for SlotMeta {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowKey4 {}
unsafe impl aya::Pod for FlowKey6 {}
unsafe impl aya::Pod for legacy::FlowEntry {}
unsafe impl aya::Pod for FlowEntry {}
unsafe impl aya::Pod for Timeouts {}
unsafe impl aya::Pod for RuleCounters {}
unsafe impl aya::Pod for ReasonCounters {}
unsafe impl aya::Pod for FlowEvent {}
unsafe impl aya::Pod for EventBudget {}
unsafe impl aya::Pod for TraceMatch {}
