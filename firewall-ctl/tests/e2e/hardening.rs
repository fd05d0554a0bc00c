//! Flows as narrow as the traffic, and sgctl first in line, end to end
//! (issue 6): ICMP other than an echo reply never rides an echo flow; a TCP
//! handshake in progress is not established; a blind RST changes nothing;
//! a tcx program attached before sgctl cannot skip its verdict.
#![expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
use common::*;
use Outcome::{Connected, TimedOut};

use crate::common;

const SRV: &str = "203.0.113.1";
const CLI: &str = "203.0.113.10";

const PING_ONLY: &str = "\
groups:
  ping-only:
    inbound:
      - { protocol: icmp, icmp_type: 8, source: 0.0.0.0/0, description: echo requests only }
    outbound:
      - { protocol: all, destination: 0.0.0.0/0 }
interfaces:
  eth0: [ping-only]
";

const WEB: &str = "\
groups:
  web:
    inbound:
      - { protocol: tcp, ports: 80, source: 0.0.0.0/0, description: HTTP }
interfaces:
  eth0: [web]
";

fn apply(lab: &Lab, srv: &LabHost, name: &str, yaml: &str) -> (Sgctl, TempDir) {
    let files = TempDir::new(name);
    let policy = files.write(&format!("{name}.yaml"), yaml);
    let sg = Sgctl::new(lab, srv);
    sg.apply(&[&policy]);
    (sg, files)
}

#[test]
fn only_the_echo_reply_rides_an_echo_flow() {
    let lab = lab("icmp");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let cli = host(&lab, "cli", &[&format!("{CLI}/24")]);
    let to: Ipv4Addr = SRV.parse().unwrap();
    let wait = Duration::from_secs(1);
    let timestamp = |c: &LabHost| c.icmp_exchange(to, 13, 0, &[0u8; 12], 14, wait).expect("raw ICMP");
    let echo = |c: &LabHost| c.icmp_exchange(to, 8, 0, b"abcdefgh", 0, ALLOWED).expect("raw ICMP");
    assert!(timestamp(&cli), "unfiltered, the server answers timestamp requests");

    let (sg, _files) = apply(&lab, &srv, "ping-only", PING_ONLY);
    assert!(!timestamp(&cli), "no rule allows timestamp requests");
    assert!(echo(&cli), "the echo request (identifier 0) is allowed and gets its reply");
    assert!(!timestamp(&cli), "the echo flow of identifier 0 does not carry a timestamp request");
    let inbound = &sg.stats()["interfaces"][0]["inbound"];
    assert!(count(inbound, "dropped_no_rule") >= 2, "{inbound:#}");
    assert!(count(inbound, "pass_new_flow") >= 1, "{inbound:#}");
}

