//! The seed examples' labs and probes, shared by the tests that enforce
//! them with sgctl (tests/e2e/web_server.rs, tests/e2e/app_db.rs) and with sgctl's
//! nftables export (tests/e2e/nft_export.rs): the same hosts, the same probes,
//! the same expectations.
use Outcome::{Connected, Refused, TimedOut};

use super::{host, lab, listen, ping, tcp, udp, udp_echo, Lab, LabHost, Listener, Outcome, Probe};

/// Seed Example 1 (`policies/web-server.yaml`), one L2 segment: srv
/// 203.0.113.1 / 2001:db8::1 carries web-server; ssh 203.0.113.10 /
/// 2001:db8::10 is the SSH rule's source; other 203.0.113.20 / 2001:db8::20.
pub struct WebLab {
    pub lab: Lab,
    pub srv: LabHost,
    pub ssh: LabHost,
    pub other: LabHost,
}

pub fn web_lab(name: &str) -> WebLab {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24", "2001:db8::1/64"]);
    let ssh = host(&lab, "ssh", &["203.0.113.10/24", "2001:db8::10/64"]);
    let other = host(&lab, "other", &["203.0.113.20/24", "2001:db8::20/64"]);
    WebLab { lab, srv, ssh, other }
}

/// What Example 1's probes find listening: `https` apart, dropped to see
/// an allowed port refuse.
pub struct WebListeners {
    pub rest: Vec<Listener>,
    pub https: Vec<Listener>,
}

pub fn web_listeners(w: &WebLab) -> WebListeners {
    let mut rest = listen(
        &w.srv,
        &[
            "203.0.113.1:22",
            "[2001:db8::1]:22",
            "203.0.113.1:80",
            "[2001:db8::1]:80",
            "203.0.113.1:8080",
            "[2001:db8::1]:8080",
        ],
    );
    rest.extend(listen(&w.ssh, &["203.0.113.10:9000", "[2001:db8::10]:9000"]));
    rest.extend(udp_echo(&w.srv, &["203.0.113.1:80"]));
    rest.extend(udp_echo(&w.ssh, &["203.0.113.10:9000", "[2001:db8::10]:9000"]));
    let https = listen(&w.srv, &["203.0.113.1:443", "[2001:db8::1]:443"]);
    WebListeners { rest, https }
}

/// Before any filter: everything answers, so every time-out after is the
/// filter's doing.
pub fn web_unfiltered(w: &WebLab) -> Vec<Probe<'_>> {
    let WebLab { srv, other, .. } = w;
    vec![
        tcp(other, "203.0.113.1:22", Connected),
        tcp(other, "203.0.113.1:8080", Connected),
        tcp(other, "[2001:db8::1]:80", Connected),
        udp(other, "203.0.113.1:80", Connected),
        ping(other, "203.0.113.1", Connected),
        ping(srv, "2001:db8::10", Connected),
    ]
}

/// web-server in force on srv. `own_udp_v6`: what srv's own datagram to
/// ssh over IPv6 (no outbound rule) gets: a time-out under sgctl, whose tc
/// egress drop is silent; nftables' output hook reports its drop to the
/// sending socket. Either way nothing leaves eth0.
pub fn web_enforced(w: &WebLab, own_udp_v6: Outcome) -> Vec<Probe<'_>> {
    let WebLab { srv, ssh, other, .. } = w;
    vec![
        // SSH only from 203.0.113.10/32, IPv4 only.
        tcp(ssh, "203.0.113.1:22", Connected),
        tcp(other, "203.0.113.1:22", TimedOut),
        tcp(ssh, "[2001:db8::1]:22", TimedOut),
        // HTTP from 0.0.0.0/0: anyone over IPv4, nobody over IPv6.
        tcp(other, "203.0.113.1:80", Connected),
        tcp(ssh, "203.0.113.1:80", Connected),
        tcp(other, "[2001:db8::1]:80", TimedOut),
        // HTTPS from 0.0.0.0/0 and ::/0.
        tcp(other, "203.0.113.1:443", Connected),
        tcp(other, "[2001:db8::1]:443", Connected),
        tcp(ssh, "[2001:db8::1]:443", Connected),
        // No rule: dropped although something listens.
        tcp(other, "203.0.113.1:8080", TimedOut),
        tcp(other, "[2001:db8::1]:8080", TimedOut),
        // Outbound all to 0.0.0.0/0: srv's own connections get their
        // replies with no inbound rule; not over IPv6.
        tcp(srv, "203.0.113.10:9000", Connected),
        tcp(srv, "[2001:db8::10]:9000", TimedOut),
        // No ICMP rule inbound; outbound pings get their replies.
        ping(other, "203.0.113.1", TimedOut),
        ping(other, "2001:db8::1", TimedOut),
        ping(srv, "203.0.113.20", Connected),
        ping(srv, "2001:db8::20", TimedOut),
        // The rules are TCP: UDP to port 80 is dropped; srv's own UDP
        // exchange gets its reply back.
        udp(other, "203.0.113.1:80", TimedOut),
        udp(srv, "203.0.113.10:9000", Connected),
        udp(srv, "[2001:db8::10]:9000", own_udp_v6),
    ]
}

