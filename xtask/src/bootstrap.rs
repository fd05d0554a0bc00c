//! `cargo xtask bootstrap`: everything a fresh Debian 12 machine (as root)
//! needs to build and test sgctl. Each step checks first, so running it again
//! changes nothing and prints "already present".
use std::{
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::sh;

/// Debian packages the tests and the demo run (the benchmarks add their own):
/// `prometheus` (the server and `promtool`) and `prometheus-node-exporter`
/// read sgctl's metrics in `tests/e2e/prometheus.rs`; `python3-venv` makes the
/// tests' Python environment ([`PYTHON_PACKAGES`]); `cargo xtask package`
/// (which the tests run) needs `dpkg-dev` (dpkg-shlibdeps, for the
/// package's Depends) and `lintian`; `faketime` (libfaketime) steps the
/// wall clock of one process, for the test that a confirm-within rollback
/// does not follow it; `etcd-server` (etcd 3.4, the store of
/// `sgctl agent --etcd`) and `etcd-client` (`etcdctl`) run the fleet's tests,
/// demo and benchmark, each etcd on private loopback ports in a temporary
/// directory; `protobuf-compiler` (`protoc`) and `libprotobuf-dev` (the
/// well-known types, `google/protobuf/descriptor.proto`, that etcd's .proto
/// files import) build the etcd client crate's gRPC bindings (its build
/// script runs protoc); `openssl` makes the certificates of the fleet's TLS
/// test.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "nftables",
    "prometheus",
    "prometheus-node-exporter",
    "python3",
    "python3-venv",
    "dpkg-dev",
    "lintian",
    "faketime",
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "openssl",
];

/// PyPI packages the tests run, pinned, in a virtual environment of the
/// project's own (`~/.local/share/sgctl/python`, beside the LLVM prefix;
/// the tests find it there): a real YAML parser (PyYAML) for what `sgctl
/// import aws` writes, moto + boto3 for real `describe-security-groups`
/// JSON to import, and flowlogs-reader, a published parser of VPC Flow Log
/// records, for the agent's flow logs.
const PYTHON_PACKAGES: &[&str] = &["pyyaml==6.0.3", "boto3==1.44.5", "moto[ec2]==5.2.5", "flowlogs-reader==5.0.1"];

/// Services of those packages that Debian would start (and enable) on the
/// host's default ports. The tests start their own, on private ports in
/// temporary directories; these stay stopped and masked.
const DEBIAN_SERVICES: &[&str] = &["prometheus.service", "prometheus-node-exporter.service", "etcd.service"];

/// The bpf-linker release the eBPF build is known to work with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz release `cargo xtask fuzz` runs (not part of `run`: the
/// tests do not need it).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The cargo-deb release `cargo xtask package` builds the .deb with: 3.8.0
/// builds with rustc 1.85+ (the machines carry 1.95), about a minute and a
/// half on a 2-core machine.
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn run() -> anyhow::Result<()> {
    sh::require_root("bootstrap")?;
    debian_packages(DEBIAN_PACKAGES)?;
    services_masked(DEBIAN_SERVICES)?;
    python_packages(PYTHON_PACKAGES)?;
    rust_components()?;
    let llvm = llvm_prefix()?;
    bpf_linker(&llvm)?;
    cargo_tool("cargo-deb", CARGO_DEB_VERSION)?;
    crate::guest::install()?;
    Ok(())
}

/// Installs those of `packages` that are missing (one `apt-get` run).
pub fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for &package in packages {
        let status = sh::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))?;
        if String::from_utf8_lossy(&status.stdout).trim() == "install ok installed" {
            sh::step(&format!("debian package {package}"), "already present");
        } else {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // Other engineers' (or CI's) apt may hold dpkg's lock for a while.
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["-o", "DPkg::Lock::Timeout=600"]).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    sh::run(apt().args(["update", "-q"]))?;
    let _no_starts = NoServiceStarts::new()?;
    sh::run(apt().args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))?;
    for package in missing {
        sh::step(&format!("debian package {package}"), "installed");
    }
    Ok(())
}

