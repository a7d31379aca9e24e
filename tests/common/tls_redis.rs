//! Redis over TLS for one test: certificates made with `rcgen` in a
//! temporary directory, and real `redis-server` processes (Debian's build
//! speaks TLS) on free loopback ports, stopped on drop — one server, a
//! three-primary cluster with `--tls-cluster yes`, and a Sentinel set-up
//! with TLS everywhere (`--tls-replication yes`, TLS sentinels).
//!
//! Every server also listens on a plain port, used only by the helper itself
//! (readiness, `redis-cli` administration); tollgate is given the TLS port.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::redis_cluster::{
    base_args, cli, cli_tls, cluster_args, create_cluster, free_port, named_primary,
    sentinel_failover, sentinel_monitor, spawn_ready, wait_for, wait_sentinels_ready,
};

/// A server certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA and the certificates it (or another CA) issued, as PEM files.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate tollgate is given as `store.ca`.
    pub ca_file: PathBuf,
    /// For `localhost` and 127.0.0.1, valid now.
    pub server: CertFiles,
    /// A client certificate for mutual TLS.
    pub client: CertFiles,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = new_ca("tollgate test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write ca.pem");
        let mut pki = Pki {
            server: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            client: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
            ca,
            ca_file,
        };
        pki.server = pki.issue("server", &["localhost", "127.0.0.1"], false);
        pki.client = pki.issue("client", &["tollgate-client"], false);
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for `names`, signed by this CA; expired (valid in
    /// 2019 only) when `expired`. Usable by a server and as a client.
    pub fn issue(&self, stem: &str, names: &[&str], expired: bool) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        self.write(stem, &cert.pem(), &key.serialize_pem())
    }

    /// A certificate for `localhost` and 127.0.0.1 from another CA (whose
    /// certificate is returned too): what a server of someone else presents.
    pub fn foreign(&self) -> (PathBuf, CertFiles) {
        let other = new_ca("someone else's CA");
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &other).expect("sign");
        let ca_file = self.dir().join("foreign-ca.pem");
        std::fs::write(&ca_file, other.pem()).expect("write");
        (
            ca_file,
            self.write("foreign", &cert.pem(), &key.serialize_pem()),
        )
    }

    /// A key that belongs to no certificate here.
    pub fn stray_key(&self) -> PathBuf {
        let path = self.dir().join("stray.key");
        let key = KeyPair::generate().expect("key");
        std::fs::write(&path, key.serialize_pem()).expect("write");
        path
    }

    fn write(&self, stem: &str, cert: &str, key: &str) -> CertFiles {
        let files = CertFiles {
            cert: self.dir().join(format!("{stem}.pem")),
            key: self.dir().join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        files
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// How a TLS server is set up.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The certificate the server presents.
    pub cert: CertFiles,
    /// The CA that verifies client certificates (and peers, in a cluster).
    pub ca: PathBuf,
    /// `--tls-auth-clients yes`: a client certificate is required.
    pub require_client_cert: bool,
    /// Extra `redis-server` arguments (`--requirepass`, cluster settings, ...).
    pub extra: Vec<String>,
}

impl TlsOptions {
    pub fn new(pki: &Pki) -> TlsOptions {
        TlsOptions {
            cert: pki.server.clone(),
            ca: pki.ca_file.clone(),
            require_client_cert: false,
            extra: Vec::new(),
        }
    }

    fn args(&self, plain: u16, tls: u16) -> Vec<String> {
        let mut a = base_args(plain);
        a.extend(
            [
                "--tls-port",
                &tls.to_string(),
                "--tls-cert-file",
                &self.cert.cert.display().to_string(),
                "--tls-key-file",
                &self.cert.key.display().to_string(),
                "--tls-ca-cert-file",
                &self.ca.display().to_string(),
                "--tls-auth-clients",
                if self.require_client_cert {
                    "yes"
                } else {
                    "no"
                },
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// One `redis-server` with a plain and a TLS port.
#[derive(Debug)]
pub struct TlsRedis {
    /// Plain port, for the helper's own administration.
    pub plain: u16,
    /// TLS port, for tollgate.
    pub tls: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl TlsRedis {
    /// Starts a server in `dir` and waits until it answers `PING`.
    pub fn start(dir: &Path, options: &TlsOptions) -> TlsRedis {
        Self::start_with(dir, |plain, tls| options.args(plain, tls), false)
    }

    fn start_with(dir: &Path, args: impl Fn(u16, u16) -> Vec<String>, with_bus: bool) -> TlsRedis {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!("cannot run redis-server: install it, e.g. `apt-get install redis-server`");
        }
        let (child, (plain, tls)) = spawn_ready(
            dir,
            "redis-server with TLS",
            || (free_port(with_bus), free_port(false)),
            |(plain, _)| dir.join(format!("redis-{plain}.log")),
            |(plain, tls)| args(plain, tls),
            // A server with a password answers, and refuses: up as well.
            |(plain, _)| {
                cli(plain, &["PING"]).is_some_and(|r| r == "PONG" || r.starts_with("NOAUTH"))
            },
        );
        TlsRedis {
            plain,
            tls,
            child: Some(child),
            dir: dir.to_owned(),
        }
    }

    /// `rediss://host:<tls port>/`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}/", self.tls)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.plain)))
            .unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- Cluster

/// Three primaries (no replicas), all slots covered, `--tls-cluster yes`:
/// the bus is TLS and `CLUSTER SLOTS` names the TLS ports.
pub struct TlsRedisCluster {
    pub nodes: Vec<TlsRedis>,
    _dir: tempfile::TempDir,
}

impl TlsRedisCluster {
    pub fn start(pki: &Pki) -> TlsRedisCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = TlsOptions::new(pki);
        let nodes: Vec<TlsRedis> = (0..3)
            .map(|_| {
                TlsRedis::start_with(
                    dir.path(),
                    |plain, tls| {
                        let mut a = options.args(plain, tls);
                        a.extend(cluster_args(plain));
                        a.extend(["--tls-cluster".into(), "yes".into()]);
                        a
                    },
                    true,
                )
            })
            .collect();
        // Over the TLS bus.
        let ports: Vec<u16> = nodes.iter().map(|n| n.plain).collect();
        create_cluster(&ports, 0);
        TlsRedisCluster { nodes, _dir: dir }
    }

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url("127.0.0.1")).collect()
    }

    /// Empties every primary (between test cases).
    pub fn flush_all(&self) {
        for n in &self.nodes {
            assert_eq!(cli(n.plain, &["FLUSHALL"]).as_deref(), Some("OK"));
        }
    }
}

// ---------------------------------------------------------------- Sentinel

pub const TLS_MASTER_NAME: &str = "tgtls";

/// A primary and a replica (`--tls-replication yes`) and three sentinels
/// that talk TLS to them and to each other, and serve clients over TLS only.
pub struct TlsRedisSentinel {
    data: Vec<TlsRedis>,
    sentinels: Vec<Child>,
    /// TLS ports of the sentinels.
    sentinel_ports: Vec<u16>,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl TlsRedisSentinel {
    pub fn start(pki: &Pki) -> TlsRedisSentinel {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut options = TlsOptions::new(pki);
        options.extra = vec!["--tls-replication".into(), "yes".into()];
        let primary = TlsRedis::start(dir.path(), &options);
        let mut replica_options = options.clone();
        replica_options.extra.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.tls.to_string(),
        ]);
        let replica = TlsRedis::start(dir.path(), &replica_options);
        wait_for("replica in sync over TLS", || {
            cli(replica.plain, &["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        let mut s = TlsRedisSentinel {
            data: vec![primary, replica],
            sentinels: Vec::new(),
            sentinel_ports: Vec::new(),
            ca: pki.ca_file.clone(),
            dir,
        };
        for _ in 0..3 {
            s.spawn_sentinel(pki);
        }
        let cli = |port: u16, args: &[&str]| s.sentinel_cli(port, args);
        wait_sentinels_ready(&s.sentinel_ports, TLS_MASTER_NAME, &cli);
        s
    }

    /// A sentinel on a TLS port only (`port 0`), monitoring the primary's TLS port.
    fn spawn_sentinel(&mut self, pki: &Pki) {
        let p = self.data[0].tls;
        let dir = self.dir.path().to_owned();
        let (child, port) = spawn_ready(
            &dir,
            "sentinel with TLS",
            || free_port(false),
            |port| dir.join(format!("sentinel-{port}.log")),
            |port| {
                let conf = dir.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\n\
                         tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                         tls-auth-clients no\ntls-replication yes\n{}",
                        pki.server.cert.display(),
                        pki.server.key.display(),
                        pki.ca_file.display(),
                        sentinel_monitor(TLS_MASTER_NAME, p),
                    ),
                )
                .expect("sentinel.conf");
                vec![conf.display().to_string(), "--sentinel".into()]
            },
            |port| self.sentinel_cli(port, &["PING"]).as_deref() == Some("PONG"),
        );
        self.sentinels.push(child);
        self.sentinel_ports.push(port);
    }

    /// `redis-cli --tls` against a sentinel; the trimmed output, `None` on failure.
    pub fn sentinel_cli(&self, port: u16, args: &[&str]) -> Option<String> {
        cli_tls(port, Some(&self.ca), args)
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}/"))
            .collect()
    }

    /// The TLS port the sentinels name as primary.
    pub fn primary_port(&self) -> u16 {
        let cli = |port: u16, args: &[&str]| self.sentinel_cli(port, args);
        named_primary(self.sentinel_ports[0], TLS_MASTER_NAME, &cli)
    }

    /// The plain (admin) port of the data node on TLS port `tls`.
    pub fn plain_port_of(&self, tls: u16) -> u16 {
        self.data
            .iter()
            .find(|n| n.tls == tls)
            .map(|n| n.plain)
            .expect("a data node on that port")
    }

    /// `SENTINEL FAILOVER`, then waits until every sentinel names the other
    /// node and it is a primary. Returns (old, new) primary TLS ports.
    pub fn failover(&self) -> (u16, u16) {
        let old = self.primary_port();
        let new = self
            .data
            .iter()
            .find(|n| n.tls != old)
            .expect("the replica");
        let cli = |port: u16, args: &[&str]| self.sentinel_cli(port, args);
        sentinel_failover(
            &self.sentinel_ports,
            TLS_MASTER_NAME,
            new.tls,
            new.plain,
            &cli,
        );
        (old, new.tls)
    }
}

impl Drop for TlsRedisSentinel {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
