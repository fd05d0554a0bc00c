//! The kernel tier: sgctl's real eBPF programs loaded into the kernel and run
//! on hand-built frames with BPF_PROG_TEST_RUN (no interface, no namespace):
//! verdicts, reasons and credited rules per frame, hostile frames, and the
//! differential test of compiler and kernel against the model.
//!
//! Needs root. One test at a time: `.cargo/config.toml` makes that the
//! default of every test binary, and `cargo xtask test` passes
//! `--test-threads=1` to this one.

mod differential;
mod hostile_packets;
mod verdicts;
