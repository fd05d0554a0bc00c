//! `cargo xtask …`: the project's own setup, build, test and demo steps, so a
//! fresh Debian 12 machine (as root) needs nothing but this repository.
mod bench;
mod bootstrap;
mod build;
mod demo;
mod demo_fleet;
mod fuzz;
mod gates;
mod guest;
mod install;
mod man;
mod package;
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
    /// Install what builds and tests need (idempotent): rust-src, bpf-linker, Debian packages, the 6.1 guest.
    Bootstrap,
    /// Run shell commands as root in Debian 12's own kernel (6.1) under QEMU, over a copy-on-write view of this root.
    Guest {
        /// Run the end-to-end tests `cargo xtask test` runs in the guest (built first), instead of commands.
        #[arg(long, conflicts_with = "commands")]
        tests: bool,
        /// Shell command lines, run in order in the workspace root; the first that fails ends the run.
        #[arg(required_unless_present = "tests", value_name = "COMMAND")]
        commands: Vec<String>,
    },
    /// Bootstrap, then build the eBPF object and the `sgctl` binary (release).
    Build,
    /// Bootstrap, check formatting and clippy, then run every test of the workspace (needs root).
    Test,
    /// Bootstrap and build, then show the web-server policy at work in throwaway namespaces.
    Demo {
        /// Instead: three hosts and one etcd — an app server joins the fleet, the database admits it, the app
        /// server dies and its lease expires (docs/fleet.md).
        #[arg(long)]
        fleet: bool,
    },
    /// The benchmark suite (B1-B7, or those named), each beside its peer in the same run (needs root); then the tables and figures.
    Bench {
        /// Benchmarks to run (b1 b2 b3 b4 b5 b6 b7 b8); all when none is named.
        #[arg(value_name = "BENCHMARK")]
        only: Vec<String>,
        /// Run nothing: rewrite BENCHMARKS.md's and README.md's generated sections and bench/figures/ from bench/results/*.json.
        #[arg(long, conflicts_with = "only")]
        report: bool,
    },
    /// Build and install sgctl and its boot-time restore unit (systemd), enabled (needs root).
    Install {
        /// Installation prefix: the binary goes to PREFIX/sbin.
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
        /// Install the unit without enabling it.
        #[arg(long)]
        no_enable: bool,
    },
    /// Bootstrap and build, then write sgctl's man pages into target/man/.
    Man,
    /// Build the Debian package (release build, cargo-deb) into target/debian/ and lint it.
    Package,
    /// The code gates alone: nightly rustfmt --check, clippy -D warnings (workspace and eBPF crate).
    Lint,
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
        Task::Guest { tests, commands } => guest::run_cli(tests, &commands),
        Task::Test => test::run(),
        Task::Demo { fleet: false } => demo::run(),
        Task::Demo { fleet: true } => demo_fleet::run(),
        Task::Bench { report: true, .. } => bench::report(),
        Task::Bench { only, .. } => bench::run(&only),
        Task::Install { prefix, no_enable } => install::run(&prefix, !no_enable),
        Task::Man => man::run(),
        Task::Package => package::run(),
        Task::Lint => gates::run(),
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
