//! `cargo xtask package` end to end: the .deb is built and linted (lintian
//! fails the build), holds what a user expects where Debian expects it,
//! installs with dpkg into a throwaway root (`dpkg --root`, maintainer
//! scripts run against that root: the units are enabled there and nothing
//! on this host), and the installed `/usr/sbin/sgctl` filters a lab host as
//! the README says. Upgrade, remove and purge never change what the kernel
//! enforces; purge, and only purge, deletes the saved policy. `dpkg
//! --verify` tells a changed binary (the package carries md5sums).
//!
//! Then the same package on the kernel Debian 12 users run: installed with
//! `dpkg -i` in the Linux 6.1 guest (`cargo xtask guest`, whose root is
//! copy-on-write), where `/usr/sbin/sgctl apply policies/web-server.yaml`
//! must filter a real connection.
//!
//! Needs root (dpkg, namespaces, eBPF): it fails, never skips, without it.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use testlab::{Lab, LabHost, Outcome};

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `cmd`; its stdout, or a panic with everything it printed.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// The one .deb `cargo xtask package` left (built once per test run).
fn build_package() -> PathBuf {
    static DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEB.get_or_init(build_package_now).clone()
}

fn build_package_now() -> PathBuf {
    let started = std::time::Instant::now();
    run(Command::new(env!("CARGO_BIN_EXE_xtask")).arg("package").current_dir(root_dir()));
    eprintln!("cargo xtask package took {:.1?}", started.elapsed());
    let dir = root_dir().join("target/debian");
    let debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", dir.display());
    debs[0].clone()
}

/// A throwaway dpkg root whose database knows the packages the .deb depends
/// on, as this machine has them (so dpkg checks Depends for real).
struct DpkgRoot(PathBuf);

impl DpkgRoot {
    fn new(deb: &Path) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!("sgctl-dpkg-root-{}-{nanos}", std::process::id()));
        let admin = root.join("var/lib/dpkg");
        for d in ["info", "updates"] {
            std::fs::create_dir_all(admin.join(d)).expect("dpkg admin dir");
        }
        std::fs::write(admin.join("available"), "").expect("available");
        let depends = run(Command::new("dpkg-deb").args(["-f"]).arg(deb).arg("Depends"));
        let mut status = String::new();
        for dep in depends.split(',').map(|d| d.split_whitespace().next().unwrap_or_default()) {
            let stanza = run(Command::new("dpkg-query").args(["-s", dep]));
            let name = run(Command::new("dpkg-query").args(["-W", "-f=${binary:Package}", dep]));
            std::fs::write(admin.join("info").join(format!("{name}.list")), "").expect("list file");
            status.push_str(stanza.trim_end());
            status.push_str("\n\n");
        }
        std::fs::write(admin.join("status"), status).expect("status");
        Self(root)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    /// `dpkg --root R ARGS`, maintainer scripts run outside a chroot with
    /// DPKG_ROOT=R (the root has no shell of its own; the scripts honour it).
    #[track_caller]
    fn dpkg(&self, args: &[&std::ffi::OsStr]) -> String {
        run(Command::new("dpkg").arg("--root").arg(&self.0).arg("--force-script-chrootless").args(args))
    }
}

impl Drop for DpkgRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The installed sgctl, working on `host` of `lab` with the lab's own state.
fn sgctl(bin: &Path, lab: &Lab, host: &LabHost, args: &[&str]) -> String {
    let state = lab.state_dir().expect("lab state dir");
    let lib = lab.lib_dir().expect("lab lib dir");
    run(Command::new(bin)
        .arg("--state-dir")
        .arg(state)
        .arg("--lib-dir")
        .arg(lib)
        .args(["-n", host.netns()])
        .args(args)
        .env_remove("SGCTL_STATE_DIR")
        .env_remove("SGCTL_LIB_DIR"))
}