/// While it lives, `invoke-rc.d` starts no service (Debian's
/// `/usr/sbin/policy-rc.d` protocol, exit 101): packages installed for the
/// tests never start daemons on the host's ports. A policy-rc.d that was
/// there already (a container's) is left as it is.
struct NoServiceStarts(Option<PathBuf>);

impl NoServiceStarts {
    fn new() -> anyhow::Result<Self> {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.symlink_metadata().is_ok() {
            return Ok(Self(None));
        }
        fs::write(
            &path,
            "#!/bin/sh\n# cargo xtask bootstrap: no service starts while it installs packages\nexit 101\n",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self(Some(path)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// Stops and masks `units` where systemd runs (a package installed before
/// this step, or by hand, may have started and enabled them); elsewhere
/// nothing starts them.
fn services_masked(units: &[&str]) -> anyhow::Result<()> {
    if !Path::new("/run/systemd/system").is_dir() {
        sh::step("services of test packages", "not started (no systemd)");
        return Ok(());
    }
    for unit in units {
        let state = sh::output(Command::new("systemctl").args(["is-enabled", unit]))?;
        if String::from_utf8_lossy(&state.stdout).trim() == "masked" {
            sh::step(&format!("service {unit} masked"), "already present");
            continue;
        }
        sh::run(Command::new("systemctl").args(["mask", "--now", unit]))?;
        sh::step(&format!("service {unit} masked"), "installed");
    }
    Ok(())
}

/// The tests' Python environment, with `packages` (re)installed whenever
/// the list differs from what it was made with (a stamp file inside).
fn python_packages(packages: &[&str]) -> anyhow::Result<()> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".local/share/sgctl/python");
    let stamp = venv.join("sgctl-packages.txt");
    let wanted = packages.join("\n");
    let what = format!("python packages in {} ({})", venv.display(), packages.join(" "));
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && venv.join("bin/python3").exists() {
        sh::step(&what, "already present");
        return Ok(());
    }
    // Debian's python3, whatever else PATH offers (pyenv shims, say).
    sh::run(Command::new("/usr/bin/python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    sh::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(packages),
    )?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    sh::step(&what, "installed");
    Ok(())
}

/// `rustc` of the nightly toolchain, through rustup (whatever toolchain runs us).
fn nightly_rustc() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "rustc"]);
    cmd
}

/// Toolchain components the build and the code gates need: `rust-src` for
/// the eBPF build (`-Z build-std=core`), nightly `rustfmt` (rustfmt.toml uses
/// nightly options) and `clippy` of both toolchains (`cargo xtask test`
/// lints the workspace with stable, the eBPF crate with nightly).
const COMPONENTS: &[(&str, &str)] =
    &[("nightly", "rust-src"), ("nightly", "rustfmt"), ("nightly", "clippy"), ("stable", "clippy")];

fn rust_components() -> anyhow::Result<()> {
    for toolchain in ["nightly", "stable"] {
        let installed =
            sh::stdout(Command::new("rustup").args(["component", "list", "--toolchain", toolchain, "--installed"]))
                .with_context(|| {
                    format!("the {toolchain} toolchain is needed (rustup toolchain install {toolchain})")
                })?;
        for &(_, component) in COMPONENTS.iter().filter(|(t, _)| *t == toolchain) {
            let what = format!("{component} ({toolchain})");
            // Listed as `rust-src`, or with the host triple (`clippy-x86_64-unknown-linux-gnu`).
            let present = installed.lines().any(|l| l == component || l.starts_with(&format!("{component}-")));
            if present {
                sh::step(&what, "already present");
                continue;
            }
            sh::run(Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]))?;
            sh::step(&what, "installed");
        }
    }
    Ok(())
}

