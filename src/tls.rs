//! TLS on both sides, with one stack: rustls 0.23 and its `ring` provider.
//!
//! This module owns
//! - reading and checking certificate and key files ([`load_certified_key`],
//!   [`load_ca`]): the errors name the file, so that a bad file is a config
//!   error (exit 2) at start and a refused rotation afterwards;
//! - the public listener's [`ServerConfig`]: ALPN `h2` and `http/1.1`, TLS 1.2
//!   and 1.3 only, rustls's default (modern) cipher suites, and a
//!   certificate resolver ([`CertStore`]) whose certificate can be swapped
//!   while connections stay open;
//! - [`watch_files`], which re-reads `[server.tls]`'s files when their content
//!   changes (cert-manager rotating a Secret) and swaps the certificate only
//!   when the new pair is valid;
//! - the upstream's [`ClientConfig`]: the roots of `upstream.ca`, else the
//!   system's; hostname verification and SNI are rustls's (never disabled).
//!
//! It does no network I/O.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// ALPN protocol ids the public listener offers, preferred first.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The process's one crypto provider: rustls's `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process-wide default, for library code that
/// builds a rustls config without naming one. Installing twice is harmless.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Err: another thread installed one in between, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file at fault.
    pub path: PathBuf,
    /// Whether it is the key (else the certificate chain).
    pub is_key: bool,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

fn cert_error(path: &Path, message: impl Into<String>) -> FileError {
    FileError {
        path: path.to_owned(),
        is_key: false,
        message: message.into(),
    }
}

fn key_error(path: &Path, message: impl Into<String>) -> FileError {
    FileError {
        path: path.to_owned(),
        is_key: true,
        message: message.into(),
    }
}

/// The PEM certificates in `pem` (at least one).
fn certs_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(cert_error(
            path,
            "holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
        ));
    }
    Ok(certs)
}

/// The certificates of an `upstream.ca` file.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = std::fs::read(path).map_err(|e| cert_error(path, format!("cannot read: {e}")))?;
    let certs = certs_from_pem(path, &pem)?;
    let mut roots = RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 {
        return Err(cert_error(
            path,
            format!("{bad} of its certificates cannot be used as a root"),
        ));
    }
    Ok(certs)
}

/// The private key file must not be readable by others (a Kubernetes Secret
/// mounted with `fsGroup` is group-readable, which is allowed).
#[cfg(unix)]
fn check_key_mode(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| key_error(path, format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(key_error(
            path,
            format!(
                "the private key is accessible to other users (mode {mode:04o}); \
                 make it readable by its owner (and group) only, e.g. chmod 600"
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_path: &Path) -> Result<(), FileError> {
    Ok(())
}

/// The files' bytes, read once, so that what is checked is what is served.
struct Pair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, FileError> {
    check_key_mode(key)?;
    Ok(Pair {
        cert: std::fs::read(cert).map_err(|e| cert_error(cert, format!("cannot read: {e}")))?,
        key: std::fs::read(key).map_err(|e| key_error(key, format!("cannot read: {e}")))?,
    })
}

fn certified_key(cert: &Path, key: &Path, pair: &Pair) -> Result<CertifiedKey, FileError> {
    let chain = certs_from_pem(cert, &pair.cert)?;
    let der = PrivateKeyDer::from_pem_slice(&pair.key)
        .map_err(|e| key_error(key, format!("not a PEM private key ({e})")))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_error(key, format!("unusable private key ({e})")))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            cert_error(cert, format!("does not match the key {}", key.display())),
        ),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(cert_error(cert, format!("unusable certificate ({e})"))),
    }
}

/// Reads and checks a certificate chain and its private key: both parse, the
/// key is not readable by others, and it belongs to the first certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, FileError> {
    let pair = read_pair(cert, key)?;
    certified_key(cert, key, &pair)
}

/// The certificate the public listener presents, swappable while it serves:
/// a handshake takes the one in force when it starts, connections already
/// open keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Self {
        CertStore {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The public listener's TLS config around `certs`.
pub fn server_config(certs: Arc<CertStore>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A TLS client config for the upstream: `ca`'s roots if given, else the
/// system's. ALPN is left to the connector.
pub fn upstream_client_config(ca: Option<&[CertificateDer<'static>]>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(certs) => {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read a system root certificate");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::error!(
                    "no system root certificates found: an https upstream cannot be verified; \
                     set upstream.ca or install the ca-certificates package"
                );
            }
        }
    }
    match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        // A fixed property of the ring provider, not of any input.
        Err(e) => unreachable!("the ring provider supports TLS 1.2 and 1.3: {e}"),
    }
}

/// Re-reads `cert` and `key` every `interval` and puts a changed, valid pair
/// in force; an invalid one is refused with a log line and the certificate
/// in force keeps serving. Ends when `stop` turns true.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let digest = |pair: &Pair| {
        let mut h = Sha256::new();
        h.update(&pair.cert);
        h.update([0u8]);
        h.update(&pair.key);
        h.finalize()
    };
    let mut seen = read_pair(&cert, &key).ok().map(|p| digest(&p));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Blocking reads of two small files: off the async workers.
        let (c, k) = (cert.clone(), key.clone());
        let read = tokio::task::spawn_blocking(move || read_pair(&c, &k)).await;
        let pair = match read {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                // Mid-rotation (one file written, not yet the other) or gone:
                // say so once per distinct state, keep serving.
                let d = Some(Sha256::digest(e.to_string().as_bytes()));
                if d != seen {
                    tracing::error!(error = %e, "TLS certificate reload refused; the certificate in force keeps serving");
                    seen = d;
                }
                continue;
            }
            Err(_) => continue,
        };
        let d = Some(digest(&pair));
        if d == seen {
            continue;
        }
        seen = d;
        match certified_key(&cert, &key, &pair) {
            Ok(ck) => {
                store.replace(ck);
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "TLS certificate reload refused; the certificate in force keeps serving"
            ),
        }
    }
}