/// Seed Example 1 as the README tells it: 80 open to all, 22 only from
/// 203.0.113.10, 8080 (a listener, no rule) silently dropped.
#[track_caller]
fn expect_web_server_filtering(what: &str, ssh: &LabHost, other: &LabHost) {
    let probe = |from: &LabHost, to: &str, timeout: u64| {
        let addr: SocketAddr = to.parse().expect("socket address");
        from.tcp_connect(addr, Duration::from_secs(timeout))
    };
    let got = [
        ("other -> 80", probe(other, "203.0.113.1:80", 3), Outcome::Connected),
        ("ssh -> 22", probe(ssh, "203.0.113.1:22", 3), Outcome::Connected),
        ("other -> 22", probe(other, "203.0.113.1:22", 1), Outcome::TimedOut),
        ("other -> 8080", probe(other, "203.0.113.1:8080", 1), Outcome::TimedOut),
    ];
    for (probe, outcome, want) in &got {
        eprintln!("{what}: {probe}: {outcome} (want {want})");
    }
    assert!(got.iter().all(|(_, outcome, want)| outcome == want), "{what}: wrong outcomes {got:?}");
}

/// Paths every package must hold (as `dpkg-deb -c` lists them).
const EXPECTED: &[&str] = &[
    "./usr/sbin/sgctl",
    "./lib/systemd/system/sgctl-restore.service",
    "./lib/systemd/system/sgctl-agent.service",
    "./usr/share/man/man1/sgctl.1.gz",
    "./usr/share/man/man1/sgctl-apply.1.gz",
    "./usr/share/man/man1/sgctl-import-aws.1.gz",
    "./usr/share/bash-completion/completions/sgctl",
    "./usr/share/zsh/vendor-completions/_sgctl",
    "./usr/share/fish/vendor_completions.d/sgctl.fish",
    "./usr/share/sgctl/policy.schema.json",
    "./usr/share/sgctl/grafana/sgctl.json",
    "./usr/share/sgctl/grafana/provisioning.yaml",
    "./usr/share/doc/sgctl/copyright",
    "./usr/share/doc/sgctl/changelog.Debian.gz",
    "./usr/share/doc/sgctl/README.md",
    "./usr/share/doc/sgctl/bench/figures/b2.svg",
    "./usr/share/doc/sgctl/docs/cli.md",
    "./usr/share/doc/sgctl/docs/semantics.md",
    "./usr/share/doc/sgctl/docs/policy-format.md",
    "./usr/share/doc/sgctl/examples/web-server.yaml",
];

/// Where a unit's enablement link goes, and where it points.
const ENABLED: [(&str, &str); 2] = [
    ("etc/systemd/system/sysinit.target.wants/sgctl-restore.service", "/lib/systemd/system/sgctl-restore.service"),
    ("etc/systemd/system/multi-user.target.wants/sgctl-agent.service", "/lib/systemd/system/sgctl-agent.service"),
];

