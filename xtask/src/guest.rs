//! Debian 12's own kernel (Linux 6.1) in a throwaway guest: QEMU without
//! KVM (TCG) started by virtme-ng over a copy-on-write view of this
//! machine's root, so the guest runs the binaries built here, as root, on
//! the kernel a Debian 12 user has. Nothing the guest writes reaches the
//! host except what it writes under its output directory (`--rwdir`).
//!
//! `cargo xtask bootstrap` installs it ([`install`]): QEMU, kmod and
//! busybox from Debian, virtme-ng from PyPI in a venv of ours, and the
//! newest `linux-image-6.1.0-NN-amd64-unsigned` Debian offers, extracted
//! and depmod'd. [`run`] runs a list of shell commands in it; `cargo xtask
//! guest CMD...` does so from the command line.
//!
//! Why TCG: `/dev/kvm` on our machines is `kvm_pvm`, under which a stock
//! kernel hangs at boot (see ../shared/platform-notes.md, "Other kernels").
use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{bootstrap, sh};

/// Debian packages the guest needs: QEMU itself, `modprobe`/`depmod` (the
/// guest loads WireGuard, ipip and GRE modules), busybox (virtme-ng's
/// guest tools), and venv for virtme-ng's own Python environment.
const PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static", "python3-venv", "wireguard-tools"];

/// The virtme-ng release the guest is known to boot with.
const VIRTME_NG_VERSION: &str = "1.42";

/// Debian 12's kernel ABI series: packages `linux-image-6.1.0-NN-amd64-unsigned`.
const KERNEL_PACKAGE_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_PACKAGE_SUFFIX: &str = "-amd64-unsigned";

/// Guest size: one CPU per host core we may take (the guest is TCG, one
/// host thread per vCPU), and enough memory for the tests' labs.
const CPUS: &str = "2";
const MEMORY: &str = "2G";

/// What the guest needs, installed.
pub struct Guest {
    /// virtme-ng's `vng`.
    vng: PathBuf,
    /// The kernel image, `…/boot/vmlinuz-RELEASE`.
    kernel: PathBuf,
    /// `uname -r` in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
}

/// `~/.local/share/sgctl`: where the project keeps what it installs.
fn share_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(Path::new(&home).join(".local/share/sgctl"))
}

/// Installs what the guest needs (each step idempotent, one line each).
pub fn install() -> anyhow::Result<Guest> {
    bootstrap::debian_packages(PACKAGES)?;
    let share = share_dir()?;
    let vng = virtme_ng(&share.join("virtme-ng"))?;
    let (kernel, release) = kernel(&share.join("kernels"))?;
    Ok(Guest { vng, kernel, release })
}

/// virtme-ng in a venv of the project's (Debian's Python, so the system's
/// Python environment stays untouched).
fn virtme_ng(venv: &Path) -> anyhow::Result<PathBuf> {
    let vng = venv.join("bin/vng");
    let version = || {
        Command::new(&vng)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(v) = version().filter(|v| v.split_whitespace().any(|w| w == VIRTME_NG_VERSION)) {
        sh::step(&format!("{v} ({})", venv.display()), "already present");
        return Ok(vng);
    }
    sh::run(Command::new("/usr/bin/python3").args(["-m", "venv", "--clear"]).arg(venv))?;
    sh::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")),
    )?;
    match version() {
        Some(v) => sh::step(&format!("{v} ({})", venv.display()), "installed"),
        None => bail!("virtme-ng was installed in {} but `vng --version` fails", venv.display()),
    }
    Ok(vng)
}

