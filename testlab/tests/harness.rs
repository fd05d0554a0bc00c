//! The harness itself, with no eBPF anywhere: it must tell "connected",
//! "refused" and "timed out" apart, over IPv4 and IPv6, for TCP and UDP, and
//! leave nothing behind. A drop is made with nftables in the server's namespace.
//! Needs root; without it every test here fails (never skips).
use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use testlab::{Lab, LabHost, Outcome};

/// For exchanges that should be answered: long enough to ride out a lost
/// first packet (TCP and ARP retry after 1 s), free when all goes well.
const T: Duration = Duration::from_secs(3);
/// For exchanges that should time out: each one costs this much.
const DROP: Duration = Duration::from_millis(700);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip address")
}

fn new_lab() -> Lab {
    Lab::new("harness").unwrap_or_else(|e| panic!("testlab cannot run here: {e:#}"))
}

fn pair(lab: &Lab) -> (LabHost, LabHost) {
    let srv = lab.host("srv", &["10.0.0.2/24", "fd00::2/64"]).expect("server host");
    let cli = lab.host("cli", &["10.0.0.3/24", "fd00::3/64"]).expect("client host");
    (srv, cli)
}

/// Adds an nftables drop rule (input hook) in the host's namespace.
fn nft_drop(host: &LabHost, matches: &str) {
    for cmd in [
        "add table inet testlab".to_owned(),
        "add chain inet testlab input { type filter hook input priority 0; policy accept; }".to_owned(),
        format!("add rule inet testlab input {matches} drop"),
    ] {
        let out = host.run(&["nft", &cmd]).expect("nft");
        assert!(out.status.success(), "nft {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tcp_outcomes_ipv4_and_ipv6() {
    let lab = new_lab();
    let (srv, cli) = pair(&lab);
    for (listen, closed, dropped) in
        [("10.0.0.2:8080", "10.0.0.2:8081", "10.0.0.2:8082"), ("[fd00::2]:8080", "[fd00::2]:8081", "[fd00::2]:8082")]
    {
        let _open = srv.tcp_listen(sa(listen)).expect("listen");
        let _behind_filter = srv.tcp_listen(sa(dropped)).expect("listen");
        assert_eq!(cli.tcp_connect(sa(listen), T), Outcome::Connected, "{listen}");
        assert_eq!(cli.tcp_connect(sa(closed), T), Outcome::Refused, "{closed}");
        assert_eq!(cli.tcp_connect(sa(dropped), T), Outcome::Connected, "{dropped} before the rule");
    }
    nft_drop(&srv, "tcp dport 8082");
    let _v4 = srv.tcp_listen(sa("10.0.0.2:8082")).expect("listen");
    let _v6 = srv.tcp_listen(sa("[fd00::2]:8082")).expect("listen");
    assert_eq!(cli.tcp_connect(sa("10.0.0.2:8082"), DROP), Outcome::TimedOut);
    assert_eq!(cli.tcp_connect(sa("[fd00::2]:8082"), DROP), Outcome::TimedOut);
    // The rule drops only that port.
    assert_eq!(cli.tcp_connect(sa("10.0.0.2:8081"), T), Outcome::Refused);
}

#[test]
fn udp_outcomes_ipv4_and_ipv6() {
    let lab = new_lab();
    let (srv, cli) = pair(&lab);
    let _v4 = srv.udp_echo(sa("10.0.0.2:5300")).expect("udp echo");
    let _v6 = srv.udp_echo(sa("[fd00::2]:5300")).expect("udp echo");
    let _v4d = srv.udp_echo(sa("10.0.0.2:5302")).expect("udp echo");
    let _v6d = srv.udp_echo(sa("[fd00::2]:5302")).expect("udp echo");
    for host in ["10.0.0.2", "[fd00::2]"] {
        assert_eq!(cli.udp_exchange(sa(&format!("{host}:5300")), T), Outcome::Connected, "{host}");
        assert_eq!(cli.udp_exchange(sa(&format!("{host}:5301")), T), Outcome::Refused, "{host}");
    }
    nft_drop(&srv, "udp dport 5302");
    assert_eq!(cli.udp_exchange(sa("10.0.0.2:5302"), DROP), Outcome::TimedOut);
    assert_eq!(cli.udp_exchange(sa("[fd00::2]:5302"), DROP), Outcome::TimedOut);
    assert_eq!(cli.udp_exchange(sa("10.0.0.2:5300"), T), Outcome::Connected);
}

#[test]
fn ping_ipv4_and_ipv6() {
    let lab = new_lab();
    let (srv, cli) = pair(&lab);
    assert!(cli.ping(ip("10.0.0.2"), T));
    assert!(cli.ping(ip("fd00::2"), T));
    nft_drop(&srv, "icmp type echo-request");
    nft_drop(&srv, "icmpv6 type echo-request");
    assert!(!cli.ping(ip("10.0.0.2"), DROP));
    assert!(!cli.ping(ip("fd00::2"), DROP));
    // Neighbour discovery still works, so TCP over IPv6 still does.
    let _l = srv.tcp_listen(sa("[fd00::2]:80")).expect("listen");
    assert_eq!(cli.tcp_connect(sa("[fd00::2]:80"), T), Outcome::Connected);
}

#[test]
fn chosen_source_address_and_added_addresses() {
    let lab = new_lab();
    let (srv, cli) = pair(&lab);
    cli.add_addr("10.0.0.4/24").expect("add v4");
    cli.add_addr("fd00::4/64").expect("add v6");
    let l4 = srv.tcp_listen(sa("10.0.0.2:9000")).expect("listen");
    let l6 = srv.tcp_listen(sa("[fd00::2]:9000")).expect("listen");
    assert_eq!(cli.tcp_connect_from(sa("10.0.0.4:0"), sa("10.0.0.2:9000"), T), Outcome::Connected);
    assert_eq!(cli.tcp_connect_from(sa("[fd00::4]:0"), sa("[fd00::2]:9000"), T), Outcome::Connected);
    assert_eq!(cli.tcp_connect_from(sa("10.0.0.3:0"), sa("10.0.0.2:9000"), T), Outcome::Connected);
    let seen: Vec<IpAddr> = l4.peers().iter().map(SocketAddr::ip).collect();
    assert_eq!(seen, [ip("10.0.0.4"), ip("10.0.0.3")]);
    assert_eq!(l6.peers().iter().map(SocketAddr::ip).collect::<Vec<_>>(), [ip("fd00::4")]);
    // The server can filter by source: drop only 10.0.0.4.
    nft_drop(&srv, "ip saddr 10.0.0.4");
    assert_eq!(cli.tcp_connect_from(sa("10.0.0.4:0"), sa("10.0.0.2:9000"), DROP), Outcome::TimedOut);
    assert_eq!(cli.tcp_connect_from(sa("10.0.0.3:0"), sa("10.0.0.2:9000"), T), Outcome::Connected);
    // Binding an address the host does not have is an error, not a verdict.
    assert!(matches!(cli.tcp_connect_from(sa("10.0.0.9:0"), sa("10.0.0.2:9000"), T), Outcome::Other(_)));
}

#[test]
fn hosts_are_separate_namespaces() {
    let lab = new_lab();
    let (srv, cli) = pair(&lab);
    assert_ne!(srv.netns(), cli.netns());
    assert!(srv.netns().starts_with(lab.prefix()));
    // A server bound inside srv is not reachable from cli's own loopback.
    let _l = srv.tcp_listen(sa("127.0.0.1:7000")).expect("listen");
    assert_eq!(srv.tcp_connect(sa("127.0.0.1:7000"), T), Outcome::Connected);
    assert_eq!(cli.tcp_connect(sa("127.0.0.1:7000"), T), Outcome::Refused);
    let out = srv.run(&["ip", "-br", "addr", "show", "eth0"]).expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.0.0.2/24") && text.contains("fd00::2/64"), "{text}");
    assert!(!text.contains("tentative"), "{text}");
    let in_thread = srv.in_netns(|| std::fs::read_to_string("/proc/sys/net/ipv6/conf/eth0/accept_dad"));
    assert_eq!(in_thread.expect("accept_dad").trim(), "0");
}

#[test]
fn drop_removes_everything_even_on_panic() {
    let lab = new_lab();
    let host = lab.host("h", &["10.0.0.2/24"]).expect("host");
    let names = [lab.switch_netns().to_owned(), host.netns().to_owned()];
    assert!(names.iter().all(|n| netns_list().contains(n.as_str())));
    drop(lab);
    let list = netns_list();
    assert!(names.iter().all(|n| !list.contains(n.as_str())), "left behind: {list}");

    let leaked = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = new_lab();
        let host = lab.host("h", &["10.0.0.2/24"]).expect("host");
        leaked.lock().expect("lock").extend([lab.switch_netns().to_owned(), host.netns().to_owned()]);
        panic!("a failing test");
    });
    assert!(result.is_err());
    let list = netns_list();
    let leaked = leaked.into_inner().expect("lock");
    assert_eq!(leaked.len(), 2);
    assert!(leaked.iter().all(|n| !list.contains(n.as_str())), "left behind after a panic: {list}");
}

