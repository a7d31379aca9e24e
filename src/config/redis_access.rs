//! The `[store]` keys of managed Redis (SPEC.md "Managed Redis"): TLS
//! material (`ca`, `client_cert`, `client_key`) and credentials read from the
//! environment (`username_env`, `password_env`).
//!
//! Owns their validation. The files are read and their PEM parsed at load,
//! the client certificate is checked against its key, and the environment
//! variables are read, so that `tollgate check` reports each of these at its
//! key and line, and `serve` never starts with TLS material it cannot use.
//! TLS keys beside a plain `redis://` URL are an error, never a silent
//! plaintext connection. Nothing here connects to anything, and no message
//! carries a password or the content of a key file.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use toml::Spanned;

use super::{backend_name, Checker, RawStore, StoreBackend};

/// A PEM file named by the config, read at load. Serializes as its path
/// only: a key file's content is a secret.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PemFile {
    pub path: PathBuf,
    #[serde(skip)]
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    /// The path only: a key file's content is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A value that is never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it (the Redis `AUTH`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How tollgate reaches a managed Redis; all `None` for plain `redis://`
/// with any credentials inside the URL.
///
/// Serializes as the file's keys: the files by path, the variables by name;
/// the values read from them are left out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RedisAccess {
    /// `store.ca`: the roots that verify the servers (else the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemFile>,
    /// `store.client_cert` and `store.client_key`, for mutual TLS: both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PemFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PemFile>,
    /// `store.username_env`, and the ACL user read from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username_env: Option<String>,
    #[serde(skip)]
    pub username: Option<String>,
    /// `store.password_env`, and the password read from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Never serialized: [`Secret`] has no `Serialize`, so it cannot be by mistake.
    #[serde(skip)]
    pub password: Option<Secret>,
}

/// A store URL as written, with its key (`store.url`, `store.urls[1]`).
struct UrlAt<'r> {
    key: String,
    url: &'r Spanned<String>,
}