#[test]
fn the_package_installs_into_a_root_and_its_sgctl_filters() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (dpkg, namespaces, eBPF): run `cargo xtask test`");
    let deb = build_package();

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    eprintln!("dpkg-deb -c {}:\n{listing}", deb.display());
    let entry = |path: &str| listing.lines().find(|l| l.split_whitespace().last() == Some(path));
    for path in EXPECTED {
        assert!(entry(path).is_some(), "{path} is not in the package:\n{listing}");
    }
    let sbin = entry("./usr/sbin/sgctl").unwrap_or_default();
    let (mode, owner) = (sbin.split_whitespace().next(), sbin.split_whitespace().nth(1));
    assert!(
        mode == Some("-rwxr-xr-x") && matches!(owner, Some("root/root" | "0/0")),
        "/usr/sbin/sgctl is root's and executable: {sbin}"
    );
    assert!(!listing.contains("/usr/local"), "nothing under /usr/local:\n{listing}");
    let version = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Version"));
    assert_eq!(version.trim(), format!("{}-1", env!("CARGO_PKG_VERSION")), "package version");

    let root = DpkgRoot::new(&deb);
    let host_links: Vec<bool> =
        ENABLED.iter().map(|(l, _)| Path::new("/").join(l).symlink_metadata().is_ok()).collect();
    root.dpkg(&["-i".as_ref(), deb.as_os_str()]);
    let bin = root.path("/usr/sbin/sgctl");
    let shipped = std::fs::read(&bin).expect("the installed sgctl");
    for test_program in ["bench_empty_xdp", "test_tcx_pass"] {
        assert!(
            !shipped.windows(test_program.len()).any(|w| w == test_program.as_bytes()),
            "the shipped object carries the test program {test_program}"
        );
    }
    assert_eq!(run(Command::new(&bin).arg("--version")).trim(), format!("sgctl {}", env!("CARGO_PKG_VERSION")));
    for (link, target) in ENABLED {
        let got = std::fs::read_link(root.path(link)).unwrap_or_else(|e| panic!("{link} in the root: {e}"));
        assert_eq!(got, Path::new(target), "{link}: enabled by the postinst (deb-systemd-helper)");
    }
    let now: Vec<bool> = ENABLED.iter().map(|(l, _)| Path::new("/").join(l).symlink_metadata().is_ok()).collect();
    assert_eq!(host_links, now, "installing into a root enabled nothing on this host");
    for unit in ["sgctl-restore.service", "sgctl-agent.service"] {
        let text = std::fs::read_to_string(root.path(&format!("/lib/systemd/system/{unit}"))).expect("unit");
        assert!(text.contains("ExecStart=/usr/sbin/sgctl "), "{unit} runs the package's binary:\n{text}");
        assert!(!text.contains("/usr/local"), "{unit} names no /usr/local path:\n{text}");
    }
    run(Command::new("bash").arg("-n").arg(root.path("/usr/share/bash-completion/completions/sgctl")));

    let lab = Lab::new("pkg").expect("lab");
    let srv = lab.host("srv", &["203.0.113.1/24"]).expect("srv");
    let ssh = lab.host("ssh", &["203.0.113.10/24"]).expect("ssh");
    let other = lab.host("other", &["203.0.113.20/24"]).expect("other");
    let _listeners: Vec<_> = ["203.0.113.1:22", "203.0.113.1:80", "203.0.113.1:8080"]
        .iter()
        .map(|a| srv.tcp_listen(a.parse().expect("address")).expect("listener"))
        .collect();
    // What the enabled restore unit runs at the first boot: nothing saved yet.
    sgctl(&bin, &lab, &srv, &["restore", "--all"]);
    let example = root.path("/usr/share/doc/sgctl/examples/web-server.yaml");
    sgctl(&bin, &lab, &srv, &["apply", &example.display().to_string()]);
    expect_web_server_filtering("installed /usr/sbin/sgctl apply", &ssh, &other);

    // Something for purge to delete, where sgctl saves the host's policy.
    let saved = root.path("/var/lib/sgctl/host/applied.json");
    std::fs::create_dir_all(saved.parent().expect("dir")).expect("var/lib/sgctl");
    std::fs::write(&saved, "{}").expect("saved policy");

    // Upgrade (the same version again runs the upgrade paths of every script).
    root.dpkg(&["-i".as_ref(), deb.as_os_str()]);
    expect_web_server_filtering("after an upgrade", &ssh, &other);

    // md5sums: dpkg --verify tells an intact install from a changed binary.
    let intact = root.dpkg(&["--verify".as_ref(), "sgctl".as_ref()]);
    assert_eq!(intact, "", "dpkg --verify of the installed package");
    let mut tampered = std::fs::OpenOptions::new().append(true).open(&bin).expect("open the installed binary");
    std::io::Write::write_all(&mut tampered, b"\0").expect("append a byte");
    // dpkg 1.21 exits 0 either way; what it prints is the verdict.
    let said = root.dpkg(&["--verify".as_ref(), "sgctl".as_ref()]);
    assert!(
        said.contains("??5??????") && said.contains("/usr/sbin/sgctl"),
        "dpkg --verify names the changed binary: {said}"
    );

    root.dpkg(&["-r".as_ref(), "sgctl".as_ref()]);
    assert!(!bin.exists(), "remove deletes the binary");
    assert!(saved.exists(), "remove keeps the saved policy (a reinstall restores it at boot)");
    expect_web_server_filtering("after remove (enforcement needs no binary)", &ssh, &other);

    root.dpkg(&["-P".as_ref(), "sgctl".as_ref()]);
    assert!(!root.path("/var/lib/sgctl").exists(), "purge deletes /var/lib/sgctl");
    for (link, _) in ENABLED {
        assert!(root.path(link).symlink_metadata().is_err(), "purge removes {link}");
    }
    expect_web_server_filtering("after purge (the kernel is never touched by dpkg)", &ssh, &other);
}

