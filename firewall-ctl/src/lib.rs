//! sgctl's library: policy files to kernel maps, and the verbs that manage them.
//!
//! Stages, each a pure function testable without root:
//! YAML text → [`policy::Policy`] (validated, with source locations) →
//! [`compile::CompiledInterface`] (map entries) → kernel writes
//! ([`datapath`], driven by [`control`]).

pub(crate) mod agent;
pub mod cli;
pub mod compile;
pub(crate) mod control;
pub mod datapath;
pub(crate) mod error;
pub(crate) mod export;
pub mod fault;
pub(crate) mod fleet;
pub mod flowlog;
pub mod import;
pub mod model;
pub(crate) mod netns;
pub mod policy;
pub(crate) mod state;
pub mod timings;

// Test-only code (see `testing`): never in the shipped `sgctl`.
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use error::InputError;
