//! Real certificates for TLS tests, made with rcgen: a test CA, leaf
//! certificates it signs (for chosen names, optionally expired), written as
//! PEM files with the modes a Secret mount would have; and rustls client and
//! server configs that trust that CA, using the same ring provider as tollgate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority that signs test certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tollgate test CA");
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, false)
    }

    /// A leaf for `names` that expired years ago.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, true)
    }

    fn leaf_with(&self, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The CA certificate as rustls roots.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
        roots
    }

    /// A client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write ca");
        path
    }
}

impl Leaf {
    /// Writes `tls.crt` and `tls.key` (mode 0600) into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        write_private(&key, &self.key_pem);
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        (cert, key)
    }

    /// A rustls server config presenting this leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("leaf pem");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server cert");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// Writes `text` to `path` with mode 0600, replacing the file atomically
/// (a rename, as a Secret volume update does).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write key");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename key");
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `[server.tls]` section for these files.
pub fn server_tls_section(cert: &Path, key: &Path) -> String {
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// A real HTTPS upstream (HTTP/1.1 and HTTP/2 by ALPN) on a free port: it
/// answers `200 tls-ok` with `x-seen-proto` (the `X-Forwarded-Proto` it got)
/// and counts the requests that reached it and the handshakes that failed.
pub struct HttpsUpstream {
    pub addr: std::net::SocketAddr,
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
    pub failed_handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsUpstream {
    pub async fn start(config: Arc<rustls::ServerConfig>) -> HttpsUpstream {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (r, f) = (requests.clone(), failed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, r, f) = (acceptor.clone(), r.clone(), f.clone());
                tokio::spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(_) => {
                            f.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            r.fetch_add(1, Ordering::SeqCst);
                            let proto = req
                                .headers()
                                .get("x-forwarded-proto")
                                .cloned()
                                .unwrap_or(http::HeaderValue::from_static("-"));
                            async move {
                                let mut resp = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"tls-ok"),
                                ));
                                resp.headers_mut().insert("x-seen-proto", proto);
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        HttpsUpstream {
            addr,
            requests,
            failed_handshakes: failed,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The end-entity certificate `addr` presents to a new TLS connection
/// (SNI `localhost`), verified against `roots`.
pub async fn presented_cert(
    addr: std::net::SocketAddr,
    ca: &TestCa,
) -> Result<Vec<u8>, std::io::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

impl Leaf {
    /// The leaf certificate's DER bytes.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("leaf pem")
            .to_vec()
    }
}

/// An HTTPS client (hyper-util, ALPN `alpn`) that trusts `ca`; with
/// `fresh`, every request opens a new connection (a new handshake).
pub fn https_client(
    ca: &TestCa,
    alpn: &[&[u8]],
    fresh: bool,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config(&[]))
        .https_only();
    let connector = match (alpn.contains(&&b"h2"[..]), alpn.contains(&&b"http/1.1"[..])) {
        (true, true) => b.enable_all_versions().wrap_connector(http),
        (true, false) => b.enable_http2().wrap_connector(http),
        _ => b.enable_http1().wrap_connector(http),
    };
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    if alpn == [&b"h2"[..]] {
        builder.http2_only(true);
    }
    builder.build(connector)
}
