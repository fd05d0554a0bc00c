//! sgctl's library: policy files to kernel maps, and the verbs that manage them.
//!
//! Stages, each a pure function testable without root:
//! YAML text → [`policy::Policy`] (validated, with source locations) →
//! [`compile::CompiledInterface`] (map entries) → kernel writes.

pub mod compile;
pub mod policy;
