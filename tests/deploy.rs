//! The deployment files, checked against each other and against the binary.
//!
//! Every YAML file under `deploy/kubernetes/` is parsed (multi-document files
//! included), with the `tollgate.toml` that the base ConfigMap carries, the
//! one the example overlay puts in its place, and the `Dockerfile`. The
//! checks follow references the way Kubernetes does (a Service selects pods
//! by label and names a port; a volume names a ConfigMap; an env var names a
//! Secret and key), so a name, port, label or path that disagrees fails here
//! rather than in a cluster. Then the real binary runs: `tollgate check` on
//! both configs, and `tollgate serve` on the base config moved to port 0, to
//! see the probe paths answer 200 and SIGTERM end the process in time.
//!
//! Validating the manifests against the Kubernetes API schemas is
//! `deploy/validate.sh`'s job, not this file's.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tollgate::config::DEFAULT_DRAIN_TIMEOUT_MS;
use tollgate::config::{CONFIG_ENV, DEFAULT_TOKEN_ENV};

mod common;

use common::tollgate::{command, Tollgate};

const KUBERNETES: &str = "deploy/kubernetes";
const BASE: &str = "deploy/kubernetes/base";
const OVERLAY: &str = "deploy/kubernetes/overlays/example";
const REDIS_COMPONENT: &str = "deploy/kubernetes/components/redis";
const MONITORING_COMPONENT: &str = "deploy/kubernetes/components/monitoring";
const MONITORING_OVERLAY: &str = "deploy/kubernetes/overlays/example-monitoring";
const MANAGED_REDIS: &str = "deploy/kubernetes/overlays/managed-redis";
/// The sidecar's container name in the pod.
const TOLLGATE: &str = "tollgate";
/// Port names the sidecar's container declares.
const PUBLIC_PORT_NAME: &str = "http";
const ADMIN_PORT_NAME: &str = "admin";
/// The example overlay's replica count.
const OVERLAY_REPLICAS: u64 = 2;
/// What the base Secret's example value must say so that nobody takes it
/// for a real token.
const EXAMPLE_MARK: &str = "REPLACE-ME";

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML stream, empty ones (a trailing `---`) left out.
fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_norway::Error> {
    let mut docs = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        match Value::deserialize(document)? {
            Value::Null => {}
            value => docs.push(value),
        }
    }
    Ok(docs)
}

/// `*.yaml` / `*.yml` files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One document of a manifest file.
struct Doc {
    file: PathBuf,
    value: Value,
}

/// The documents of every YAML file under some directories.
struct Manifests {
    docs: Vec<Doc>,
}

impl Manifests {
    fn load(dirs: &[&str]) -> Manifests {
        let mut docs = Vec::new();
        for dir in dirs {
            for file in yaml_files(&repo_path(dir)) {
                let values = yaml_documents(&read(&file))
                    .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()));
                assert!(!values.is_empty(), "{}: no document", file.display());
                docs.extend(values.into_iter().map(|value| Doc {
                    file: file.clone(),
                    value,
                }));
            }
        }
        Manifests { docs }
    }

    fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let kind = kind.to_owned();
        self.docs
            .iter()
            .map(|d| &d.value)
            .filter(move |v| v["kind"] == kind.as_str())
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .find(|v| v["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name:?}"))
    }

    /// The one Kustomization among the documents.
    fn kustomization(&self) -> &Value {
        let found: Vec<&Value> = self.of_kind("Kustomization").collect();
        assert_eq!(found.len(), 1, "Kustomizations");
        found[0]
    }

    /// The Deployment whose pod runs the tollgate sidecar (exactly one).
    fn sidecar_deployment(&self) -> &Value {
        let found: Vec<&Value> = self
            .of_kind("Deployment")
            .filter(|d| containers(d).any(|c| c["name"] == TOLLGATE))
            .collect();
        assert_eq!(found.len(), 1, "Deployments with a {TOLLGATE:?} container");
        found[0]
    }
}

// ---------------------------------------------------------------------------
// Reading Kubernetes objects
// ---------------------------------------------------------------------------

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}: missing or not a string in {value:#}"))
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn containers(deployment: &Value) -> impl Iterator<Item = &Value> {
    pod_spec(deployment)["containers"]
        .as_array()
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    containers(deployment)
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name:?}"))
}

fn pod_labels(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["metadata"]["labels"]
}

