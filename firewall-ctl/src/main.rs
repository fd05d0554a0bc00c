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
            eprintln!("sgctl: {e:#}");
            if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
