//! `sgctl`: parse the command line, run the verb, map the outcome to an exit
//! status (0 done, 1 runtime failure, 2 invalid input or usage).
use std::process::ExitCode;

use clap::Parser as _;
use firewall_ctl::{cli::Cli, cmd, is_input_error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A policy error already starts with FILE:LINE:COL, as compilers print.
            if e.chain().any(|c| c.is::<firewall_ctl::policy::PolicyError>()) {
                eprintln!("{e:#}");
            } else {
                eprintln!("sgctl: {e:#}");
            }
            if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