/// A non-empty label selector (a `matchLabels` block or a Service's plain
/// map) that `labels` satisfies.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.get("matchLabels").unwrap_or(selector);
    match selector.as_object() {
        Some(wanted) if !wanted.is_empty() => wanted.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

/// `(name, containerPort)` of every port a container declares.
fn declared_ports(container: &Value) -> Vec<(String, u16)> {
    container["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let number = p["containerPort"].as_u64().expect("containerPort");
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    (name, u16::try_from(number).expect("port number"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container port a probe, Service or NetworkPolicy names, by name or
/// number; `None` when the container declares no such port.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    let ports = declared_ports(container);
    match port {
        Value::String(name) => ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
        Value::Number(n) => {
            let n = u16::try_from(n.as_u64()?).ok()?;
            ports.iter().any(|(_, p)| *p == n).then_some(n)
        }
        _ => None,
    }
}

/// The port number of the declared port called `name`.
fn named_port(container: &Value, name: &str) -> u16 {
    resolve_port(container, &Value::from(name))
        .unwrap_or_else(|| panic!("container {} declares no port {name:?}", container["name"]))
}

/// `env` entry `name` of a container.
fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The path given to `--config` in the container's args (or command).
fn config_arg(container: &Value) -> String {
    let args: Vec<&str> = ["command", "args"]
        .iter()
        .filter_map(|k| container[*k].as_array())
        .flatten()
        .map(|a| a.as_str().expect("args are strings"))
        .collect();
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--config") {
            Some("") => args.get(i + 1).map(|s| s.to_string()),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        })
        .unwrap_or_else(|| panic!("no --config in {args:?}"))
}

/// The effective value of a security setting: the container's, else the pod's.
fn security<'a>(deployment: &'a Value, container: &'a Value, pointer: &str) -> Option<&'a Value> {
    container["securityContext"]
        .pointer(pointer)
        .or_else(|| pod_spec(deployment)["securityContext"].pointer(pointer))
}

// ---------------------------------------------------------------------------
// The sidecar: its Deployment, container, config and ConfigMap
// ---------------------------------------------------------------------------

/// What the base's sidecar Deployment resolves to.
struct Sidecar<'a> {
    deployment: &'a Value,
    tollgate: &'a Value,
    /// The `--config` path.
    config_path: String,
    /// The volume mount the config file is read from.
    mount: &'a Value,
    config_map: &'a Value,
    /// The ConfigMap key holding the file.
    config_key: String,
    /// The file's text.
    config_text: &'a str,
}

impl<'a> Sidecar<'a> {
    fn resolve(m: &'a Manifests) -> Sidecar<'a> {
        let deployment = m.sidecar_deployment();
        let tollgate = container(deployment, TOLLGATE);
        let config_path = config_arg(tollgate);
        let (dir, file) = config_path
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("--config {config_path:?} is not an absolute path"));
        let mount = tollgate["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|vm| vm["mountPath"] == dir)
            .unwrap_or_else(|| panic!("no volume mounted at {dir:?}, where --config points"));
        let volume_name = text(mount, "/name");
        let volume = pod_spec(deployment)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == volume_name)
            .unwrap_or_else(|| panic!("no volume {volume_name:?}"));
        let config_map = m.named("ConfigMap", text(volume, "/configMap/name"));
        let config_text = config_map["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap has no key {file:?}"));
        Sidecar {
            deployment,
            tollgate,
            config_path: config_path.clone(),
            mount,
            config_map,
            config_key: file.to_owned(),
            config_text,
        }
    }
}

fn toml_table(text: &str, what: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("{what}: not valid TOML: {e}"))
}

fn toml_str<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    table.get(section)?.get(key)?.as_str()
}

fn listen(table: &toml::Table, section: &str) -> SocketAddr {
    let value = toml_str(table, section, "listen")
        .unwrap_or_else(|| panic!("{section}.listen is not set: give it explicitly"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("{section}.listen {value:?}: {e}"))
}

/// `http://host:port/...` → `(host, port)`.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url:?} names no port"));
    (host.to_owned(), port.parse().expect("port number"))
}

fn overlay_config_text() -> String {
    read(&repo_path(&format!("{OVERLAY}/tollgate.toml")))
}

// ---------------------------------------------------------------------------
// The Dockerfile
// ---------------------------------------------------------------------------

