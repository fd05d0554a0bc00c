//! The metrics, read by the tools users point at them (issue 15, item 7):
//! Debian's `promtool check metrics`, `prometheus-node-exporter`'s textfile
//! collector and a real `prometheus` server scraping a lab agent. Each tool
//! runs on loopback, on a port of its own and in a temporary directory, and
//! is killed when the test ends. `cargo xtask bootstrap` installs them; a
//! missing tool fails the test (never skips).
//!
//! Hosts (one L2 segment): srv 203.0.113.1 carries web-server (seed
//! Example 1); ssh 203.0.113.10 (the SSH rule's source); other 203.0.113.20.
use std::{
    io::Write as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{agent::*, *};
use serde_json::Value;

use crate::common;

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

    let url = format!("http://{}/metrics", c.agent.addr());
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

/// A `prometheus` server scraping `agent` every second, on a loopback port
/// and in a directory of its own; killed when dropped.
struct PromServer {
    _daemon: Daemon,
    /// `http://127.0.0.1:PORT/api/v1`
    api: String,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl PromServer {
    /// Starts it and waits until its scrape of the agent is up.
    fn scraping(agent: &Agent) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sgctl\n    \
                 static_configs:\n      - targets: ['{}']\n",
                agent.addr()
            ),
        );
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let daemon = daemon(
            "prometheus",
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            &log,
        );
        let api = format!("http://127.0.0.1:{port}/api/v1");
        poll(&format!("{api}/targets"), 30, &log, |body| {
            let v: Value = serde_json::from_str(body).ok()?;
            let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
            (t["health"] == "up").then_some(())
        });
        Self { _daemon: daemon, api, log, _dir: dir }
    }

    /// The instant query's answer (`status`, `data`), whatever its status.
    fn query(&self, q: &str) -> Value {
        let url = format!("{}/query", self.api);
        let mut response = match ureq::get(&url).query("query", q).call() {
            Ok(r) => r,
            // A bad query is HTTP 400 with the error in the JSON body.
            Err(ureq::Error::StatusCode(code)) => return serde_json::json!({"status": "error", "http": code}),
            Err(e) => panic!("GET {url}?query={q}: {e}"),
        };
        let body = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
    }

    /// Polls `q` until `ready` accepts its first result, for at most `secs`.
    fn poll<T>(&self, q: &str, secs: u64, mut ready: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let answer = self.query(q);
            if let Some(v) = answer["data"]["result"].as_array().and_then(|r| r.first()).and_then(&mut ready) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{q}: not ready after {secs} s: {answer}\nlog:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn a_prometheus_server_scrapes_the_agent_and_queries_a_counter() {
    let c = counted("promsrv");
    let prom = PromServer::scraping(&c.agent);
    let api = &prom.api;
    let targets: Value = serde_json::from_str(&get(&format!("{api}/targets"), None).1).expect("JSON");
    assert_eq!(targets["data"]["activeTargets"][0]["lastError"], "", "the scrape's error: {targets:#}");
    let stats = c.sg.stats();
    let want = count(rule_stats(&stats, "web-server/inbound/1"), "flows");
    let value = |v: &Value| v["value"][1].as_str()?.parse::<f64>().ok();
    let got = prom.poll(r#"sgctl_rule_flows_total{rule="web-server/inbound/1",interface="eth0"}"#, 30, value);
    assert_eq!(got as u64, want, "the counter through Prometheus' query API vs stats --json");
    assert!(want >= 2, "two HTTP connections were counted");
    let up = prom.poll("up", 10, |v| v["value"][1].as_str().map(str::to_owned));
    assert_eq!(up, "1");
    let scraped = prom.poll("scrape_samples_scraped", 10, value);
    let exposed = samples(&get(&format!("http://{}/metrics", c.agent.addr()), None).1).len();
    assert_eq!(scraped as usize, exposed, "Prometheus took every sample the agent exposes");
}

/// `packaging/grafana/sgctl.json`, the dashboard the package ships.
fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/sgctl.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    all
}

/// The `sgctl_…` metric names a PromQL expression (or a Grafana variable
/// query) names.
fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sgctl_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// A panel's query as Prometheus gets it from Grafana with every variable
/// at "All" (`.*`), over a 1 s scrape interval.
fn as_grafana_sends_it(expr: &str) -> String {
    let mut q = expr.replace("$__rate_interval", "5s").replace("$__range", "1m");
    for var in ["$instance", "$netns", "$interface", "$group"] {
        q = q.replace(var, ".*");
    }
    assert!(!q.contains('$'), "a variable the test does not know in {expr}");
    q
}

/// The dashboard the package ships, held to the agent on this tree: every
/// metric its queries and variables name is in the agent's exposition (both
/// formats), every metric the agent serves has a panel, and a real
/// Prometheus server scraping a lab agent parses and answers every query
/// with data.
#[test]
fn the_grafana_dashboard_queries_what_the_agent_serves() {
    let d = dashboard();
    // Provisioning-ready: no numeric id, a fixed uid, the data source a variable.
    assert!(d["id"].is_null(), "a provisioned dashboard has id null");
    assert_eq!(d["uid"], "sgctl");
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel id {} twice", p["id"]);
        assert!(p["gridPos"]["w"].as_u64().is_some(), "panel {} has a place: {p}", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {} uses the chosen data source", p["title"]);
        for t in p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"])) {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{t}");
            exprs.push(t["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {t}")).to_owned());
        }
    }
    let variables: Vec<String> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["query"]["query"].as_str().expect("variable query").to_owned())
        .collect();
    assert!(exprs.len() >= 10 && variables.len() >= 4, "{} queries, {} variables", exprs.len(), variables.len());

    let c = counted("grafana");
    let mut served = std::collections::BTreeSet::new();
    for accept in [None, Some(PROMETHEUS_ACCEPT)] {
        let text = get(&format!("http://{}/metrics", c.agent.addr()), accept).1;
        served.extend(samples(&text).into_keys().filter_map(|k| Some(k.split(['{', ' ']).next()?.to_owned())));
    }
    let mut named = std::collections::BTreeSet::new();
    for q in exprs.iter().chain(&variables) {
        let names = metric_names(q);
        assert!(!names.is_empty(), "a query that names no sgctl metric: {q}");
        for name in &names {
            assert!(
                served.contains(name),
                "the dashboard's {q} names {name}, which the agent does not serve: {served:?}"
            );
        }
        named.extend(names);
    }
    let unshown: Vec<_> = served.iter().filter(|m| m.starts_with("sgctl_") && !named.contains(*m)).collect();
    assert!(
        unshown.is_empty(),
        "the agent serves {unshown:?}, which no panel of packaging/grafana/sgctl.json shows: add a panel"
    );

    let prom = PromServer::scraping(&c.agent);
    // Enough samples for rate() over 5 s.
    prom.poll("count_over_time(sgctl_policy_generation[10s])", 30, |v| {
        (v["value"][1].as_str()?.parse::<f64>().ok()? >= 4.0).then_some(())
    });
    for expr in &exprs {
        let q = as_grafana_sends_it(expr);
        let answer = prom.query(&q);
        assert_eq!(answer["status"], "success", "Prometheus refused the dashboard's {q}: {answer}");
        let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(results > 0, "the dashboard's {q} finds no data on a scraped lab agent: {answer}");
    }
    // `label_values(SELECTOR, LABEL)`, as Grafana asks Prometheus for it.
    for v in &variables {
        let inner = v.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).expect("label_values(…)");
        let (selector, label) = inner.rsplit_once(',').expect("selector, label");
        let q = as_grafana_sends_it(&format!("group by ({}) ({selector})", label.trim()));
        let answer = prom.query(&q);
        assert_eq!(answer["status"], "success", "variable {v}: {answer}");
        assert!(
            answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
            "variable {v} finds nothing: {answer}"
        );
    }
}
