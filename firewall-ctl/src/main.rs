//! `sgctl`: parse the command line, run the verb, map the outcome to an exit
//! status (0 done, 1 runtime failure, 2 invalid input or usage).
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use firewall_ctl::{
    cli::{cmd, completers, Cli},
    fault,
};

fn main() -> ExitCode {
    // Answers a shell's completion request (`sgctl completions SHELL --dynamic`) and exits.
    clap_complete::CompleteEnv::with_factory(Cli::command).var(completers::ENV_VAR).complete();
    let cli = Cli::parse();
    firewall_ctl::timings::mark("start");
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An input error already starts with FILE:LINE:COL, as compilers print.
            if fault::is_located(&e) {
                eprintln!("{e:#}");
            } else {
                eprintln!("sgctl: {e:#}");
            }
            ExitCode::from(fault::exit_status(&e) as u8)
        }
    }
}