/// Drops every bare ACK `host` sends to `port`: its handshakes never
/// complete (the SYN-ACK is never acknowledged).
fn suppress_final_acks(host: &LabHost, port: u16) {
    let port = port.to_string();
    for cmd in [
        vec!["nft", "add", "table", "inet", "halfopen"],
        vec!["nft", "add", "chain", "inet", "halfopen", "out", "{ type filter hook output priority 0; }"],
        vec![
            "nft", "add", "rule", "inet", "halfopen", "out", "tcp", "dport", &port, "tcp", "flags", "==", "ack", "drop",
        ],
    ] {
        let out = host.run(&cmd).expect("nft runs");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn flows(sg: &Sgctl) -> Vec<serde_json::Value> {
    sg.json(&["conntrack", "list"])["flows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_half_open_handshake_is_not_established_and_a_blind_rst_changes_nothing() {
    let lab = lab("tcpst");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let cli = host(&lab, "cli", &[&format!("{CLI}/24")]);
    let attacker = host(&lab, "attacker", &["203.0.113.66/24"]);
    let _listeners = listen(&srv, &[&format!("{SRV}:80"), &format!("{SRV}:81")]);
    let (sg, _files) = apply(&lab, &srv, "web", &WEB.replace("ports: 80", "ports: [80, 81]"));

    // Half open: the client's ACK of the SYN-ACK never arrives.
    suppress_final_acks(&cli, 81);
    let to = format!("{SRV}:81").parse().unwrap();
    let _half_open = cli.in_netns(|| std::net::TcpStream::connect_timeout(&to, ALLOWED)).expect("connect returns");
    std::thread::sleep(Duration::from_millis(300));
    let half: Vec<_> = flows(&sg).into_iter().filter(|f| f["dst"] == format!("{SRV}:81")).collect();
    assert_eq!(half.len(), 1, "{half:?}");
    assert_eq!(half[0]["state"], "opening", "a handshake in progress is not established: {half:?}");
    let expires = half[0]["expires_in_secs"].as_u64().expect("expires_in_secs");
    assert!(expires <= 120, "the transitory timeout applies: {half:?}");

    // Established, then a blind RST spoofed from the client's address with
    // a sequence number far outside the window.
    let mut conn = open(&cli, &format!("{SRV}:80"));
    let client_port = conn.local_addr().port();
    let established = |sg: &Sgctl| {
        flows(sg).into_iter().find(|f| f["src"] == format!("{CLI}:{client_port}")).unwrap_or_else(|| panic!("no flow"))
    };
    assert_eq!(established(&sg)["state"], "established");
    let before = count(&sg.stats()["interfaces"][0]["inbound"], "pass_out_of_window");
    attacker.send_raw_ipv4(&spoofed_rst(CLI, client_port, SRV, 80, 0x8000_0000)).expect("raw send");
    std::thread::sleep(Duration::from_millis(300));
    let flow = established(&sg);
    assert_eq!(flow["state"], "established", "a blind RST does not shorten the flow: {flow}");
    assert!(flow["expires_in_secs"].as_u64().unwrap_or(0) > 400_000, "{flow}");
    let after = count(&sg.stats()["interfaces"][0]["inbound"], "pass_out_of_window");
    assert_eq!(after, before + 1, "the RST was seen, out of the window");
    assert_eq!(conn.echo(ALLOWED), Connected, "and the connection lives on");
}

/// An IPv4 TCP RST from `src:sport` to `dst:dport` with sequence `seq`
/// (checksums right, as an attacker would send it).
fn spoofed_rst(src: &str, sport: u16, dst: &str, dport: u16, seq: u32) -> Vec<u8> {
    let (s, d): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x04, 0, 0, 0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&s.octets());
    pseudo.extend_from_slice(&d.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = testlab::inet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&s.octets());
    ip.extend_from_slice(&d.octets());
    let sum = testlab::inet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

#[test]
fn a_tcx_program_attached_before_sgctl_cannot_skip_its_verdict() {
    let lab = lab("order");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let cli = host(&lab, "cli", &[&format!("{CLI}/24")]);
    let _listeners = listen(&srv, &[&format!("{SRV}:80"), &format!("{SRV}:8080")]);

    // Another tool's program, first on eth0's tcx ingress: it passes every
    // packet at once (TCX_PASS), which ends the chain.
    let mut other = aya::EbpfLoader::new().load(firewall_ctl::datapath::OBJECT).expect("object loads");
    let program: &mut SchedClassifier =
        other.program_mut("test_tcx_pass").expect("test program").try_into().expect("classifier");
    program.load().expect("test program loads");
    let other_id = program.info().expect("info").id();
    srv.in_netns(|| {
        program.attach_with_options("eth0", TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::first()))
    })
    .expect("attached before sgctl");

    let (sg, _files) = apply(&lab, &srv, "web", WEB);
    expect_all(
        "sgctl judges before the program attached first",
        vec![tcp(&cli, &format!("{SRV}:80"), Connected), tcp(&cli, &format!("{SRV}:8080"), TimedOut)],
    );
    let status = sg.status();
    let others = status["interfaces"][0]["other_programs"].as_array().cloned().unwrap_or_default();
    let listed = others.iter().find(|p| p["id"] == other_id).unwrap_or_else(|| panic!("not in status: {status:#}"));
    assert_eq!(listed["hook"], "tcx ingress", "{listed}");
    assert_eq!(listed["before_sgctl"], false, "sgctl went first: {listed}");
    let text = sg.ok(&["status"]).stdout;
    assert!(text.contains(&format!("tcx ingress program {other_id}")) && text.contains("runs after sgctl"), "{text}");
}

/// Runs `cmd` in `host`, which must succeed.
fn must(host: &LabHost, cmd: &[&str]) {
    let out = host.run(cmd).expect("runs");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Another tool's clsact filter on `host`'s eth0 ingress: a cls_bpf
/// direct-action filter whose program passes every packet at once
/// (TC_ACT_OK ends the classification), at `priority` (0: as `tc` picks).
/// Detached when the returned object is dropped. Returns it and the id.
fn pass_filter(host: &LabHost, priority: u16) -> (aya::Ebpf, u32) {
    let mut other = aya::EbpfLoader::new().load(firewall_ctl::datapath::OBJECT).expect("object loads");
    let program: &mut SchedClassifier =
        other.program_mut("test_tcx_pass").expect("test program").try_into().expect("classifier");
    program.load().expect("test program loads");
    let id = program.info().expect("info").id();
    let options = TcAttachOptions::Netlink(aya::programs::tc::NlOptions { priority, ..Default::default() });
    host.in_netns(|| {
        let _ = aya::programs::tc::qdisc_add_clsact("eth0");
        program.attach_with_options("eth0", TcAttachType::Ingress, options)
    })
    .expect("another tool's clsact filter attached");
    (other, id)
}

#[test]
fn on_the_legacy_tc_hook_sgctl_goes_first_and_a_deleted_filter_is_put_back() {
    let lab = lab("clsact");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let cli = host(&lab, "cli", &[&format!("{CLI}/24")]);
    let _listeners = listen(&srv, &[&format!("{SRV}:80"), &format!("{SRV}:8080")]);
    // Another tool's filter, there before sgctl: it passes every packet,
    // at the priority tc picks by default.
    let (_other, other_id) = pass_filter(&srv, 0);

    let (sg, _files) = apply(&lab, &srv, "web", &WEB.replace("interfaces:\n  eth0: [web]\n", ""));
    let attach = ["attach", "eth0", "--groups", "web", "--mode", "clsact"];
    sg.ok(&attach);
    let enforced = |what: &str| {
        expect_all(what, vec![tcp(&cli, &format!("{SRV}:80"), Connected), tcp(&cli, &format!("{SRV}:8080"), TimedOut)]);
    };
    enforced("sgctl's filter runs before the one that passes everything");
    let status = sg.status();
    let eth0 = &status["interfaces"][0];
    assert_eq!((&eth0["ingress"], &eth0["egress"]), (&"clsact".into(), &"clsact".into()), "{status:#}");
    assert_eq!(eth0["standing"]["ingress"]["first"], true, "{status:#}");
    let others = eth0["other_programs"].as_array().cloned().unwrap_or_default();
    let listed = others.iter().find(|p| p["id"] == other_id).unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!((&listed["hook"], &listed["before_sgctl"]), (&"clsact ingress".into(), &false.into()), "{status:#}");
    let text = sg.ok(&["status"]).stdout;
    assert!(
        text.contains(&format!("clsact ingress program {other_id}")) && text.contains("runs after sgctl"),
        "{text}"
    );

    // Someone deletes sgctl's filter (no link to hold it): status says so,
    // and the next apply of the same policy puts it back.
    must(&srv, &["tc", "filter", "del", "dev", "eth0", "ingress", "pref", "1"]);
    expect_all("sgctl's ingress filter deleted", vec![tcp(&cli, &format!("{SRV}:8080"), Connected)]);
    let status = sg.status();
    assert_eq!(status["interfaces"][0]["standing"]["ingress"]["attached"], false, "{status:#}");
    assert!(sg.ok(&["status"]).stdout.contains("is NOT on clsact ingress"), "{status:#}");
    let again = sg.json(&attach);
    // Put back on the same maps: flows and counters kept.
    assert_eq!(again[0]["change"], "repaired", "{again:#}");
    enforced("the filter is back");
    assert_eq!(sg.status()["interfaces"][0]["standing"]["ingress"]["first"], true);

    // sgctl's state lost without a reboot (bpffs wiped): its filters are no
    // links and keep judging with the last policy; `restore` (the saved
    // policy) takes their place, in place, still first.
    std::fs::remove_dir_all(sg.state_dir()).expect("wiping sgctl's state");
    enforced("the state is gone, the filters still judge");
    let restored = sg.json(&["restore"]);
    assert_eq!(restored["attached"], serde_json::json!(["eth0"]), "{restored:#}");
    enforced("restored over the orphaned filters");
    for side in ["ingress", "egress"] {
        let sgctl: Vec<String> = clsact_filters(&srv, side).into_iter().filter(|f| f.contains(" sg_")).collect();
        assert_eq!(sgctl.len(), 1, "{side}: one sgctl filter, not an orphan beside a new one: {sgctl:?}");
        assert!(sgctl[0].contains("pref 1 "), "{side}: {sgctl:?}");
    }
    assert_eq!(sg.status()["interfaces"][0]["standing"]["ingress"]["first"], true);

    // A filter that holds priority 1 before sgctl arrives runs first: sgctl
    // says so when it attaches, and status shows it before sgctl.
    sg.ok(&["detach", "eth0"]);
    assert!(clsact_filters(&srv, "ingress").iter().all(|f| !f.contains("sg_")), "detach removes sgctl's filters");
    let (_first, first_id) = pass_filter(&srv, 1);
    let run = sg.run(&attach);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("priority 1 is taken"), "{run:?}");
    let status = sg.status();
    let eth0 = &status["interfaces"][0];
    assert_eq!(eth0["standing"]["ingress"]["first"], false, "{status:#}");
    let first = eth0["other_programs"].as_array().and_then(|o| o.iter().find(|p| p["id"] == first_id)).cloned();
    assert_eq!(
        first.map(|p| (p["priority"].clone(), p["before_sgctl"].clone())),
        Some((1.into(), true.into())),
        "{status:#}"
    );
}

#[test]
fn xdp_mode_does_not_replace_another_xdp_program() {
    let lab = lab("xdpown");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let mut other = aya::EbpfLoader::new().load(firewall_ctl::datapath::OBJECT).expect("object loads");
    let program: &mut aya::programs::Xdp =
        other.program_mut(firewall_ctl::testing::testrun::PROG_EMPTY_XDP).expect("program").try_into().expect("xdp");
    program.load().expect("loads");
    let other_id = program.info().expect("info").id();
    srv.in_netns(|| program.attach("eth0", aya::programs::XdpMode::Skb)).expect("another XDP program attached");

    let (sg, _files) = apply(&lab, &srv, "web", &WEB.replace("interfaces:\n  eth0: [web]\n", ""));
    let run = sg.run(&["attach", "eth0", "--groups", "web", "--mode", "xdp"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(&format!("already runs XDP program {other_id}")), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    assert_eq!(sg.status()["interfaces"].as_array().map(Vec::len), Some(0), "nothing was attached");
    // tcx runs after XDP: allowed, and status shows the XDP program first.
    sg.ok(&["attach", "eth0", "--groups", "web", "--mode", "tc"]);
    let others = sg.status()["interfaces"][0]["other_programs"].clone();
    assert_eq!(others[0]["hook"], "xdp", "{others}");
    assert_eq!(others[0]["id"], other_id, "{others}");
    assert_eq!(others[0]["before_sgctl"], true, "{others}");
}

const CLOSED: &str = "\
groups:
  closed:
    inbound: []
    outbound: []
interfaces:
  eth0: [closed]
";

/// A host whose link-local address is still tentative sends its MLD
/// reports from `::` (RFC 3590): they pass as link control, like its other
/// neighbour and listener discovery, and nothing it sends while its
/// interface comes up is counted as dropped (under a group that allows
/// nothing out, the reports were `dropped_no_rule` before).
#[test]
fn mld_reports_of_a_tentative_address_pass() {
    let lab = lab("mld");
    let srv = host(&lab, "srv", &[&format!("{SRV}/24")]);
    let (sg, _files) = apply(&lab, &srv, "closed", CLOSED);
    // The lab turns duplicate address detection off; on, the link-local
    // address stays tentative for a second after the interface comes up.
    for cmd in [
        &["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1"][..],
        &["ip", "link", "set", "eth0", "down"],
        &["ip", "link", "set", "eth0", "up"],
    ] {
        let out = srv.run(cmd).expect("runs");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Reports go out at once and again within the unsolicited report
    // interval (1 s); duplicate address detection takes 1 s.
    std::thread::sleep(Duration::from_secs(3));
    let outbound = &sg.stats()["interfaces"][0]["outbound"];
    assert!(count(outbound, "pass_unfiltered") >= 2, "the host's discovery traffic went out: {outbound:#}");
    assert_eq!(count(outbound, "dropped_no_rule"), 0, "{outbound:#}");
}
