//! The metrics, read by the tools users point at them (issue 15, item 7):
//! Debian's `promtool check metrics`, `prometheus-node-exporter`'s textfile
//! collector and a real `prometheus` server scraping a lab agent. Each tool
//! runs on loopback, on a port of its own and in a temporary directory, and
//! is killed when the test ends. `cargo xtask bootstrap` installs them; a
//! missing tool fails the test (never skips).
//!
//! Hosts (one L2 segment): srv 203.0.113.1 carries web-server (seed
//! Example 1); ssh 203.0.113.10 (the SSH rule's source); other 203.0.113.20.
mod common;

use std::{
    io::Write as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{agent::*, *};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

/// A lab with web-server on srv, some traffic counted, and an agent.
struct Counted {
    _lab_hosts: (LabHost, LabHost),
    srv: LabHost,
    sg: Sgctl,
    agent: Agent,
    _listeners: Vec<Listener>,
    _lab: Lab,
}

fn counted(name: &str) -> Counted {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let ssh = host(&lab, "ssh", &["203.0.113.10/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let listeners = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    expect_all(
        "traffic to count",
        vec![
            tcp(&ssh, "203.0.113.1:22", Connected),
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:22", TimedOut),
        ],
    );
    Counted { _lab_hosts: (ssh, other), srv, sg, agent, _listeners: listeners, _lab: lab }
}

/// A child process killed and reaped when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args…` (stdout and stderr into `log`); fails the test,
/// saying how to install it, when it is missing.
fn daemon(program: &'static str, args: &[String], log: &Path) -> Daemon {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e} (`cargo xtask bootstrap` installs it)"));
    Daemon(child)
}

/// A loopback port nothing listens on now (the tools take a port number).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("address").port()
}

/// GET `url` with an optional `Accept`; (content type, body).
fn get(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = ureq::get(url);
    if let Some(accept) = accept {
        req = req.header("Accept", accept);
    }
    let mut response = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (ct, response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

/// GET `url` until `ready` accepts the body, for at most `secs` seconds.
fn poll<T>(url: &str, secs: u64, log: &Path, mut ready: impl FnMut(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut r) = ureq::get(url).call() {
            last = r.body_mut().read_to_string().unwrap_or_default();
            if let Some(v) = ready(&last) {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{url}: not ready after {secs} s; last answer:\n{last}\nlog:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// `promtool check metrics` of `text`: exit 0 and nothing said (no
/// problem, not even a lint warning).
#[track_caller]
fn promtool_accepts(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool: {e} (`cargo xtask bootstrap` installs Debian's prometheus)"));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics of {what}: {}\n{said}\n{text}",
        out.status
    );
}

#[test]
fn promtool_accepts_the_textfile_and_the_endpoint_text() {
    let c = counted("promtool");
    let textfile = c.sg.ok(&["stats", "--format", "prometheus"]).stdout;
    promtool_accepts(&textfile, "stats --format prometheus");

    let url = format!("http://{}/metrics", c.agent.addr);
    let (ct, text) = get(&url, Some("text/plain;version=0.0.4"));
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct:?}");
    promtool_accepts(&text, "GET /metrics (Accept: text/plain)");
    let (ct, no_accept) = get(&url, None);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "no Accept: the 0.0.4 text, got {ct:?}");
    assert_eq!(samples(&no_accept), samples(&text));

    // What a Prometheus server asks for: OpenMetrics, the same samples.
    let (ct, om) = get(&url, Some(PROMETHEUS_ACCEPT));
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "content type {ct:?}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let om_file = c.sg.ok(&["stats", "--format", "openmetrics"]).stdout;
    let drop_info = |s: std::collections::BTreeMap<String, f64>| -> Vec<String> {
        s.into_keys().filter(|k| !k.starts_with("sgctl_build_info")).collect()
    };
    assert_eq!(drop_info(samples(&om)), drop_info(samples(&text)), "both formats carry the same samples");
    assert_eq!(samples(&om_file), samples(&om), "stats --format openmetrics is the endpoint's OpenMetrics");
}

#[test]
fn node_exporter_textfile_collector_reads_stats_format_prometheus() {
    let c = counted("nodeexp");
    let dir = TempDir::new("textfile");
    let textfile = c.sg.ok(&["stats", "--format", "prometheus"]).stdout;
    // As node_exporter's documentation says: write aside, then rename.
    let tmp = dir.write("sgctl.prom.tmp", &textfile);
    std::fs::rename(&tmp, dir.path().join("sgctl.prom")).expect("rename");

    let port = free_port();
    let log = dir.path().join("node-exporter.log");
    let _ne = daemon(
        "prometheus-node-exporter",
        &[
            "--collector.disable-defaults".into(),
            "--collector.textfile".into(),
            format!("--collector.textfile.directory={}", dir.path().display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &log,
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = poll(&url, 20, &log, |t| t.contains("node_textfile_scrape_error").then(|| t.to_owned()));
    let s = samples(&text);
    assert_eq!(s.get("node_textfile_scrape_error"), Some(&0.0), "node_exporter's verdict on the file:\n{text}");
    let stats = c.sg.stats();
    assert_eq!(
        sample_of(&s, "sgctl_rule_flows_total", &[("rule", "web-server/inbound/1"), ("netns", c.srv.netns())]),
        count(rule_stats(&stats, "web-server/inbound/1"), "flows"),
        "the sgctl sample node_exporter serves:\n{text}"
    );
    assert!(text.contains("sgctl_build_info{"), "{text}");
}

#[test]
fn a_prometheus_server_scrapes_the_agent_and_queries_a_counter() {
    let c = counted("promsrv");
    let dir = TempDir::new("prometheus");
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sgctl\n    \
             static_configs:\n      - targets: ['{}']\n",
            c.agent.addr
        ),
    );
    let port = free_port();
    let log = dir.path().join("prometheus.log");
    let _prom = daemon(
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &log,
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query =
        |q: &str| format!("{api}/query?query={}", q.replace('"', "%22").replace('{', "%7B").replace('}', "%7D"));

    // The target is up and its scrape had no error.
    poll(&format!("{api}/targets"), 30, &log, |body| {
        let v: Value = serde_json::from_str(body).ok()?;
        let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
        (t["health"] == "up").then_some(())
    });
    let targets: Value = serde_json::from_str(&get(&format!("{api}/targets"), None).1).expect("JSON");
    assert_eq!(targets["data"]["activeTargets"][0]["lastError"], "", "the scrape's error: {targets:#}");
    let stats = c.sg.stats();
    let want = count(rule_stats(&stats, "web-server/inbound/1"), "flows");
    let got =
        poll(&query(r#"sgctl_rule_flows_total{rule="web-server/inbound/1",interface="eth0"}"#), 30, &log, |body| {
            let v: Value = serde_json::from_str(body).ok()?;
            v["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()
        });
    assert_eq!(got as u64, want, "the counter through Prometheus' query API vs stats --json");
    assert!(want >= 2, "two HTTP connections were counted");
    let up = poll(&query("up"), 10, &log, |body| {
        let v: Value = serde_json::from_str(body).ok()?;
        v["data"]["result"].as_array()?.first()?["value"][1].as_str().map(str::to_owned)
    });
    assert_eq!(up, "1");
    let scraped = poll(&query("scrape_samples_scraped"), 10, &log, |body| {
        let v: Value = serde_json::from_str(body).ok()?;
        v["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()
    });
    let exposed = samples(&get(&format!("http://{}/metrics", c.agent.addr), None).1).len();
    assert_eq!(scraped as usize, exposed, "Prometheus took every sample the agent exposes");
}
