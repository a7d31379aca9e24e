//! Where an admin verb sends its request, and with which token.
//!
//! Owns the precedence rules of SPEC.md ("Command line"): the base URL comes
//! from `--admin-url`, else `$TOLLGATE_ADMIN_URL`, else `http://` + the
//! config's `[admin] listen` (an unspecified address becomes loopback); the
//! token from the variable the config's `admin.token_env` names (when a config
//! was loaded), else `$TOLLGATE_ADMIN_TOKEN`.
//!
//! The environment and the config loader are passed in, so the rules are
//! tested without touching the process. The token is held as a sensitive
//! header value and never appears in a message or a `Debug` output.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use http::uri::{Authority, Scheme, Uri};
use http::HeaderValue;

use super::{CliError, GlobalOpts};
use crate::config::{Config, ConfigError, CONFIG_ENV, DEFAULT_CONFIG_PATH, DEFAULT_TOKEN_ENV};

/// Environment variable holding the admin API base URL.
pub const ADMIN_URL_ENV: &str = "TOLLGATE_ADMIN_URL";
/// Environment variable holding the admin token, unless the config names another.
pub const ADMIN_TOKEN_ENV: &str = DEFAULT_TOKEN_ENV;

/// What the CLI needs from a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token_env: String,
}

impl From<&Config> for AdminSettings {
    fn from(config: &Config) -> Self {
        AdminSettings {
            listen: config.admin.listen,
            token_env: config.admin.token_env.clone(),
        }
    }
}

/// Loads the admin settings of the config file at a path.
pub fn load_admin_settings(path: &Path) -> Result<AdminSettings, ConfigError> {
    Config::load(path).map(|c| AdminSettings::from(&c))
}

/// Where the base URL came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Flag,
    Env,
    Config(PathBuf),
}

/// An `http://` base URL: authority plus an optional path prefix, without a
/// trailing slash (`http://gw.internal/tollgate` → prefix `/tollgate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub authority: Authority,
    pub prefix: String,
    pub source: UrlSource,
}

impl BaseUrl {
    /// Parses a user-supplied base URL. Only `http://` is supported; no
    /// credentials, query or fragment.
    pub fn parse(text: &str, source: UrlSource) -> Result<BaseUrl, CliError> {
        let text = text.trim();
        let uri: Uri = text.parse().map_err(|e| {
            CliError::usage(format!(
                "invalid admin URL {text:?}: {e} (expected http://HOST:PORT)"
            ))
        })?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) if *s == Scheme::HTTPS => {
                return Err(CliError::usage(format!(
                    "admin URL {text:?}: https is not supported; the admin API speaks plain \
                     http (reach it over a private network, a port-forward or an SSH tunnel)"
                )))
            }
            Some(s) => {
                return Err(CliError::usage(format!(
                    "admin URL {text:?}: unsupported scheme {:?} (expected http://HOST:PORT)",
                    s.as_str()
                )))
            }
            None => {
                return Err(CliError::usage(format!(
                    "admin URL {text:?} has no scheme; did you mean \"http://{text}\"?"
                )))
            }
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(CliError::usage(format!(
                "admin URL {text:?} has no host (expected http://HOST:PORT)"
            )));
        };
        if authority.as_str().contains('@') {
            return Err(CliError::usage(
                "the admin URL must not contain credentials; put the admin token in \
                 $TOLLGATE_ADMIN_TOKEN",
            ));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(CliError::usage(format!(
                "admin URL {text:?}: a query or fragment is not allowed"
            )));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            authority,
            prefix,
            source,
        })
    }

    /// The base URL of the admin listener at `listen`: an unspecified address
    /// (0.0.0.0, [::]) is reached through loopback.
    pub fn from_listen(listen: SocketAddr, config_path: PathBuf) -> Result<BaseUrl, CliError> {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(ip, listen.port());
        let authority: Authority = addr.to_string().parse().map_err(|e| {
            CliError::usage(format!(
                "{}: [admin] listen {listen} is not usable as a URL: {e}",
                config_path.display()
            ))
        })?;
        Ok(BaseUrl {
            authority,
            prefix: String::new(),
            source: UrlSource::Config(config_path),
        })
    }

    /// The absolute URL of an API path such as `/admin/v1/clients`.
    pub fn join(&self, path: &str) -> Result<Uri, CliError> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .map_err(|e| CliError::failure(format!("cannot build the request URL: {e}")))
    }

    /// `http://host:port/prefix`, for messages.
    pub fn display(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }
}