/// web-server in force, the HTTPS listeners gone: the host's own RST gets out.
pub fn web_https_down(w: &WebLab) -> Vec<Probe<'_>> {
    let other = &w.other;
    vec![
        tcp(other, "203.0.113.1:443", Refused),
        tcp(other, "[2001:db8::1]:443", Refused),
        tcp(other, "203.0.113.1:8080", TimedOut),
    ]
}

/// Seed Examples 2 and 3 (`policies/app-server.yaml` + `database.yaml`),
/// one L2 segment, every host on-link in 10.0.0.0/8 and fd00::/16: lb
/// 10.0.0.10 / fd00::10 (load-balancer), app 10.0.1.10 / fd00:1::10
/// (app-server), db 10.0.2.5 / fd00:2::5 (database), outsider 10.0.3.3 /
/// fd00:3::3 (no group, unfiltered).
pub struct AppLab {
    pub lab: Lab,
    pub lb: LabHost,
    pub app: LabHost,
    pub db: LabHost,
    pub outsider: LabHost,
}

pub fn app_lab(name: &str) -> AppLab {
    let lab = lab(name);
    let lb = host(&lab, "lb", &["10.0.0.10/8", "fd00::10/16"]);
    let app = host(&lab, "app", &["10.0.1.10/8", "fd00:1::10/16"]);
    let db = host(&lab, "db", &["10.0.2.5/8", "fd00:2::5/16"]);
    let outsider = host(&lab, "outsider", &["10.0.3.3/8", "fd00:3::3/16"]);
    AppLab { lab, lb, app, db, outsider }
}

/// What Examples 2 and 3's probes find listening: `db` apart, dropped to
/// see an allowed port refuse.
pub struct AppListeners {
    pub rest: Vec<Listener>,
    pub db: Vec<Listener>,
}

pub fn app_listeners(a: &AppLab) -> AppListeners {
    let mut rest = listen(&a.app, &["10.0.1.10:8080", "[fd00:1::10]:8080", "10.0.1.10:22"]);
    rest.extend(listen(&a.lb, &["10.0.0.10:443", "[fd00::10]:443"]));
    rest.extend(listen(&a.outsider, &["10.0.3.3:5000", "[fd00:3::3]:5000"]));
    let db = listen(&a.db, &["10.0.2.5:3306", "[fd00:2::5]:3306"]);
    AppListeners { rest, db }
}

/// lb, app and db each filtered with their group.
pub fn app_db_enforced(a: &AppLab) -> Vec<Probe<'_>> {
    let AppLab { lb, app, db, outsider, .. } = a;
    vec![
        // app-server inbound: 8080 from sg:load-balancer only (both families).
        tcp(lb, "10.0.1.10:8080", Connected),
        tcp(lb, "[fd00:1::10]:8080", Connected),
        tcp(outsider, "10.0.1.10:8080", TimedOut),
        tcp(outsider, "[fd00:1::10]:8080", TimedOut),
        tcp(lb, "10.0.1.10:22", TimedOut),
        // database inbound: 3306 from sg:app-server only; app-server
        // outbound 3306 to sg:database covers IPv6 too.
        tcp(app, "10.0.2.5:3306", Connected),
        tcp(app, "[fd00:2::5]:3306", Connected),
        tcp(outsider, "10.0.2.5:3306", TimedOut),
        tcp(outsider, "[fd00:2::5]:3306", TimedOut),
        tcp(lb, "10.0.2.5:3306", TimedOut),
        // database outbound: [] — it opens nothing.
        tcp(db, "10.0.1.10:8080", TimedOut),
        tcp(db, "[fd00:1::10]:8080", TimedOut),
        tcp(db, "10.0.3.3:5000", TimedOut),
        ping(db, "10.0.3.3", TimedOut),
        // app-server outbound all to 0.0.0.0/0: IPv4 only.
        tcp(app, "10.0.3.3:5000", Connected),
        ping(app, "10.0.3.3", Connected),
        tcp(app, "[fd00:3::3]:5000", TimedOut),
        // load-balancer inbound https from 0.0.0.0/0 (IPv4 only);
        // default outbound lets lb reach anything.
        tcp(outsider, "10.0.0.10:443", Connected),
        tcp(outsider, "[fd00::10]:443", TimedOut),
        tcp(lb, "10.0.3.3:5000", Connected),
        tcp(lb, "[fd00:3::3]:5000", Connected),
    ]
}

/// As [`app_db_enforced`], the database's listeners gone: its own RST reaches app.
pub fn app_db_down(a: &AppLab) -> Vec<Probe<'_>> {
    let AppLab { app, outsider, .. } = a;
    vec![
        tcp(app, "10.0.2.5:3306", Refused),
        tcp(app, "[fd00:2::5]:3306", Refused),
        tcp(outsider, "10.0.2.5:3306", TimedOut),
    ]
}
