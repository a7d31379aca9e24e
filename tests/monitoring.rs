//! The operator kit in `deploy/monitoring/`, proven with the real tools:
//!
//! - `promtool check rules` on the rules file, and `promtool test rules` on
//!   its unit tests, which must cover every alert both ways (fires on bad
//!   series, silent on healthy ones);
//! - the generated PrometheusRule holds exactly the rules file's groups;
//! - every alert has a runbook in docs/operations.md, and every series a
//!   rule or a dashboard panel reads is documented there;
//! - `promtool check metrics` on a live `/metrics` scrape of a real tollgate;
//! - a real Prometheus (Debian's `prometheus`, loopback, a temporary
//!   directory) scrapes a real tollgate on Redis with the rules loaded while
//!   traffic of every outcome goes through; then every rule evaluates without
//!   error, and every recording rule and every dashboard query returns data.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package, which
//! `scripts/test` installs when missing.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key, revoke};
use common::http::Http;
use common::redis_server::RedisServer;
use common::tollgate::{memory_store, redis_store, Parts, Tollgate};
use common::upstream::Upstream;
use http::Method;
use serde::Deserialize;
use serde_json::{json, Value};

const MONITORING: &str = "deploy/monitoring";
const RULES: &str = "deploy/monitoring/tollgate-rules.yml";
const RULE_TESTS: &str = "deploy/monitoring/tollgate-rules.test.yml";
const PROMETHEUS_RULE: &str = "deploy/monitoring/prometheus-rule.yaml";
const DASHBOARD: &str = "deploy/monitoring/grafana-dashboard.json";
const OPERATIONS: &str = "docs/operations.md";
const READ: &str = "read:charge_points";
const CP: &str = "/api/v1/charge_points";
/// How long Prometheus may take to start, scrape and evaluate (a loaded machine).
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(120);
/// Attempts at a free port for Prometheus.
const PORT_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    let text = read(relative);
    Value::deserialize(serde_norway::Deserializer::from_str(&text))
        .unwrap_or_else(|e| panic!("{relative}: not valid YAML: {e}"))
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not a list in {value:#}"))
}

/// Every rule of the rules file, all groups.
fn rules() -> Vec<Value> {
    let file = yaml(RULES);
    array(&file["groups"], "groups")
        .iter()
        .flat_map(|g| array(&g["rules"], "rules").clone())
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

fn record_names() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect()
}

/// Every `expr` of every target of every panel (rows' panels included).
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let mut queries = Vec::new();
    let mut pending: Vec<&Value> = array(&dashboard["panels"], "panels").iter().collect();
    while let Some(panel) = pending.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            pending.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            let title = panel["title"].as_str().unwrap_or("untitled");
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }
    queries
}

/// A dashboard query as Grafana sends it with the "All" job selected.
fn as_grafana_sends_it(expr: &str) -> String {
    let expr = expr.replace("$__rate_interval", "1m").replace("$job", ".*");
    assert!(
        !expr.contains('$'),
        "a dashboard variable this test does not know: {expr}"
    );
    expr
}

/// Names of the metrics an expression reads: `tollgate_*` and `kube_*`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if (name.starts_with("tollgate_") || name.starts_with("kube_")) && !name.contains(':') {
                names.insert(name.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names the "Metrics" table of docs/operations.md documents.
fn documented_metrics() -> BTreeSet<String> {
    read(OPERATIONS)
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(n, _)| n))
        .filter(|n| n.starts_with("tollgate_"))
        .map(str::to_owned)
        .collect()
}

/// A histogram's series names map to the documented histogram.
fn documented_name(name: &str, documented: &BTreeSet<String>) -> bool {
    documented.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| documented.contains(base))
        })
}

/// The labels that tell one deployment, Deployment or client from another.
const IDENTITY: [&str; 4] = ["namespace", "job", "deployment", "client"];

fn identity(label: impl Fn(&str) -> Option<String>) -> Vec<Option<String>> {
    IDENTITY.iter().map(|l| label(l)).collect()
}

/// The value of label `name` in a series like `m{a="x",name="y"}`.
fn label(series: &str, name: &str) -> Option<String> {
    let labels = series.split_once('{')?.1;
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_end_matches('}').trim_matches('"').to_owned())
    })
}

