//! `cargo xtask …`: the project's own setup, build, test and demo steps, so a
//! fresh Debian 12 machine (as root) needs nothing but this repository.
mod bench;
mod bootstrap;
mod build;
mod demo;
mod fuzz;
mod sh;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks for sgctl")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what builds and tests need (idempotent): rust-src, bpf-linker, Debian packages.
    Bootstrap,
    /// Bootstrap, then build the eBPF object and the `sgctl` binary (release).
    Build,
    /// Bootstrap, then run every test of the workspace (needs root).
    Test,
    /// Bootstrap and build, then show the web-server policy at work in throwaway namespaces.
    Demo,
    /// Per-packet cost and apply time, each beside a peer measured in the same run (needs root).
    Bench,
    /// Fuzz the policy parser and compiler with cargo-fuzz (libFuzzer, nightly); installs cargo-fuzz if missing.
    Fuzz {
        /// How long to fuzz, in seconds.
        #[arg(default_value_t = 300)]
        secs: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Bootstrap => bootstrap::run(),
        Task::Build => build::run(),
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Bench => bench::run(),
        Task::Fuzz { secs } => fuzz::run(secs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