/// The admin token: a sensitive header value that is never printed.
#[derive(Clone)]
pub struct Token {
    header: HeaderValue,
}

impl Token {
    fn from_env(var: &str, value: &str) -> Result<Token, CliError> {
        let mut header = HeaderValue::try_from(format!("Bearer {value}")).map_err(|_| {
            CliError::usage(format!(
                "the admin token in ${var} contains characters not allowed in an HTTP header"
            ))
        })?;
        header.set_sensitive(true);
        Ok(Token { header })
    }

    #[cfg(test)]
    pub fn for_tests(value: &str) -> Token {
        match Token::from_env("TEST_TOKEN", value) {
            Ok(t) => t,
            Err(e) => panic!("{}", e.message),
        }
    }

    /// The `Authorization` header value, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where to send admin requests, and the token to send (if any).
#[derive(Debug, Clone)]
pub struct Target {
    pub base: BaseUrl,
    pub token: Option<Token>,
}

/// Resolves the base URL and the token.
///
/// The config is loaded when the URL must come from it, or when one was named
/// (`--config` or `$TOLLGATE_CONFIG`), so that its `admin.token_env` applies.
/// A config that cannot be loaded is bad input (exit 2).
pub fn resolve(
    global: &GlobalOpts,
    env: &dyn Fn(&str) -> Option<String>,
    load: &dyn Fn(&Path) -> Result<AdminSettings, ConfigError>,
) -> Result<Target, CliError> {
    // Empty variables count as unset.
    let var = |name: &str| env(name).filter(|v| !v.is_empty());

    let named_config = global
        .config
        .clone()
        .or_else(|| var(CONFIG_ENV).map(PathBuf::from));
    let url = match &global.admin_url {
        Some(u) => Some(BaseUrl::parse(u, UrlSource::Flag)?),
        None => var(ADMIN_URL_ENV)
            .map(|u| BaseUrl::parse(&u, UrlSource::Env))
            .transpose()?,
    };

    let (base, settings) = match url {
        // The URL is known; a named config still decides the token variable.
        Some(url) => {
            let settings = match named_config {
                Some(path) => Some(load(&path).map_err(|e| CliError::usage(e.to_string()))?),
                None => None,
            };
            (url, settings)
        }
        // The URL comes from the config's [admin] listen.
        None => {
            let path = named_config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            let settings = load(&path).map_err(|e| {
                CliError::usage(format!(
                    "no admin URL: pass --admin-url, set ${ADMIN_URL_ENV}, or point --config \
                     at the server's config ({e})"
                ))
            })?;
            (BaseUrl::from_listen(settings.listen, path)?, Some(settings))
        }
    };

    let mut token_vars = Vec::with_capacity(2);
    if let Some(s) = &settings {
        token_vars.push(s.token_env.as_str());
    }
    token_vars.push(ADMIN_TOKEN_ENV);
    let token = token_vars
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)))
        .map(|(name, value)| Token::from_env(name, &value))
        .transpose()?;

    Ok(Target { base, token })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;

    fn opts(config: Option<&str>, admin_url: Option<&str>) -> GlobalOpts {
        GlobalOpts {
            config: config.map(PathBuf::from),
            admin_url: admin_url.map(String::from),
            json: false,
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn settings(listen: &str, token_env: &str) -> AdminSettings {
        AdminSettings {
            listen: listen.parse().expect("test address"),
            token_env: token_env.into(),
        }
    }

    fn no_config(path: &Path) -> Result<AdminSettings, ConfigError> {
        Err(ConfigError {
            path: path.to_owned(),
            problems: vec!["cannot read config file: No such file or directory".into()],
        })
    }

    fn resolved_url(t: &Target) -> String {
        t.base.display()
    }

    #[test]
    fn flag_beats_env_beats_config() {
        let env = env_of(&[(ADMIN_URL_ENV, "http://env:1")]);
        let load = |_: &Path| Ok(settings("10.0.0.1:9090", ADMIN_TOKEN_ENV));

        let t = resolve(&opts(None, Some("http://flag:2")), &env, &load).expect("flag");
        assert_eq!(resolved_url(&t), "http://flag:2");
        assert_eq!(t.base.source, UrlSource::Flag);

        let t = resolve(&opts(None, None), &env, &load).expect("env");
        assert_eq!(resolved_url(&t), "http://env:1");
        assert_eq!(t.base.source, UrlSource::Env);

        let t = resolve(&opts(None, None), &env_of(&[]), &load).expect("config");
        assert_eq!(resolved_url(&t), "http://10.0.0.1:9090");
        assert_eq!(
            t.base.source,
            UrlSource::Config(PathBuf::from(DEFAULT_CONFIG_PATH))
        );
    }

    #[test]
    fn config_path_comes_from_flag_then_env_then_default() {
        let seen = std::cell::RefCell::new(Vec::new());
        let load = |p: &Path| {
            seen.borrow_mut().push(p.to_owned());
            Ok(settings("127.0.0.1:9090", ADMIN_TOKEN_ENV))
        };
        let env = env_of(&[(CONFIG_ENV, "/etc/env.toml")]);
        resolve(&opts(Some("/etc/flag.toml"), None), &env, &load).expect("flag");
        resolve(&opts(None, None), &env, &load).expect("env");
        resolve(&opts(None, None), &env_of(&[]), &load).expect("default");
        assert_eq!(
            *seen.borrow(),
            vec![
                PathBuf::from("/etc/flag.toml"),
                PathBuf::from("/etc/env.toml"),
                PathBuf::from(DEFAULT_CONFIG_PATH),
            ]
        );
    }

    #[test]
    fn unspecified_listen_addresses_become_loopback() {
        let cases = [
            ("0.0.0.0:9090", "http://127.0.0.1:9090"),
            ("[::]:9091", "http://[::1]:9091"),
            ("192.0.2.7:9092", "http://192.0.2.7:9092"),
            ("[2001:db8::1]:9093", "http://[2001:db8::1]:9093"),
        ];
        for (listen, want) in cases {
            let load = |_: &Path| Ok(settings(listen, ADMIN_TOKEN_ENV));
            let t = resolve(&opts(None, None), &env_of(&[]), &load).expect(listen);
            assert_eq!(resolved_url(&t), want, "{listen}");
        }
    }

    #[test]
    fn config_is_not_read_when_a_url_is_given_and_none_is_named() {
        let calls = Cell::new(0);
        let load = |p: &Path| {
            calls.set(calls.get() + 1);
            no_config(p)
        };
        resolve(&opts(None, Some("http://127.0.0.1:1")), &env_of(&[]), &load).expect("flag");
        let env = env_of(&[(ADMIN_URL_ENV, "http://127.0.0.1:1")]);
        resolve(&opts(None, None), &env, &load).expect("env");
        assert_eq!(calls.get(), 0);
    }

    #[test]
    fn a_missing_config_without_a_url_is_bad_usage_with_a_hint() {
        let err = resolve(&opts(None, None), &env_of(&[]), &no_config).expect_err("no url");
        assert_eq!(err.status, 2);
        assert!(err.message.contains("--admin-url"), "{}", err.message);
        assert!(err.message.contains(ADMIN_URL_ENV), "{}", err.message);
        assert!(err.message.contains("tollgate.toml"), "{}", err.message);
    }

    #[test]
    fn a_named_config_that_fails_is_bad_usage_even_with_a_url() {
        let err = resolve(
            &opts(Some("/nope.toml"), Some("http://127.0.0.1:1")),
            &env_of(&[]),
            &no_config,
        )
        .expect_err("bad config");
        assert_eq!(err.status, 2);
        assert!(err.message.contains("/nope.toml"), "{}", err.message);
    }

    #[test]
    fn token_comes_from_the_configured_variable_then_the_default() {
        let load = |_: &Path| Ok(settings("127.0.0.1:9090", "MY_ADMIN_TOKEN"));
        let both = env_of(&[
            ("MY_ADMIN_TOKEN", "from-config"),
            (ADMIN_TOKEN_ENV, "default"),
        ]);
        let t = resolve(&opts(None, None), &both, &load).expect("token");
        let header = t.token.expect("a token").authorization().clone();
        assert_eq!(header, "Bearer from-config");
        assert!(header.is_sensitive());

        let only_default = env_of(&[(ADMIN_TOKEN_ENV, "default")]);
        let t = resolve(&opts(None, None), &only_default, &load).expect("token");
        assert_eq!(t.token.expect("a token").authorization(), "Bearer default");

        let none = env_of(&[(ADMIN_TOKEN_ENV, "")]);
        let t = resolve(&opts(None, None), &none, &load).expect("no token");
        assert!(t.token.is_none());
    }

    #[test]
    fn a_bad_token_is_reported_without_its_value() {
        let env = env_of(&[(ADMIN_TOKEN_ENV, "s3cret\nvalue")]);
        let err = resolve(&opts(None, Some("http://127.0.0.1:1")), &env, &no_config)
            .expect_err("bad token");
        assert_eq!(err.status, 2);
        assert!(err.message.contains(ADMIN_TOKEN_ENV));
        assert!(!err.message.contains("s3cret"));
    }

    #[test]
    fn token_debug_is_redacted() {
        let env = env_of(&[(ADMIN_TOKEN_ENV, "s3cret")]);
        let t = resolve(&opts(None, Some("http://127.0.0.1:1")), &env, &no_config).expect("ok");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn base_urls() {
        let ok = [
            ("http://127.0.0.1:9090", "127.0.0.1:9090", ""),
            ("http://127.0.0.1:9090/", "127.0.0.1:9090", ""),
            ("http://gw.internal/tollgate/", "gw.internal", "/tollgate"),
            (" http://[::1]:9090 ", "[::1]:9090", ""),
        ];
        for (text, authority, prefix) in ok {
            let b = BaseUrl::parse(text, UrlSource::Flag).expect(text);
            assert_eq!(b.authority.as_str(), authority, "{text}");
            assert_eq!(b.prefix, prefix, "{text}");
        }
        let bad = [
            ("https://admin:9090", "https is not supported"),
            ("ftp://admin", "unsupported scheme"),
            ("127.0.0.1:9090", "did you mean \"http://127.0.0.1:9090\""),
            ("http://user:pw@admin:9090", "must not contain credentials"),
            ("http://admin:9090/?x=1", "query"),
            ("http://", "invalid admin URL"),
            ("not a url", "invalid admin URL"),
        ];
        for (text, want) in bad {
            let err = BaseUrl::parse(text, UrlSource::Flag).expect_err(text);
            assert_eq!(err.status, 2, "{text}");
            assert!(err.message.contains(want), "{text}: {}", err.message);
            assert!(!err.message.contains("pw@"), "{text}: {}", err.message);
        }
    }

    #[test]
    fn join_appends_the_api_path_to_the_prefix() {
        let b = BaseUrl::parse("http://gw.internal:80/tollgate", UrlSource::Env).expect("url");
        assert_eq!(
            b.join("/admin/v1/clients").expect("uri").to_string(),
            "http://gw.internal:80/tollgate/admin/v1/clients"
        );
    }
}