#[test]
fn series_labels_are_read() {
    let s = r#"m{namespace="shop",job="bad",le="+Inf"}"#;
    assert_eq!(label(s, "job").as_deref(), Some("bad"));
    assert_eq!(label(s, "le").as_deref(), Some("+Inf"));
    assert_eq!(label(s, "client"), None);
    assert_eq!(label("m", "job"), None);
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

/// Runs a tool of Debian's `prometheus` package; panics with how to get it.
fn tool(name: &str) -> Command {
    if let Err(e) = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        panic!(
            "cannot run `{name}` ({e}): install Debian's prometheus package \
             (`apt-get install --no-install-recommends prometheus`; scripts/test does)"
        );
    }
    Command::new(name)
}

fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> Output {
    let mut child = tool("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    child.wait_with_output().expect("promtool output")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn rules_pass_promtool_check() {
    let out = promtool(
        &["check", "rules", "tollgate-rules.yml"],
        &repo_path(MONITORING),
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let n = rules().len();
    assert!(n > 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {n} rules found")),
        "{}",
        show(&out)
    );
}

#[test]
fn every_alert_has_unit_tests_both_ways_and_they_pass() {
    let tests = yaml(RULE_TESTS);
    assert_eq!(tests["rule_files"], json!(["tollgate-rules.yml"]));
    let alerts = alert_names();
    assert!(!alerts.is_empty());
    let mut tested = BTreeSet::new();
    for alert in &alerts {
        // A test group where the alert fires on some series while other,
        // healthy series (another namespace / job / deployment / client)
        // stand beside them: exp_alerts lists exactly what fires at that
        // time, so an alert on the healthy series fails `promtool test`.
        let proven = array(&tests["tests"], "tests").iter().any(|group| {
            let cases = array(&group["alert_rule_test"], "alert_rule_test");
            let firing: BTreeSet<Vec<Option<String>>> = cases
                .iter()
                .filter(|c| c["alertname"] == alert.as_str())
                .flat_map(|c| array(&c["exp_alerts"], "exp_alerts").iter())
                .map(|a| identity(|l| a["exp_labels"][l].as_str().map(str::to_owned)))
                .collect();
            let series: BTreeSet<Vec<Option<String>>> =
                array(&group["input_series"], "input_series")
                    .iter()
                    .map(|s| {
                        let s = s["series"].as_str().expect("series");
                        identity(|l| label(s, l))
                    })
                    .collect();
            !firing.is_empty() && series.iter().any(|id| !firing.contains(id))
        });
        assert!(
            proven,
            "no promtool test where {alert} fires on bad series beside healthy ones"
        );
        tested.insert(alert.clone());
    }
    for group in array(&tests["tests"], "tests") {
        for case in array(&group["alert_rule_test"], "alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname");
            assert!(alerts.contains(name), "a test of {name}, which is no alert");
        }
    }
    assert_eq!(tested, alerts);

    let out = promtool(
        &["test", "rules", "tollgate-rules.test.yml"],
        &repo_path(MONITORING),
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn prometheus_rule_holds_the_rules_file() {
    let rule = yaml(PROMETHEUS_RULE);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"],
        yaml(RULES)["groups"],
        "{PROMETHEUS_RULE} differs from {RULES}: run deploy/monitoring/generate.sh"
    );
}

#[test]
fn every_alert_has_a_runbook() {
    let docs = read(OPERATIONS);
    let monitoring = docs
        .split_once("\n## Monitoring\n")
        .map(|(_, rest)| rest)
        .expect("docs/operations.md has a \"## Monitoring\" section");
    let monitoring = monitoring
        .split_once("\n## ")
        .map_or(monitoring, |(section, _)| section);
    for rule in rules().iter().filter(|r| r["alert"].is_string()) {
        let alert = rule["alert"].as_str().expect("alert");
        assert!(
            monitoring.contains(&format!("\n#### {alert}\n")),
            "no runbook heading \"#### {alert}\" in the Monitoring section"
        );
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("docs/operations.md#{}", alert.to_lowercase()),
            "{alert}: runbook_url"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{alert}: summary"
        );
        assert!(rule["labels"]["severity"].is_string(), "{alert}: severity");
    }
}

#[test]
fn every_series_read_is_documented_and_every_rule_name_exists() {
    let documented = documented_metrics();
    assert!(
        documented.contains("tollgate_requests_total"),
        "the Metrics table of docs/operations.md: {documented:?}"
    );
    let docs = read(OPERATIONS);
    let records = record_names();
    let mut exprs: Vec<(String, String)> = rules()
        .iter()
        .map(|r| {
            let name = r["record"].as_str().or(r["alert"].as_str()).expect("name");
            (
                name.to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect();
    exprs.extend(dashboard_queries());
    for (what, expr) in &exprs {
        for name in metric_names(expr) {
            if name.starts_with("kube_") {
                assert!(
                    docs.contains(&name),
                    "{what}: {name} not named in {OPERATIONS}"
                );
            } else {
                assert!(
                    documented_name(&name, &documented),
                    "{what}: {name} is not in the Metrics table of {OPERATIONS}"
                );
            }
        }
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("tollgate:") {
                assert!(records.contains(word), "{what}: no recording rule {word}");
            }
        }
    }
    // The dashboard reads the rules; every rule is documented by name.
    for record in &records {
        assert!(
            docs.contains(record.as_str()),
            "{record} not in {OPERATIONS}"
        );
    }
}

#[test]
fn dashboard_configmap_is_generated_from_the_json_with_the_sidecar_label() {
    let k = yaml("deploy/monitoring/kustomization.yaml");
    let generators = array(&k["configMapGenerator"], "configMapGenerator");
    let g = generators
        .iter()
        .find(|g| {
            g["files"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("grafana-dashboard.json")))
        })
        .expect("a configMapGenerator from grafana-dashboard.json");
    assert_eq!(g["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(g["options"]["disableNameSuffixHash"], true);
    assert!(array(&k["resources"], "resources").contains(&json!("prometheus-rule.yaml")));
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "tollgate");
    assert!(dashboard_queries().len() >= 10, "the dashboard's panels");
}

// ---------------------------------------------------------------------------
// A live tollgate
// ---------------------------------------------------------------------------

/// The test config with per-client metrics on, a failure budget of two
/// per minute, and the upstream timeout short enough for `/slow/1500`.
fn tollgate_config(upstream: &str, store: &str) -> String {
    Parts {
        upstream: format!("url = \"{upstream}\"\ntimeout_ms = 500"),
        auth: "bcrypt_cost = 4\nmax_failures_per_minute = 2",
        extra: "\n[metrics]\nper_client = true",
        ..Parts::new(upstream, store)
    }
    .text()
}

/// The OpenMetrics exposition in the Prometheus text format that `promtool
/// check metrics` reads: an OpenMetrics counter family `x` has samples
/// `x_total`, while the text format names the family after its samples.
/// Only the `# HELP` / `# TYPE` names of counters and the `# EOF` line change.
fn openmetrics_to_text(exposition: &str) -> String {
    let counters: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (kind == "counter").then_some(name)
        })
        .collect();
    let mut out = String::new();
    for line in exposition.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn openmetrics_conversion_renames_counter_families_only() {
    let text = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 1\n\
                # HELP a_in_flight In flight.\n# TYPE a_in_flight gauge\na_in_flight 0\n# EOF\n";
    assert_eq!(
        openmetrics_to_text(text),
        "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total 1\n\
         # HELP a_in_flight In flight.\n# TYPE a_in_flight gauge\na_in_flight 0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_check_metrics_and_are_documented() {
    let upstream = Upstream::start().await;
    let tg = Tollgate::start(&tollgate_config(&upstream.url(), &memory_store()));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, key) = create_key(&http, &tg, "acme", &[READ]).await;
    for _ in 0..2 {
        assert_eq!(http.get_key(&tg.url(CP), &key).await.status, 200);
    }
    assert_eq!(http.get(&tg.url(CP), &[]).await.status, 401);
    let scrape = http.get(&tg.admin_url("/metrics"), &[]).await;
    assert_eq!(scrape.status, 200);
    let exposition = String::from_utf8_lossy(&scrape.body).into_owned();
    assert!(
        exposition.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF"
    );
    for family in ["tollgate_client_requests", "tollgate_auth_cache"] {
        assert!(
            exposition.contains(&format!("# TYPE {family} counter")),
            "{family} in\n{exposition}"
        );
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let out = promtool(
        &["check", "metrics"],
        dir.path(),
        Some(&openmetrics_to_text(&exposition)),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics has remarks: {}",
        show(&out)
    );
    // The linter does catch what it is here for.
    let out = promtool(
        &["check", "metrics"],
        dir.path(),
        Some("# TYPE tollgate_undocumented counter\ntollgate_undocumented 1\n"),
    );
    assert!(!out.status.success(), "{}", show(&out));

    // Every series of the exposition is in the Metrics table.
    let documented = documented_metrics();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name = line
            .split(['{', ' '])
            .next()
            .expect("a sample line has a name");
        assert!(
            documented_name(name, &documented),
            "{name} is exported but not in the Metrics table of {OPERATIONS}"
        );
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A `prometheus` server on a free loopback port, in a temporary directory,
/// scraping one target every second with the rules file loaded. Killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let rules = repo_path(RULES);
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display().to_string()
            ),
        )
        .expect("write prometheus.yml");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let mut child = tool("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let deadline = Instant::now() + PROMETHEUS_DEADLINE;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("exited {status}:\n{}", Self::log_of(dir.path()));
                    break;
                }
                if matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
                    return Prometheus { child, addr, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "prometheus not ready after {PROMETHEUS_DEADLINE:?}:\n{}",
                        Self::log_of(dir.path())
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("prometheus did not start after {PORT_ATTEMPTS} attempts: {last}");
    }

    fn log_of(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        Self::log_of(self.dir.path())
    }

    /// `GET /api/v1/...`, the `data` of a successful answer.
    fn api(&self, path_and_query: &str) -> Value {
        let (status, body) = http_get(self.addr, path_and_query)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}\n{}", self.log()));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {status} not JSON ({e}): {body}"));
        assert_eq!(
            v["status"], "success",
            "GET {path_and_query}: {status} {body}"
        );
        v["data"].clone()
    }

    /// The instant vector `query` returns now.
    fn query(&self, query: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(query)));
        assert_eq!(data["resultType"], "vector", "{query}");
        array(&data["result"], "result").clone()
    }

    /// Polls `query` until `good` accepts its result; panics at the deadline.
    fn await_query(&self, query: &str, deadline: Instant, good: impl Fn(&[Value]) -> bool) {
        loop {
            let result = self.query(query);
            if good(&result) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{query}: no acceptable result by the deadline; last: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `GET` over HTTP/1.0 (so the answer is not chunked): `(status, body)`.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Some sample of an instant vector is a finite number.
fn has_finite(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// The keys one round of traffic uses.
struct Keys {
    fast: String,
    tiny: String,
    plain: String,
    /// Revoked: well-formed and unknown, so each costs a failure.
    burned: Vec<String>,
}

/// One request of every outcome (the limited clients are already at their
/// limits from round 1 on), then failed authentications past the budget.
async fn round(http: &Http, tg: &Tollgate, redis: &RedisServer, keys: &Keys, first: bool) {
    let get = |path: &str, key: &str| {
        let (url, key) = (tg.url(path), key.to_owned());
        let http = http.clone();
        async move { http.get_key(&url, &key).await.status.as_u16() }
    };
    assert_eq!(get(CP, &keys.plain).await, 200); // forwarded
    if first {
        assert_eq!(get(CP, &keys.fast).await, 200);
        assert_eq!(get(CP, &keys.tiny).await, 200);
    }
    assert_eq!(get(CP, &keys.fast).await, 429); // rate_limited
    assert_eq!(get(CP, &keys.tiny).await, 429); // quota_exceeded
    assert_eq!(http.get(&tg.url(CP), &[]).await.status, 401); // unauthorized
    let post = http
        .send(
            Method::POST,
            &tg.url(CP),
            &[("x-api-key", &keys.plain)],
            "{}",
        )
        .await;
    assert_eq!(post.status, 403); // forbidden
    assert_eq!(get("/slow/1500", &keys.plain).await, 504); // upstream_error
    assert_eq!(get("/api/v1/client/usage", &keys.plain).await, 200); // served
    assert_eq!(get("/a/%2F/b", &keys.plain).await, 400); // bad_request
    redis.pause();
    let down = get(CP, &keys.plain).await; // store_error
    redis.resume();
    assert_eq!(down, 503);
    // Failed authentications past max_failures_per_minute = 2: the last is
    // throttled (auth_throttled), whatever the earlier rounds left.
    let half = keys.burned.len() / 2;
    let burned = if first {
        &keys.burned[..half]
    } else {
        &keys.burned[half..]
    };
    let mut statuses = Vec::new();
    for key in burned {
        statuses.push(get(CP, key).await);
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_evaluates_every_rule_and_dashboard_query_on_live_data() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let store = redis_store(&redis.url(), 500);
    let tg = Tollgate::start(&tollgate_config(&upstream.url(), &store));
    let http = Http::default();
    create_client(&http, &tg, "fast", json!({"per_minute": 1})).await;
    create_client(&http, &tg, "tiny", json!({"monthly": 1})).await;
    create_client(&http, &tg, "plain", json!({})).await;
    let (_, fast) = create_key(&http, &tg, "fast", &[READ]).await;
    let (_, tiny) = create_key(&http, &tg, "tiny", &[READ]).await;
    let (_, plain) = create_key(&http, &tg, "plain", &[READ]).await;
    let mut burned = Vec::new();
    for _ in 0..6 {
        let (id, secret) = create_key(&http, &tg, "plain", &[READ]).await;
        revoke(&http, &tg, &id).await;
        burned.push(secret);
    }
    let keys = Keys {
        fast,
        tiny,
        plain,
        burned,
    };

    let prometheus = Prometheus::start(tg.admin);
    let deadline = Instant::now() + PROMETHEUS_DEADLINE;
    // Scraping works before any traffic, so that every rate below sees the
    // counters rise.
    prometheus.await_query("up{job=\"tollgate\"} == 1", deadline, |r| !r.is_empty());

    round(&http, &tg, &redis, &keys, true).await;
    // Every outcome's series is in Prometheus before the second round.
    // forwarded, served, bad_request, unauthorized, forbidden, rate_limited,
    // quota_exceeded, upstream_error, store_error, auth_throttled.
    let outcomes = "10";
    prometheus.await_query(
        "count(tollgate_requests_total{job=\"tollgate\"})",
        deadline,
        |r| r.iter().any(|s| s["value"][1] == outcomes),
    );
    round(&http, &tg, &redis, &keys, false).await;
    prometheus.await_query(
        "increase(tollgate_requests_total{job=\"tollgate\",outcome=\"auth_throttled\"}[1m]) > 0",
        deadline,
        |r| !r.is_empty(),
    );

    // Every recording rule returns data with a number in it.
    for record in record_names() {
        prometheus.await_query(&record, deadline, has_finite);
    }
    // So does every dashboard query, as Grafana sends it with job = All.
    for (panel, expr) in dashboard_queries() {
        let query = as_grafana_sends_it(&expr);
        assert!(!query.is_empty(), "panel {panel:?}");
        prometheus.await_query(&query, deadline, has_finite);
    }

    // Prometheus loaded every rule of the file and evaluates each without error.
    let groups = prometheus.api("/api/v1/rules")["groups"].clone();
    let loaded: Vec<&Value> = array(&groups, "groups")
        .iter()
        .flat_map(|g| array(&g["rules"], "rules").iter())
        .collect();
    assert_eq!(loaded.len(), rules().len(), "rules loaded");
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule:#}");
    }
    // The client at its quota fires the one alert without `for:` that this
    // traffic should fire, with the client's own label; no other alert fires.
    prometheus.await_query(
        "ALERTS{alertname=\"TollgateClientQuotaExhausted\",alertstate=\"firing\",client=\"tiny\"}",
        deadline,
        |r| r.len() == 1,
    );
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}");
    assert_eq!(firing.len(), 1, "{firing:?}");
}