/// The instructions of the Dockerfile's last (runtime) stage, continuation
/// lines joined: `(INSTRUCTION, arguments)`.
fn runtime_stage() -> Vec<(String, String)> {
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut current = String::new();
    for line in read(&repo_path("Dockerfile")).lines() {
        let line = line.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((current.as_str(), ""));
                instructions.push((op.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    instructions.split_off(last_from)
}

fn dockerfile_arg(stage: &[(String, String)], op: &str) -> String {
    let found: Vec<&String> = stage
        .iter()
        .filter(|(o, _)| o == op)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(found.len(), 1, "{op} instructions in the runtime stage");
    found[0].clone()
}

/// A JSON-array (exec form) instruction.
fn dockerfile_exec(stage: &[(String, String)], op: &str) -> Vec<String> {
    let arg = dockerfile_arg(stage, op);
    serde_json::from_str(&arg).unwrap_or_else(|e| panic!("{op} {arg}: not exec form: {e}"))
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// The binary in an empty directory, with no `TOLLGATE_*` or `RUST_LOG`
/// from the caller's environment.
fn tollgate_command(dir: &Path) -> Command {
    let mut cmd = command();
    cmd.current_dir(dir);
    cmd
}

fn check(config_text: &str, what: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config_text).expect("write config");
    tollgate_command(dir.path())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{what}: run tollgate check: {e}"))
}

/// The config as a local run needs it: both listeners on 127.0.0.1:0 and a
/// text log at info level, where the "listening" line can be read.
fn for_local_run(config_text: &str) -> String {
    let mut table = toml_table(config_text, "config");
    for (section, key, value) in [
        ("server", "listen", "127.0.0.1:0"),
        ("admin", "listen", "127.0.0.1:0"),
        ("log", "format", "text"),
        ("log", "level", "info"),
    ] {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("[{section}] is not a table"))
            .insert(key.to_owned(), toml::Value::from(value));
    }
    toml::to_string(&table).expect("render TOML")
}

/// One `GET` over HTTP/1.1: `(status, body)`.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------
// The files themselves
// ---------------------------------------------------------------------------

#[test]
fn yaml_loader_reads_every_document() {
    let docs = yaml_documents("---\nkind: A\n---\nkind: B\n...\n---\n").expect("parse");
    let kinds: Vec<&str> = docs.iter().map(|d| text(d, "/kind")).collect();
    assert_eq!(kinds, ["A", "B"]);
    assert!(yaml_documents("kind: [unclosed\n").is_err());
}

#[test]
fn every_manifest_parses_with_a_current_api_version() {
    let m = Manifests::load(&[KUBERNETES]);
    let expected = |kind: &str| match kind {
        "ConfigMap" | "Secret" | "Service" | "Namespace" => "v1",
        "Deployment" => "apps/v1",
        "PodDisruptionBudget" => "policy/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        // cert-manager (overlays/tls).
        "Certificate" | "Issuer" => "cert-manager.io/v1",
        "Kustomization" => "kustomize.config.k8s.io/v1beta1",
        "Component" => "kustomize.config.k8s.io/v1alpha1",
        "ServiceMonitor" => "monitoring.coreos.com/v1",
        other => panic!("kind {other:?}: add its current apiVersion to this test"),
    };
    for doc in &m.docs {
        let kind = text(&doc.value, "/kind");
        assert_eq!(
            text(&doc.value, "/apiVersion"),
            expected(kind),
            "{}: {kind}",
            doc.file.display()
        );
        if !matches!(kind, "Kustomization" | "Component") {
            assert!(
                !text(&doc.value, "/metadata/name").is_empty(),
                "{}: {kind} without a name",
                doc.file.display()
            );
        }
    }
    for dir in [
        BASE,
        OVERLAY,
        REDIS_COMPONENT,
        MONITORING_COMPONENT,
        MONITORING_OVERLAY,
        MANAGED_REDIS,
    ] {
        assert!(
            repo_path(dir).join("kustomization.yaml").is_file(),
            "{dir}: no kustomization.yaml"
        );
    }
}

#[test]
fn kustomizations_reference_files_that_exist() {
    let m = Manifests::load(&[KUBERNETES]);
    let mut seen = 0;
    for doc in &m.docs {
        if !matches!(
            doc.value["kind"].as_str(),
            Some("Kustomization" | "Component")
        ) {
            continue;
        }
        seen += 1;
        let dir = doc.file.parent().expect("parent");
        let list = |key: &str| -> Vec<String> {
            doc.value[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().expect("a path").to_owned())
                .collect()
        };
        for entry in list("resources").into_iter().chain(list("components")) {
            let target = dir.join(&entry);
            assert!(
                target.is_file() || target.join("kustomization.yaml").is_file(),
                "{}: {entry} is neither a file nor a kustomization",
                doc.file.display()
            );
        }
        for generator in ["configMapGenerator", "secretGenerator"] {
            for g in doc.value[generator].as_array().into_iter().flatten() {
                for file in g["files"].as_array().into_iter().flatten() {
                    let file = file.as_str().expect("a file");
                    let path = file.split_once('=').map_or(file, |(_, p)| p);
                    assert!(
                        dir.join(path).is_file(),
                        "{}: {generator} file {path} missing",
                        doc.file.display()
                    );
                }
            }
        }
    }
    assert_eq!(
        seen, 8,
        "base, the redis and monitoring components, and the example, example-monitoring, managed-redis, grpc and tls overlays"
    );
}

// ---------------------------------------------------------------------------
// Ports, probes, paths
// ---------------------------------------------------------------------------

#[test]
fn service_reaches_the_tollgate_public_port_and_never_the_api() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let config = toml_table(s.config_text, "base tollgate.toml");
    let public = listen(&config, "server").port();
    let admin = listen(&config, "admin").port();
    let (_, upstream) = host_port(toml_str(&config, "upstream", "url").expect("upstream.url"));
    let labels = pod_labels(s.deployment);
    let others: Vec<&Value> = containers(s.deployment)
        .filter(|c| c["name"] != TOLLGATE)
        .collect();
    assert!(!others.is_empty(), "the pod has no API container");

    let services: Vec<&Value> = m
        .of_kind("Service")
        .filter(|svc| selects(&svc["spec"]["selector"], labels))
        .collect();
    assert!(
        !services.is_empty(),
        "no Service selects the sidecar's pods"
    );
    for svc in services {
        for port in svc["spec"]["ports"].as_array().expect("Service ports") {
            let target = &port["targetPort"];
            assert_eq!(
                resolve_port(s.tollgate, target),
                Some(public),
                "Service {} port {}: targetPort {target} must be tollgate's public listener",
                svc["metadata"]["name"],
                port["port"]
            );
            assert_ne!(Some(admin), resolve_port(s.tollgate, target));
            assert_ne!(
                target,
                &Value::from(upstream),
                "targetPort is the API's port"
            );
            for other in &others {
                assert_eq!(
                    resolve_port(other, target),
                    None,
                    "Service {} targetPort {target} is also a port of container {}",
                    svc["metadata"]["name"],
                    other["name"]
                );
            }
        }
    }

    // What reaches the pod from outside: tollgate's ports only.
    let policies: Vec<&Value> = m
        .of_kind("NetworkPolicy")
        .filter(|np| selects(&np["spec"]["podSelector"], labels))
        .collect();
    assert_eq!(
        policies.len(),
        1,
        "NetworkPolicies selecting the sidecar's pods"
    );
    let mut admitted = BTreeSet::new();
    for rule in policies[0]["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
    {
        let ports = rule["ports"]
            .as_array()
            .expect("every ingress rule names its ports");
        for p in ports {
            let port = resolve_port(s.tollgate, &p["port"])
                .unwrap_or_else(|| panic!("NetworkPolicy port {} is not tollgate's", p["port"]));
            admitted.insert(port);
        }
    }
    assert_eq!(admitted, BTreeSet::from([public, admin]));
    assert!(!admitted.contains(&upstream));
}

#[test]
fn container_ports_are_the_listen_ports_of_the_config() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let api_ports: Vec<u16> = containers(s.deployment)
        .filter(|c| c["name"] != TOLLGATE)
        .flat_map(|c| declared_ports(c).into_iter().map(|(_, p)| p))
        .collect();
    let http = named_port(s.tollgate, PUBLIC_PORT_NAME);
    let admin = named_port(s.tollgate, ADMIN_PORT_NAME);
    assert_eq!(
        declared_ports(s.tollgate).len(),
        2,
        "tollgate declares http and admin only"
    );

    for (what, text) in [
        ("base ConfigMap", s.config_text.to_owned()),
        ("overlay tollgate.toml", overlay_config_text()),
    ] {
        let config = toml_table(&text, what);
        let server = listen(&config, "server");
        let admin_listen = listen(&config, "admin");
        assert_eq!(
            server.port(),
            http,
            "{what}: server.listen vs containerPort {PUBLIC_PORT_NAME:?}"
        );
        assert_eq!(
            admin_listen.port(),
            admin,
            "{what}: admin.listen vs containerPort {ADMIN_PORT_NAME:?}"
        );
        // The kubelet probes the pod IP: loopback would fail every probe.
        assert!(
            server.ip().is_unspecified(),
            "{what}: server.listen {server}"
        );
        assert!(
            admin_listen.ip().is_unspecified(),
            "{what}: admin.listen {admin_listen}"
        );

        let url = toml_str(&config, "upstream", "url").expect("upstream.url");
        let (host, port) = host_port(url);
        assert!(
            host == "127.0.0.1" || host == "localhost",
            "{what}: the upstream is the API in the same pod, on loopback, not {url}"
        );
        assert!(
            api_ports.contains(&port),
            "{what}: {url} is no port of the API container {api_ports:?}"
        );
    }

    // The image documents the same two ports.
    let stage = runtime_stage();
    let exposed: BTreeSet<u16> = dockerfile_arg(&stage, "EXPOSE")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, BTreeSet::from([http, admin]));
}