impl Checker<'_> {
    /// Validates the managed-Redis keys of `[store]` against the backend
    /// and its URLs (already checked one by one).
    pub(super) fn redis_access(&mut self, raw: &RawStore, backend: &StoreBackend) -> RedisAccess {
        let urls = store_urls(raw, backend);
        let tls = self.tls_scheme(raw, backend, &urls);
        let memory = matches!(backend, StoreBackend::Memory);
        // A key the backend does not read at all, or TLS material for plain TCP.
        let mut usable = |key: &str, value: &Option<Spanned<String>>, needs_tls: bool| {
            let v = value.clone()?;
            if memory {
                self.report(
                    Some(&v.span()),
                    key,
                    format!("is not read by store.backend = {:?}", backend_name(backend)),
                );
                return None;
            }
            if needs_tls && !tls {
                self.report(
                    Some(&v.span()),
                    key,
                    "is only used over TLS, and the store URL is redis:// (plain TCP): \
                     use rediss:// URLs, or remove this key",
                );
                return None;
            }
            Some(v)
        };
        let ca = usable("store.ca", &raw.ca, true);
        let client_cert = usable("store.client_cert", &raw.client_cert, true);
        let client_key = usable("store.client_key", &raw.client_key, true);
        let username_env = usable("store.username_env", &raw.username_env, false);
        let password_env = usable("store.password_env", &raw.password_env, false);

        let ca = ca.and_then(|v| self.pem_file("store.ca", &v, certificates));
        let (client_cert, client_key) = self.client_identity(client_cert, client_key);

        let username = username_env
            .as_ref()
            .and_then(|v| self.env_value("store.username_env", v));
        let password = password_env
            .as_ref()
            .and_then(|v| self.env_value("store.password_env", v));
        // One source for each credential: the URL, or the environment.
        for at in &urls {
            let Some(parsed) = redis::parse_redis_url(at.url.get_ref()) else {
                continue; // reported by the URL check
            };
            if let Some(env) = &password_env {
                if parsed.password().is_some() {
                    self.report(
                        Some(&at.url.span()),
                        &at.key,
                        format!(
                            "holds a password, and store.password_env is set: remove it from \
                             the URL (the password is read from {})",
                            env.get_ref()
                        ),
                    );
                }
            }
            if let Some(env) = &username_env {
                if !parsed.username().is_empty() {
                    self.report(
                        Some(&at.url.span()),
                        &at.key,
                        format!(
                            "names a user, and store.username_env is set: remove it from \
                             the URL (the user is read from {})",
                            env.get_ref()
                        ),
                    );
                }
            }
        }
        RedisAccess {
            ca,
            client_cert,
            client_key,
            username_env: username_env.map(Spanned::into_inner),
            username,
            password_env: password_env.map(Spanned::into_inner),
            password: password.map(Secret),
        }
    }

    /// Whether the URLs are `rediss://`; mixing the schemes is an error.
    fn tls_scheme(&mut self, raw: &RawStore, backend: &StoreBackend, urls: &[UrlAt]) -> bool {
        let is_tls = |u: &UrlAt| u.url.get_ref().starts_with("rediss://");
        let tls = urls.iter().filter(|u| is_tls(u)).count();
        if tls > 0 && tls < urls.len() {
            let (key, span) = match backend {
                StoreBackend::RedisSentinel { .. } => ("store.sentinels", raw.sentinels.as_ref()),
                _ => ("store.urls", raw.urls.as_ref()),
            };
            self.report(
                span.map(Spanned::span).as_ref(),
                key,
                "mixes redis:// and rediss:// URLs: use rediss:// (TLS) for all of them, or for none",
            );
        }
        tls > 0
    }

    /// Reads the file `value` names and checks its content with `parse`.
    fn pem_file(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        parse: fn(&[u8]) -> Result<(), String>,
    ) -> Option<PemFile> {
        let path = PathBuf::from(value.get_ref());
        let problem = match std::fs::read(&path) {
            Err(e) => format!("cannot read {}: {e}", path.display()),
            Ok(pem) => match parse(&pem) {
                Ok(()) => return Some(PemFile { path, pem }),
                Err(why) => format!("{}: {why}", path.display()),
            },
        };
        self.report(Some(&value.span()), key, problem);
        None
    }

    /// `client_cert` and `client_key`: both or neither, each readable, and
    /// the key the certificate's.
    fn client_identity(
        &mut self,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
    ) -> (Option<PemFile>, Option<PemFile>) {
        match (&cert, &key) {
            (Some(c), None) => self.report(
                Some(&c.span()),
                "store.client_cert",
                "needs store.client_key: mutual TLS takes the certificate and its key",
            ),
            (None, Some(k)) => self.report(
                Some(&k.span()),
                "store.client_key",
                "needs store.client_cert: mutual TLS takes the certificate and its key",
            ),
            _ => {}
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            return (None, None);
        };
        let cert_file = self.pem_file("store.client_cert", &cert, certificates);
        let key_file = self.pem_file("store.client_key", &key, private_key);
        let (Some(cert_file), Some(key_file)) = (cert_file, key_file) else {
            return (None, None);
        };
        if let Err(why) = key_matches(&cert_file.pem, &key_file.pem) {
            self.report(Some(&key.span()), "store.client_key", why);
            return (None, None);
        }
        (Some(cert_file), Some(key_file))
    }

    /// The non-empty value of the environment variable `name` names.
    pub(super) fn env_value(&mut self, key: &str, name: &Spanned<String>) -> Option<String> {
        let var = name.get_ref();
        let problem = if !super::valid_env_name(var) {
            format!(
                "{var:?} is not an environment variable name \
                 (letters, digits and _, not starting with a digit)"
            )
        } else {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => return Some(v),
                Ok(_) => format!("the environment variable {var} is empty"),
                Err(std::env::VarError::NotPresent) => {
                    format!("the environment variable {var} is not set")
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    format!("the environment variable {var} is not valid UTF-8")
                }
            }
        };
        self.report(Some(&name.span()), key, problem);
        None
    }
}

/// The URLs the backend connects to, with their keys.
fn store_urls<'r>(raw: &'r RawStore, backend: &StoreBackend) -> Vec<UrlAt<'r>> {
    let list = |key: &str, urls: &'r Option<Spanned<Vec<Spanned<String>>>>| {
        urls.iter()
            .flat_map(|l| l.get_ref().iter())
            .enumerate()
            .map(|(i, url)| UrlAt {
                key: format!("{key}[{i}]"),
                url,
            })
            .collect()
    };
    match backend {
        StoreBackend::Memory => Vec::new(),
        StoreBackend::Redis { .. } => raw
            .url
            .iter()
            .map(|url| UrlAt {
                key: "store.url".into(),
                url,
            })
            .collect(),
        StoreBackend::RedisCluster { .. } => list("store.urls", &raw.urls),
        StoreBackend::RedisSentinel { .. } => list("store.sentinels", &raw.sentinels),
    }
}

/// One or more PEM certificates, each usable as a trust anchor.
fn certificates(pem: &[u8]) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("holds no certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} cannot be parsed ({e})", i + 1))?;
    }
    Ok(())
}

/// One PEM private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| format!("holds no usable private key (PEM PKCS#8, PKCS#1 or SEC1: {e})"))
}

/// The key is the certificate's, and of a kind rustls signs with.
fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("is not the key of the certificate in store.client_cert".into())
        }
        Err(e) => Err(format!("cannot be used with store.client_cert ({e})")),
    }
}
