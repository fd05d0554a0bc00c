//! The rules the code keeps, checked first by `cargo xtask test` so a
//! formatting slip or a new lint fails in seconds, not after the
//! end-to-end tests: nightly rustfmt (rustfmt.toml uses nightly options),
//! clippy with `-D warnings` for the workspace, and clippy for the eBPF crate
//! on its own target (it only builds for bpfel-unknown-none). Where a lint is
//! wrong for us, the code says so with `#[expect(lint, reason = "…")]`.
use std::process::Command;

use anyhow::bail;

use crate::sh;

struct Gate {
    what: &'static str,
    cmd: Command,
    /// What to run to fix or see the problem.
    fix: &'static str,
}

/// `cargo` of the nightly toolchain, through rustup (whatever toolchain runs us).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(sh::root());
    cmd
}

fn gates() -> Vec<Gate> {
    let mut fmt = nightly_cargo();
    fmt.args(["fmt", "--all", "--check"]);
    let mut clippy = sh::cargo();
    clippy.args(["clippy", "--workspace", "--exclude", "firewall-ebpf", "--all-targets", "--", "-D", "warnings"]);
    let mut ebpf = nightly_cargo();
    ebpf.args([
        "clippy",
        "-p",
        "firewall-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    vec![
        Gate { what: "formatting", cmd: fmt, fix: "cargo +nightly fmt --all" },
        Gate {
            what: "clippy (workspace)",
            cmd: clippy,
            fix: "cargo clippy --workspace --exclude firewall-ebpf --all-targets -- -D warnings",
        },
        Gate {
            what: "clippy (eBPF crate)",
            cmd: ebpf,
            fix: "cargo +nightly clippy -p firewall-ebpf --target bpfel-unknown-none -Z build-std=core -- -D warnings",
        },
    ]
}

pub fn run() -> anyhow::Result<()> {
    for mut gate in gates() {
        let what = sh::describe(&gate.cmd);
        let status = gate.cmd.status().map_err(|e| anyhow::anyhow!("cannot start `{what}`: {e}"))?;
        if !status.success() {
            bail!(
                "{} gate failed: `{what}` ({status}). Fix with `{}`{}",
                gate.what,
                gate.fix,
                if gate.what == "formatting" {
                    ""
                } else {
                    " and the warnings above (or `#[expect(lint, reason = \"…\")]` where a lint is wrong for us)"
                }
            );
        }
        sh::step(gate.what, "clean");
    }
    Ok(())
}