#[test]
fn probes_ask_the_admin_port_for_healthz_and_readyz() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let config = toml_table(s.config_text, "base tollgate.toml");
    let admin = listen(&config, "admin").port();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &s.tollgate[probe]["httpGet"];
        assert_eq!(text(get, "/path"), path, "{probe}");
        assert_eq!(
            get["port"], ADMIN_PORT_NAME,
            "{probe}: by the admin port's name"
        );
        assert_eq!(
            resolve_port(s.tollgate, &get["port"]),
            Some(admin),
            "{probe}"
        );
        assert!(
            get.get("scheme").is_none_or(|v| v == "HTTP"),
            "{probe}: the admin listener speaks plain HTTP"
        );
        assert!(get.get("host").is_none(), "{probe}: must probe the pod IP");
    }
    // Prometheus' annotations name the same listener.
    let annotations = &s.deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], admin.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn config_is_mounted_where_tollgate_reads_it() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let mount_path = text(s.mount, "/mountPath");
    assert_eq!(s.config_path, format!("{mount_path}/{}", s.config_key));
    assert_eq!(s.mount["readOnly"], true, "the config mount is read-only");
    assert!(
        s.mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    assert_eq!(
        env_var(s.tollgate, CONFIG_ENV).map(|e| &e["value"]),
        Some(&Value::from(s.config_path.clone())),
        "${CONFIG_ENV} (used by the admin verbs through kubectl exec)"
    );
    assert_eq!(
        s.config_map["data"].as_object().map(|d| d.len()),
        Some(1),
        "the ConfigMap carries tollgate.toml only"
    );

    // The image's defaults read the same file.
    let stage = runtime_stage();
    assert_eq!(
        dockerfile_exec(&stage, "ENTRYPOINT"),
        ["/usr/local/bin/tollgate"]
    );
    let cmd = dockerfile_exec(&stage, "CMD");
    assert_eq!(cmd, ["serve", "--config", s.config_path.as_str()]);
    assert_eq!(
        dockerfile_arg(&stage, "ENV"),
        format!("{CONFIG_ENV}={}", s.config_path)
    );
    let user = dockerfile_arg(&stage, "USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("USER {user}: numeric, so runAsNonRoot can check it"));
    assert_ne!(uid, 0);
}

#[test]
fn admin_token_comes_from_the_secret() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let config = toml_table(s.config_text, "base tollgate.toml");
    let token_env = toml_str(&config, "admin", "token_env").unwrap_or(DEFAULT_TOKEN_ENV);
    let var = env_var(s.tollgate, token_env)
        .unwrap_or_else(|| panic!("tollgate has no ${token_env} ([admin] token_env)"));
    assert!(
        var.get("value").is_none(),
        "${token_env} must not be a literal"
    );
    let reference = &var["valueFrom"]["secretKeyRef"];
    let secret = m.named("Secret", text(reference, "/name"));
    let key = text(reference, "/key");
    let value = secret["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret has no stringData key {key:?}"));
    assert!(
        value.contains(EXAMPLE_MARK),
        "the committed token must be an example value marked {EXAMPLE_MARK:?}"
    );
    assert!(
        !s.config_text.contains(value),
        "the token must not be in the ConfigMap"
    );
}