/// The newest Debian 12 kernel package the archive offers, extracted under
/// `root/RELEASE` with its modules indexed. Returns the image and release.
fn kernel(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let mut package = newest_kernel_package()?;
    if package.is_none() {
        // The package lists may never have been fetched on this machine.
        sh::run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
        package = newest_kernel_package()?;
    }
    let package =
        package.with_context(|| format!("apt offers no {KERNEL_PACKAGE_PREFIX}NN{KERNEL_PACKAGE_SUFFIX} package"))?;
    let release = package.trim_start_matches("linux-image-").trim_end_matches("-unsigned").to_owned();
    let dir = root.join(&release);
    let image = dir.join(format!("boot/vmlinuz-{release}"));
    let modules_dep = dir.join(format!("lib/modules/{release}/modules.dep"));
    if image.exists() && modules_dep.exists() {
        sh::step(&format!("Debian kernel {release} ({})", dir.display()), "already present");
        return Ok((image, release));
    }
    // Download and extract beside, then rename: a killed bootstrap leaves
    // no half-extracted kernel that looks complete.
    let work = root.join(format!(".{release}.partial"));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // apt's download sandbox user cannot write into root's home: download as root.
    sh::run(
        Command::new("apt-get").args(["download", "-q", "-o", "APT::Sandbox::User=root", &package]).current_dir(&work),
    )?;
    let deb = fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb in {}", work.display()))?;
    let tree = work.join("tree");
    sh::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    sh::run(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(&tree, &dir).with_context(|| format!("moving the kernel to {}", dir.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    sh::step(&format!("Debian kernel {release} ({})", dir.display()), "installed");
    Ok((image, release))
}

/// `linux-image-6.1.0-NN-amd64-unsigned` with the highest NN apt knows.
fn newest_kernel_package() -> anyhow::Result<Option<String>> {
    let pattern = format!("^{}[0-9]+{}$", regex_escape(KERNEL_PACKAGE_PREFIX), regex_escape(KERNEL_PACKAGE_SUFFIX));
    let list = sh::stdout(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi = name.strip_prefix(KERNEL_PACKAGE_PREFIX)?.strip_suffix(KERNEL_PACKAGE_SUFFIX)?;
            Some((abi.parse::<u32>().ok()?, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name))
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// What a guest run did.
pub struct Run {
    /// Everything the commands printed (stdout and stderr, in order).
    pub output: String,
    /// The exit status of the command list (of the first command that failed).
    pub status: i32,
    /// From starting QEMU to its exit: boot, the commands, shutdown.
    pub duration: Duration,
}

/// Runs `commands` (shell command lines, in order, stopping at the first
/// that fails) as root in the guest, in the workspace root, with bpffs
/// mounted on /sys/fs/bpf as a booted Debian has it. What they print is
/// echoed here as it comes (prefixed `guest| `) and kept in
/// `out_dir/guest.log`. `out_dir`
/// is created; the guest can write into it (`$GUEST_OUT`), and the host
/// reads it afterwards. Gives up after `timeout`.
pub fn run(guest: &Guest, commands: &[String], out_dir: &Path, timeout: Duration) -> anyhow::Result<Run> {
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize()?;
    let log = out_dir.join("guest.log");
    let status_file = out_dir.join("guest.status");
    for stale in [&log, &status_file] {
        let _ = fs::remove_file(stale);
    }
    let script = out_dir.join("guest.sh");
    fs::write(&script, guest_script(commands, &out_dir)).with_context(|| format!("writing {}", script.display()))?;
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let mut cmd = Command::new(&guest.vng);
    cmd.arg("--disable-kvm")
        .arg("--run")
        .arg(&guest.kernel)
        .args(["--force-9p", "--user", "root", "--cpus", CPUS, "--memory", MEMORY])
        .arg("--rwdir")
        .arg(&out_dir)
        .arg("--cwd")
        .arg(sh::root())
        .arg("--exec")
        .arg(&script)
        // vng runs qemu-system-x86_64 from PATH, and its own helpers from its venv.
        .env("PATH", path_with(guest.vng.parent().unwrap_or(Path::new("/"))))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{}`", sh::describe(&cmd)))?;
    let mut output = String::new();
    let mut echoed = 0_u64;
    let exited = loop {
        echoed += echo_new(&log, echoed, &mut output);
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            echo_new(&log, echoed, &mut output);
            bail!("the guest did not finish within {} s (killed); its output is above", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    echo_new(&log, echoed, &mut output);
    let duration = started.elapsed();
    let status = fs::read_to_string(&status_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let Some(status) = status else {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        bail!(
            "the guest exited ({exited}) without finishing its commands (no {}): {}",
            status_file.display(),
            stderr.trim()
        );
    };
    Ok(Run { output, status, duration })
}

/// The script the guest runs: the environment a booted Debian gives
/// (bpffs, a sane PATH), then each command, its status recorded.
fn guest_script(commands: &[String], out_dir: &Path) -> String {
    let out = out_dir.display();
    let mut script = format!(
        "#!/bin/sh\n\
         # Written by cargo xtask (xtask/src/guest.rs); runs inside the guest.\n\
         exec >{out}/guest.log 2>&1\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export GUEST_OUT={out}\n\
         mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || {{ echo 'mounting bpffs failed'; echo 1 >{out}/guest.status; exit 1; }}\n\
         echo \"guest kernel $(uname -r), $(nproc) CPUs\"\n\
         run() {{\n\
         \x20 echo \"guest\\$ $1\"\n\
         \x20 sh -c \"$1\"\n\
         \x20 rc=$?\n\
         \x20 if [ $rc -ne 0 ]; then echo \"guest: exit status $rc: $1\"; echo $rc >{out}/guest.status; exit $rc; fi\n\
         }}\n"
    );
    for command in commands {
        script.push_str(&format!("run {}\n", shell_quote(command)));
    }
    script.push_str(&format!("echo 0 >{out}/guest.status\n"));
    script
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap_or(path)
}

/// Prints what `log` gained past byte `from` (each line prefixed), appends
/// it to `output`, and returns how many bytes that was.
fn echo_new(log: &Path, from: u64, output: &mut String) -> u64 {
    let Ok(mut file) = fs::File::open(log) else { return 0 };
    if file.seek(SeekFrom::Start(from)).is_err() {
        return 0;
    }
    let mut new = Vec::new();
    if file.read_to_end(&mut new).is_err() {
        return 0;
    }
    // Only whole lines: the rest comes with the next poll.
    let Some(end) = new.iter().rposition(|b| *b == b'\n') else { return 0 };
    let text = String::from_utf8_lossy(&new[..=end]);
    for line in text.lines() {
        println!("guest| {line}");
    }
    output.push_str(&text);
    (end + 1) as u64
}

/// `cargo xtask guest CMD...`: runs the commands in the guest, prints what
/// they print, and fails with the first failure's status. With `tests`,
/// builds the test binaries and runs [`TESTS`] instead.
pub fn run_cli(tests: bool, commands: &[String]) -> anyhow::Result<()> {
    sh::require_root("guest")?;
    if tests {
        sh::run(sh::cargo().args(["test", "--workspace", "--exclude", "firewall-ebpf", "--no-run", "--quiet"]))?;
        let run = run_tests(crate::test::parse_result)?;
        sh::step(
            &format!("guest (Debian 12, Linux {})", run.release),
            &format!("{} passed, {} failed in {:.0} s", run.passed, run.failed, run.duration.as_secs_f64()),
        );
        if run.failed > 0 || run.passed == 0 {
            bail!("the guest's tests failed");
        }
        return Ok(());
    }
    let guest = install()?;
    let out_dir = sh::root().join("target/guest");
    let run = run(&guest, commands, &out_dir, Duration::from_secs(3600))?;
    sh::step(&format!("guest {} run", guest.release), &format!("exit status {} in {:.0?}", run.status, run.duration));
    if run.status != 0 {
        bail!("a command failed in the guest (exit status {})", run.status);
    }
    Ok(())
}

/// The end-to-end tests that matter on Debian 12's kernel, run in the
/// guest from the test binaries `cargo xtask test` built on the host (the
/// guest sees this root): `(test binary, name filters)`, one run of the
/// binary per entry, `#[ignore]`d tests included (the real tunnels the
/// host kernel has no modules for); a filter is a test's path or a part of
/// it (`tun::` runs every test of `tests/e2e/tun.rs`), no filter runs the
/// whole binary. Chosen to keep the guest part within about five minutes of
/// TCG.
pub const TESTS: &[(&str, &[&str])] = &[
    (
        "e2e",
        &[
            // The seed's three examples, real connections, `apply policies/web-server.yaml`.
            "web_server::example1_web_server_both_families",
            "app_db::examples2_3_app_server_and_database",
            // tc and XDP, detach.
            "cli::lifecycle_attach_detach_and_hooks",
            // An atomic switch under traffic; restore after a reboot (empty bpffs).
            "atomic::a_reattach_has_no_gap_and_keeps_tracked_flows",
            "atomic::restore_puts_the_saved_policy_back",
            // The legacy tc hook: first among clsact filters, a deleted filter put back.
            "hardening::on_the_legacy_tc_hook",
            // L3 links: tun, and real WireGuard, IP-in-IP and GRE devices.
            "tun::",
        ],
    ),
    (
        "kernel",
        // Conntrack and related ICMP, through the real programs on this verifier.
        &[
            "verdicts::related_icmp_errors_pass",
            "verdicts::replies_of_an_inbound_flow",
            "verdicts::icmp_echo_is_tracked",
        ],
    ),
];

/// Test binaries built for `targets`: `cargo test --no-run` (already built
/// by the host's run, so this only lists them), target name → executable.
fn test_binaries(targets: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut cmd = sh::cargo();
    // The workspace, as `cargo xtask test` builds it: `-p` would resolve
    // features differently and build everything again.
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "firewall-ebpf",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for target in targets {
        cmd.args(["--test", target]);
    }
    let out = sh::stdout(&mut cmd)?;
    let mut found = Vec::new();
    for line in out.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(name), Some(exe)) = (message["target"]["name"].as_str(), message["executable"].as_str()) else {
            continue;
        };
        if targets.contains(&name) {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// What the guest's tests did.
pub struct TestRun {
    pub release: String,
    pub passed: u64,
    pub failed: u64,
    pub duration: Duration,
}

/// Runs [`TESTS`] in the guest (one test at a time, as on the host), with
/// their output echoed; counts what passed and failed. A guest that does
/// not boot, or a test binary that cannot run, is a failure.
pub fn run_tests(parse_result: fn(&str) -> Option<(u64, u64)>) -> anyhow::Result<TestRun> {
    let guest = install()?;
    let targets: Vec<&str> = TESTS.iter().map(|(t, _)| *t).collect();
    let binaries = test_binaries(&targets)?;
    // The labs run the release `sgctl` (the package's): unoptimized, each
    // command costs seconds under TCG, and the guest part must stay short.
    crate::build::build_sgctl()?;
    let sgctl = crate::build::sgctl_path();
    let mut commands = vec!["modprobe -a tun wireguard ipip ip_gre sch_ingress cls_bpf veth".to_owned()];
    for (target, filters) in TESTS {
        let (_, exe) =
            binaries.iter().find(|(name, _)| name == target).with_context(|| format!("no test binary for {target}"))?;
        let mut command = format!(
            "SGCTL_E2E_EMULATED=1 SGCTL_E2E_SGCTL={} {} --test-threads=1 --include-ignored",
            sgctl.display(),
            exe.display()
        );
        for filter in *filters {
            command.push(' ');
            command.push_str(filter);
        }
        // Run every binary even when one fails: the counts say what failed.
        commands.push(format!("{command} || echo 'guest: {target} failed'"));
    }
    let out_dir = sh::root().join("target/guest");
    let run = run(&guest, &commands, &out_dir, Duration::from_secs(20 * 60))?;
    let (mut passed, mut failed) = (0, 0);
    // A binary that failed without a summary (it could not run) counts as one failure.
    let mut summary: Option<(u64, u64)> = None;
    for line in run.output.lines() {
        if line.starts_with("guest$ ") {
            summary = None;
        } else if let Some((p, f)) = parse_result(line) {
            passed += p;
            failed += f;
            summary = Some((p, f));
        } else if line.starts_with("guest: ") && line.ends_with(" failed") && summary.is_none_or(|(_, f)| f == 0) {
            failed += 1;
        }
    }
    if run.status != 0 {
        bail!("the guest's commands failed (exit status {}); its output is above", run.status);
    }
    Ok(TestRun { release: guest.release, passed, failed, duration: run.duration })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_script_runs_each_command_quoted_and_records_the_status() {
        let script = guest_script(&["echo 'a b'".to_owned(), "true".to_owned()], Path::new("/o"));
        assert!(script.contains("run 'echo '\\''a b'\\'''\nrun 'true'\n"), "{script}");
        assert!(script.contains("mount -t bpf bpf /sys/fs/bpf"), "{script}");
        assert!(script.ends_with("echo 0 >/o/guest.status\n"), "{script}");
    }
}