#[test]
fn parallel_labs_do_not_collide() {
    // Same lab name, same host names, same addresses, at the same time.
    let prefixes = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let lab = new_lab();
                    let (srv, cli) = pair(&lab);
                    let _l = srv.tcp_listen(sa("10.0.0.2:80")).expect("listen");
                    assert_eq!(cli.tcp_connect(sa("10.0.0.2:80"), T), Outcome::Connected);
                    lab.prefix().to_owned()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("lab thread")).collect::<Vec<_>>()
    });
    assert!(prefixes[0] != prefixes[1] && prefixes[1] != prefixes[2] && prefixes[0] != prefixes[2]);
}

#[test]
fn bad_names_and_addresses_are_errors() {
    assert!(Lab::new("Has Spaces").is_err());
    assert!(Lab::new("a-name-much-too-long-for-this").is_err());
    let lab = new_lab();
    assert!(lab.host("a", &["10.0.0.300/24"]).is_err());
    lab.host("b", &["10.0.0.2/24"]).expect("host b");
    assert!(lab.host("b", &["10.0.0.3/24"]).is_err(), "a second host named b");
}

#[test]
fn namespaces_of_dead_runs_are_removed() {
    // pid_max is at most 2^22, so no process has this pid: a killed run's leftover.
    let stale = "tl-4194305-0-dead-killed-sw";
    let out = Command::new("ip").args(["netns", "add", stale]).output().expect("ip netns add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stale_state = std::path::Path::new("/sys/fs/bpf/testlab").join(stale);
    let _ = std::fs::create_dir_all(&stale_state); // bpffs may not be mounted yet
    let _lab = new_lab();
    assert!(!netns_list().contains(stale), "{stale} still there");
    assert!(!stale_state.exists(), "{} still there", stale_state.display());
}

#[test]
fn state_dir_is_private_to_the_lab_and_removed_on_drop() {
    let (a, b) = (new_lab(), new_lab());
    let dir = a.state_dir().expect("state dir");
    assert_eq!(a.state_dir().expect("state dir"), dir, "one per lab");
    assert_ne!(b.state_dir().expect("state dir"), dir);
    assert!(dir.starts_with("/sys/fs/bpf") && dir.to_string_lossy().contains(a.prefix()));
    let fs_type = nix::sys::statfs::statfs(&dir).expect("statfs").filesystem_type();
    assert_eq!(fs_type, nix::sys::statfs::FsType(0xcafe_4a11), "not on bpffs");
    std::fs::create_dir(dir.join("pins")).expect("mkdir on bpffs");
    drop(a);
    assert!(!dir.exists(), "{} still there", dir.display());
}

/// What `sgctl` saves for a lab (its `--lib-dir`: demo, bench and tests
/// pass it) is the lab's own and goes with it, so no lab run leaves saved
/// scopes in the host's /var/lib/sgctl for `restore --all` to walk at boot.
#[test]
fn lib_dir_is_private_to_the_lab_and_removed_on_drop() {
    let (a, b) = (new_lab(), new_lab());
    let dir = a.lib_dir().expect("lib dir");
    assert_eq!(a.lib_dir().expect("lib dir"), dir, "one per lab");
    assert_ne!(b.lib_dir().expect("lib dir"), dir);
    assert!(!dir.starts_with("/var/lib/sgctl") && dir.to_string_lossy().contains(a.prefix()), "{}", dir.display());
    std::fs::create_dir_all(dir.join("netns-x")).expect("a saved scope");
    drop(a);
    assert!(!dir.exists(), "{} still there", dir.display());
}