// ---------------------------------------------------------------------------
// Pod settings
// ---------------------------------------------------------------------------

#[test]
fn every_container_runs_restricted_with_resources() {
    let m = Manifests::load(&[KUBERNETES]);
    let mut checked = 0;
    for deployment in m.of_kind("Deployment") {
        let name = text(deployment, "/metadata/name");
        assert!(
            selects(&deployment["spec"]["selector"], pod_labels(deployment)),
            "{name}: the selector must match the pod template's labels"
        );
        assert_eq!(
            pod_spec(deployment)["automountServiceAccountToken"],
            false,
            "{name}"
        );
        for c in containers(deployment) {
            let at = format!("{name}/{}", c["name"]);
            let sec = |pointer| security(deployment, c, pointer);
            assert_eq!(
                sec("/runAsNonRoot"),
                Some(&Value::Bool(true)),
                "{at}: runAsNonRoot"
            );
            assert_eq!(
                sec("/readOnlyRootFilesystem"),
                Some(&Value::Bool(true)),
                "{at}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sec("/allowPrivilegeEscalation"),
                Some(&Value::Bool(false)),
                "{at}: allowPrivilegeEscalation"
            );
            assert_eq!(
                sec("/seccompProfile/type"),
                Some(&Value::from("RuntimeDefault")),
                "{at}: seccompProfile"
            );
            assert!(
                sec("/capabilities/drop")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.contains(&Value::from("ALL"))),
                "{at}: capabilities.drop must hold ALL"
            );
            assert!(
                sec("/privileged").is_none_or(|p| *p == Value::Bool(false)),
                "{at}: privileged"
            );
            assert!(
                sec("/runAsUser").is_some_and(|u| u.as_u64() != Some(0)),
                "{at}: a non-zero runAsUser"
            );
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        c["resources"][kind][resource].is_string(),
                        "{at}: resources.{kind}.{resource}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "tollgate, the API and Redis");
}

/// The drain timeout of the shipped configs: they leave `server.drain_timeout_ms` at its default.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS);

#[test]
fn shutdown_fits_the_grace_period() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let grace = pod_spec(s.deployment)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert_eq!(grace, 30);
    let pause = |c: &Value| {
        c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0)
    };
    let tollgate_pause = pause(s.tollgate);
    // The kubelet counts the preStop pause against the grace period.
    assert!(
        tollgate_pause + DEFAULT_DRAIN_TIMEOUT.as_secs() <= grace,
        "preStop {tollgate_pause} s + drain {DEFAULT_DRAIN_TIMEOUT:?} > {grace} s"
    );
    // The API must still be up while tollgate accepts during its pause.
    for api in containers(s.deployment).filter(|c| c["name"] != TOLLGATE) {
        assert!(pause(api) >= tollgate_pause, "container {}", api["name"]);
    }
}

