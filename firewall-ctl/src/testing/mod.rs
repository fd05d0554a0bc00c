//! Test-only code, behind the `test-support` feature (Cargo.toml) so the
//! shipped `sgctl` never carries it: the tests, the benchmark and the fuzz
//! target get it through the crate's dev-dependency on itself (or, for
//! fuzz/, its own dependency on the feature).
#[cfg(feature = "test-support")]
pub mod frames;
pub mod fuzzing;
#[cfg(feature = "test-support")]
pub mod testrun;
