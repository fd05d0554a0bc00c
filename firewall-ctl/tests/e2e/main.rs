//! The end-to-end tier: the real `sgctl` binary, its programs attached to
//! veth interfaces of throwaway network namespaces (`testlab`), real
//! connections whose outcome (connected, refused, timed out) is asserted.
//!
//! Needs root. One test at a time, since drops are told from answers by
//! timeouts on a 2-core machine: `.cargo/config.toml` makes that the default
//! of every test binary, and `cargo xtask test` passes `--test-threads=1`
//! to this one.

#[path = "../common/mod.rs"]
mod common;

mod accounting;
mod agent;
mod app_db;
mod atomic;
mod audit;
mod cli;
mod cli_tools;
mod dnat;
mod edges;
mod fleet;
mod flood;
mod flowlogs;
mod fragments;
mod hardening;
mod interfaces;
mod members;
mod nft_export;
mod prometheus;
mod scale;
mod trace;
mod tun;
mod upgrade;
mod web_server;