#[test]
fn disruption_budget_covers_the_sidecar_pods() {
    let m = Manifests::load(&[BASE]);
    let deployment = m.sidecar_deployment();
    let pdbs: Vec<&Value> = m
        .of_kind("PodDisruptionBudget")
        .filter(|p| selects(&p["spec"]["selector"], pod_labels(deployment)))
        .collect();
    assert_eq!(
        pdbs.len(),
        1,
        "PodDisruptionBudgets selecting the sidecar's pods"
    );
    let spec = &pdbs[0]["spec"];
    // With the base's single replica, minAvailable: 1 would block every drain.
    assert_eq!(spec["maxUnavailable"], 1);
    assert!(spec.get("minAvailable").is_none());
}

// ---------------------------------------------------------------------------
// The example overlay
// ---------------------------------------------------------------------------

#[test]
fn overlay_runs_two_replicas_on_the_bundled_redis() {
    let base = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&base);
    let overlay = Manifests::load(&[OVERLAY]);
    let k = overlay.kustomization();

    let namespace = text(k, "/namespace");
    assert_eq!(
        text(
            overlay.of_kind("Namespace").next().expect("a Namespace"),
            "/metadata/name"
        ),
        namespace,
        "the overlay creates the namespace it deploys to"
    );
    let listed = |key: &str, entry: &str| {
        k[key]
            .as_array()
            .is_some_and(|a| a.contains(&Value::from(entry)))
    };
    assert!(listed("resources", "../../base"));
    assert!(listed("components", "../../components/redis"));

    let replicas = k["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["name"], s.deployment["metadata"]["name"]);
    assert_eq!(replicas[0]["count"], OVERLAY_REPLICAS);

    let image = text(s.tollgate, "/image");
    let image_name = image.rsplit_once(':').map_or(image, |(n, _)| n);
    let images = k["images"].as_array().expect("images");
    assert!(
        images
            .iter()
            .any(|i| i["name"] == image_name && i["newTag"].is_string()),
        "the overlay sets the tag of image {image_name:?}"
    );

    let generators = k["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator");
    assert_eq!(generators.len(), 1);
    let g = &generators[0];
    assert_eq!(g["name"], s.config_map["metadata"]["name"]);
    assert_eq!(g["behavior"], "replace");
    assert_eq!(g["files"], Value::from(vec![s.config_key.clone()]));

    // The store points at the component's Redis Service.
    let redis = Manifests::load(&[REDIS_COMPONENT]);
    let config = toml_table(&overlay_config_text(), "overlay tollgate.toml");
    assert_eq!(toml_str(&config, "store", "backend"), Some("redis"));
    let url = toml_str(&config, "store", "url").expect("store.url");
    assert!(url.starts_with("redis://"), "{url}");
    let (host, port) = host_port(url);
    let service = redis.named("Service", &host);
    let service_port = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("Service {host} has no port {port}"));
    let redis_deployment = redis
        .of_kind("Deployment")
        .find(|d| selects(&service["spec"]["selector"], pod_labels(d)))
        .unwrap_or_else(|| panic!("Service {host} selects no Deployment of the component"));
    assert_eq!(
        resolve_port(
            container(redis_deployment, "redis"),
            &service_port["targetPort"]
        ),
        Some(6379)
    );
    assert!(
        !url.contains('@'),
        "an example URL with credentials would belong in a Secret"
    );

    // Apart from [store], the overlay's file is the base's: they must not drift.
    let mut base_rest = toml_table(s.config_text, "base tollgate.toml");
    let mut overlay_rest = config.clone();
    base_rest.remove("store");
    overlay_rest.remove("store");
    assert_eq!(
        base_rest, overlay_rest,
        "overlay tollgate.toml differs from the base's outside [store]"
    );
    assert_eq!(
        toml_str(&toml_table(s.config_text, "base"), "store", "backend"),
        Some("memory")
    );
}