/// A guest command that opens a TCP connection from namespace `cli` to
/// 203.0.113.1:`port`, prints whether it `connected`, was `refused` or
/// `timed out`, and fails unless that is `want` (bash's /dev/tcp under
/// `timeout`: quick to start under TCG, unlike a Python probe).
fn guest_probe(port: u16, want: &str) -> String {
    format!(
        "ip netns exec cli timeout 3 bash -c 'exec 3<>/dev/tcp/203.0.113.1/{port}'; rc=$?; \
         case $rc in 0) got=connected;; 124) got='timed out';; *) got=refused;; esac; \
         echo \"port {port}: $got (want {want})\"; test \"$got\" = '{want}'"
    )
}

#[test]
fn the_package_installs_and_filters_on_debian_12s_kernel() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (QEMU, dpkg): run `cargo xtask test`");
    let deb = build_package();
    let deb = deb.strip_prefix(root_dir()).expect("the package is in the workspace").display().to_string();
    let commands = [
        // The guest's /usr, /var and /etc are overlays: nothing reaches this host.
        // man-db's trigger rebuilds its index, minutes under TCG: off, as in Debian's container images.
        format!("rm -f /var/lib/man-db/auto-update && dpkg -i {deb}"),
        "test \"$(readlink /etc/systemd/system/sysinit.target.wants/sgctl-restore.service)\" = \
         /lib/systemd/system/sgctl-restore.service"
            .to_owned(),
        "ip netns add srv && ip netns add cli && ip link add eth0 netns srv type veth peer name eth0 netns cli \
         && ip -n srv addr add 203.0.113.1/24 dev eth0 && ip -n cli addr add 203.0.113.20/24 dev eth0 \
         && ip -n srv link set lo up && ip -n srv link set eth0 up && ip -n cli link set eth0 up"
            .to_owned(),
        // Listeners on 80 (allowed) and 8080 (no rule), both reachable before.
        "for p in 80 8080; do ip netns exec srv busybox nc -ll -p $p -e /bin/true & done; sleep 0.5".to_owned(),
        guest_probe(80, "connected"),
        guest_probe(8080, "connected"),
        "/usr/sbin/sgctl -n srv apply policies/web-server.yaml && /usr/sbin/sgctl -n srv status".to_owned(),
        guest_probe(80, "connected"),
        guest_probe(8080, "timed out"),
    ];
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("guest").args(&commands).current_dir(root_dir()).output();
    let out = out.unwrap_or_else(|e| panic!("cargo xtask guest: {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{said}\nthe guest run took {:.0?}", started.elapsed());
    assert!(out.status.success(), "the package in the Debian 12 guest: {}", out.status);
    assert!(said.contains("guest kernel 6.1."), "ran on Linux 6.1: {said}");
    assert!(said.contains("port 8080: timed out (want timed out)"), "{said}");
}