/// The LLVM that bpf-linker links against: the nightly toolchain's own
/// libLLVM, so the bitcode rustc emits and the linker's LLVM always agree.
struct Llvm {
    major: String,
    /// A stable directory (bpf-linker keeps an rpath to its `lib/`).
    prefix: PathBuf,
}

fn llvm_prefix() -> anyhow::Result<Llvm> {
    let version = sh::stdout(nightly_rustc().arg("-vV"))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` names no LLVM version")?
        .to_owned();
    let sysroot = PathBuf::from(sh::stdout(nightly_rustc().args(["--print", "sysroot"]))?.trim());
    let toolchain_lib = sysroot.join("lib");
    let wanted = format!("libLLVM.so.{major}.");
    let library = fs::read_dir(&toolchain_lib)
        .with_context(|| format!("reading {}", toolchain_lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&wanted) && name.contains("-rust-"))
        .with_context(|| format!("no {wanted}*-rust-* in {}", toolchain_lib.display()))?;
    let target = toolchain_lib.join(&library);

    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let prefix = Path::new(&home).join(format!(".local/share/sgctl/llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    // `libLLVM.so` for the build (-lLLVM), the versioned name for the loader
    // (it is the soname bpf-linker records, found through its rpath).
    let mut changed = false;
    for name in ["libLLVM.so", library.as_str()] {
        let link = lib.join(name);
        if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
        changed = true;
    }
    let what = format!("LLVM {major} prefix {} -> {}", prefix.display(), target.display());
    sh::step(&what, if changed { "installed" } else { "already present" });
    Ok(Llvm { major, prefix })
}

fn cargo_bin() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home).join("bin"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(Path::new(&home).join(".cargo/bin"))
}

/// rustc finds the linker through PATH; make sure cargo's bin directory is on
/// it for everything this process starts.
fn ensure_on_path(dir: &Path) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == dir) {
        return Ok(());
    }
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let joined: OsString = std::env::join_paths(dirs).context("joining PATH")?;
    // Single-threaded here: nothing else reads the environment concurrently.
    std::env::set_var("PATH", joined);
    Ok(())
}

fn bpf_linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bpf_linker(llvm: &Llvm) -> anyhow::Result<()> {
    let bin_dir = cargo_bin()?;
    ensure_on_path(&bin_dir)?;
    let bin = bin_dir.join("bpf-linker");
    let minor = BPF_LINKER_VERSION.rsplit_once('.').map_or(BPF_LINKER_VERSION, |(mm, _)| mm);
    if let Some(version) = bpf_linker_version(&bin) {
        if version.split_whitespace().any(|w| w.starts_with(minor)) {
            sh::step(&format!("bpf-linker ({version})"), "already present");
            return Ok(());
        }
    }
    sh::run(
        sh::cargo()
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", llvm.major))
            .env("LLVM_PREFIX", &llvm.prefix),
    )?;
    match bpf_linker_version(&bin) {
        Some(version) => sh::step(&format!("bpf-linker ({version})"), "installed"),
        None => bail!("bpf-linker was installed but `{} --version` fails", bin.display()),
    }
    Ok(())
}

/// Installs cargo-fuzz for `cargo xtask fuzz` unless this version is there
/// (about a minute and a half of building on a 2-core machine).
pub fn cargo_fuzz() -> anyhow::Result<()> {
    cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// Installs the cargo subcommand `name` at `version` (`--locked`) unless
/// `name --version` already says that version.
fn cargo_tool(name: &str, version: &str) -> anyhow::Result<()> {
    let bin_dir = cargo_bin()?;
    ensure_on_path(&bin_dir)?;
    let installed = Command::new(bin_dir.join(name))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(found) = installed.filter(|v| v.split_whitespace().any(|w| w == version)) {
        sh::step(&format!("{name} ({found})"), "already present");
        return Ok(());
    }
    sh::run(sh::cargo().args(["install", name, "--version", version, "--locked", "--force"]))?;
    sh::step(&format!("{name} {version}"), "installed");
    Ok(())
}