// ---------------------------------------------------------------------------
// The managed-redis overlay
// ---------------------------------------------------------------------------

#[test]
fn managed_redis_overlay_takes_the_password_from_a_secret_and_the_ca_from_a_configmap() {
    let base = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&base);
    let overlay = Manifests::load(&[MANAGED_REDIS]);
    let k = overlay.kustomization();
    let dir = repo_path(MANAGED_REDIS);
    let text_of = |file: &str| read(&dir.join(file));
    let config_text = text_of("tollgate.toml");
    let config = toml_table(&config_text, "managed-redis tollgate.toml");

    assert!(k["resources"]
        .as_array()
        .is_some_and(|r| r.contains(&Value::from("../../base"))));
    assert!(
        k.get("components").is_none(),
        "no bundled Redis: the store is the managed one"
    );
    assert_eq!(
        text(
            overlay.of_kind("Namespace").next().expect("a Namespace"),
            "/metadata/name"
        ),
        text(k, "/namespace")
    );

    // [store]: TLS, the CA file and the password variable, no credentials in the URL.
    assert_eq!(toml_str(&config, "store", "backend"), Some("redis"));
    let url = toml_str(&config, "store", "url").expect("store.url");
    assert!(url.starts_with("rediss://"), "{url}");
    assert!(
        !url.contains('@'),
        "credentials belong in the Secret: {url}"
    );
    let ca = toml_str(&config, "store", "ca").expect("store.ca");
    let password_env = toml_str(&config, "store", "password_env").expect("store.password_env");

    // The Deployment patch gives the sidecar both.
    let patches = k["patches"].as_array().expect("patches");
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0]["target"]["name"],
        s.deployment["metadata"]["name"]
    );
    let patch = &yaml_documents(text(&patches[0], "/patch")).expect("the patch is YAML")[0];
    let tollgate = container(patch, TOLLGATE);

    // The password: env var <- secretKeyRef <- a Secret of the overlay with
    // that key, holding an example value only.
    let env = env_var(tollgate, password_env)
        .unwrap_or_else(|| panic!("the patch sets no {password_env}"));
    let secret_ref = &env["valueFrom"]["secretKeyRef"];
    let secret = overlay.named("Secret", text(secret_ref, "/name"));
    let value = secret["stringData"][text(secret_ref, "/key")]
        .as_str()
        .expect("the Secret has the key");
    assert!(value.contains(EXAMPLE_MARK), "{value}");
    assert!(!config_text.contains(value));

    // The CA: store.ca's directory is a mount of a volume from a ConfigMap
    // that a generator of the overlay makes, with the file under its name.
    let (ca_dir, ca_file) = ca.rsplit_once('/').expect("an absolute path");
    assert_ne!(
        ca_dir,
        text(s.mount, "/mountPath"),
        "not inside the config's read-only mount"
    );
    let mount = tollgate["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == ca_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {ca_dir}"));
    assert_eq!(mount["readOnly"], true);
    let volume = pod_spec(patch)["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let map_name = text(volume, "/configMap/name");
    let generator = k["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == map_name)
        .unwrap_or_else(|| panic!("no configMapGenerator {map_name}"));
    let source = generator["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|f| match f.split_once('=') {
            Some((key, path)) => (key == ca_file).then_some(path),
            None => (f == ca_file).then_some(f),
        })
        .unwrap_or_else(|| panic!("{map_name} has no key {ca_file}"));

    // Apart from [store], the file is the base's.
    let mut base_rest = toml_table(s.config_text, "base tollgate.toml");
    let mut overlay_rest = config.clone();
    base_rest.remove("store");
    overlay_rest.remove("store");
    assert_eq!(base_rest, overlay_rest);

    // `tollgate check` as the pod would run it: the ConfigMap's file where
    // store.ca points (here: its source in the repository), the Secret's
    // value in the environment. Without the variable: exit 2, naming it.
    let local = config_text.replace(ca, &dir.join(source).display().to_string());
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("tollgate.toml");
    std::fs::write(&path, &local).expect("write config");
    let run = |with_password: bool| {
        let mut cmd = tollgate_command(tmp.path());
        cmd.args(["check", "--config"]).arg(&path);
        if with_password {
            cmd.env(password_env, value);
        } else {
            cmd.env_remove(password_env);
        }
        cmd.output().expect("run tollgate check")
    };
    let out = run(true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(!stdout.contains(value), "{stdout}");
    let out = run(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "store.password_env: the environment variable {password_env} is not set"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

#[test]
fn both_configs_pass_tollgate_check() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    for (what, text) in [
        ("base ConfigMap", s.config_text.to_owned()),
        ("overlay tollgate.toml", overlay_config_text()),
    ] {
        let out = check(&text, what);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "tollgate check of the {what}:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("warning"),
            "tollgate check of the {what} warns:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn probe_paths_answer_200_and_sigterm_stops_the_server() {
    let m = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&m);
    let mut server = Tollgate::start(&for_local_run(s.config_text));
    let admin = server.admin;

    let metrics_path = s.deployment["spec"]["template"]["metadata"]["annotations"]
        ["prometheus.io/path"]
        .as_str()
        .unwrap_or("/metrics")
        .to_owned();
    let probe_paths = ["livenessProbe", "readinessProbe"]
        .map(|p| text(&s.tollgate[p], "/httpGet/path").to_owned());
    for path in probe_paths.iter().chain([&metrics_path]) {
        let (status, body) = http_get(admin, path);
        assert_eq!(status, 200, "GET {path} on the admin listener: {body}");
    }

    // What the kubelet does at the end of the grace period's preStop pause.
    server.signal("TERM");
    let grace = DEFAULT_DRAIN_TIMEOUT + Duration::from_secs(5);
    let status = server.wait_exit(grace).unwrap_or_else(|| {
        panic!(
            "tollgate serve still running {grace:?} after SIGTERM:\n{}",
            server.log_text()
        )
    });
    assert!(
        status.success(),
        "tollgate serve after SIGTERM: {status}\n{}",
        server.log_text()
    );
}

// ---------------------------------------------------------------------------
// The monitoring component
// ---------------------------------------------------------------------------

#[test]
fn service_monitor_scrapes_the_admin_port_through_a_metrics_service() {
    let base = Manifests::load(&[BASE]);
    let s = Sidecar::resolve(&base);
    let config = toml_table(s.config_text, "base tollgate.toml");
    let admin = listen(&config, "admin").port();
    let monitoring = Manifests::load(&[MONITORING_COMPONENT]);

    // The metrics Service: headless, selects the sidecar's pods, admin port only.
    let services: Vec<&Value> = monitoring.of_kind("Service").collect();
    assert_eq!(services.len(), 1, "the component's Services");
    let service = services[0];
    assert!(selects(
        &service["spec"]["selector"],
        pod_labels(s.deployment)
    ));
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "headless: every pod is a target"
    );
    let ports = service["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "the admin port only");
    assert_eq!(
        resolve_port(s.tollgate, &ports[0]["targetPort"]),
        Some(admin)
    );

    // The ServiceMonitor selects that Service (and no public one) and names its port.
    let monitor = monitoring.named("ServiceMonitor", "tollgate");
    let selector = &monitor["spec"]["selector"];
    assert!(selects(selector, &service["metadata"]["labels"]));
    for public in base.of_kind("Service") {
        assert!(
            !selects(selector, &public["metadata"]["labels"]),
            "the ServiceMonitor selects Service {}",
            public["metadata"]["name"]
        );
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert_eq!(
        endpoint["port"], ports[0]["name"],
        "by the Service port's name"
    );
    let annotations = &s.deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(endpoint["path"], annotations["prometheus.io/path"]);
    assert!(endpoint.get("scheme").is_none_or(|v| v == "http"));

    // The component brings the rules and the dashboard; the overlay uses it.
    let component = monitoring
        .docs
        .iter()
        .find(|d| d.value["kind"] == "Component");
    let resources = &component.expect("the Component").value["resources"];
    assert!(resources
        .as_array()
        .is_some_and(|r| r.contains(&Value::from("../../../monitoring"))));
    let overlay = Manifests::load(&[MONITORING_OVERLAY]);
    let k = overlay.kustomization();
    assert_eq!(k["resources"], Value::from(vec!["../example"]));
    assert_eq!(
        k["components"],
        Value::from(vec!["../../components/monitoring"])
    );
    // The example overlay itself stays usable without the operator's CRDs.
    let example = Manifests::load(&[OVERLAY]);
    assert!(!example.kustomization()["components"]
        .as_array()
        .is_some_and(|c| c.contains(&Value::from("../../components/monitoring"))));
}
