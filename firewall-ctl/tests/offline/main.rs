//! The offline tier: policy files, imports, exports and the command line,
//! with no root and no kernel: `sgctl check`, `import aws`, `completions`
//! run as a user would, the JSON schema, the stable policy fuzzer. Nothing
//! here shares state, so `cargo xtask test` runs these tests in parallel;
//! by hand: `cargo test -p firewall-ctl --test offline -- --test-threads=2`.

#[path = "../common/mod.rs"]
mod common;

mod cli_import_hostile;
mod cli_input_limits;
mod cli_tools;
mod fuzz_policy;
mod schema;
