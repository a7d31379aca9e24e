//! Value checks, each returning the message for a bad value: listener
//! clashes, environment variable names, upstream and Redis URLs, scopes,
//! route methods and paths, route coverage. Pure functions of their
//! arguments; [`super::check`] decides which key a message belongs to.

use std::net::SocketAddr;

use http::uri::Authority;
use redis::IntoConnectionInfo;

use super::{Route, MAX_SCOPE_LEN};

/// Two listeners that cannot both bind: same non-zero port, and the same
/// address or either one a wildcard.
pub(super) fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `http[s]://host[:port][/base]` → TLS or not, authority, base path without a trailing slash.
pub(super) fn parse_upstream_url(url: &str) -> Result<(bool, Authority, String), String> {
    if url.contains('#') {
        return Err(format!("{url:?} has a fragment (\"#...\"); remove it"));
    }
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("{url:?} is not a valid URL ({e}); expected e.g. \"http://127.0.0.1:3000\"")
    })?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "scheme must be \"http\" or \"https\", not {other:?}"
            ))
        }
        None => {
            return Err(format!(
                "{url:?} is not an absolute URL; expected e.g. \"http://127.0.0.1:3000\""
            ))
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("{url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (user:password@)".to_owned());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    // `Authority::port_u16` cannot tell "no port" from "port 99999".
    let port = authority
        .as_str()
        .strip_prefix(host)
        .and_then(|rest| rest.strip_prefix(':'));
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|n| n != 0) {
            return Err(format!("port {port:?} is not a port number (1-65535)"));
        }
    }
    if uri.query().is_some() {
        return Err(format!("{url:?} has a query (\"?...\"); remove it"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((tls, authority, base_path))
}

/// A `redis://` or `rediss://` URL the redis client accepts. Messages never
/// repeat the URL: it may hold a password.
pub(super) fn check_redis_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(
            "must be a redis:// or rediss:// URL, e.g. \"redis://127.0.0.1:6379/0\"".to_owned(),
        );
    }
    let Some(parsed) = redis::parse_redis_url(url) else {
        return Err("is not a valid URL; expected e.g. \"redis://127.0.0.1:6379/0\"".to_owned());
    };
    if parsed.fragment().is_some() {
        // The redis crate reads `#insecure` as "skip certificate verification".
        return Err(
            "has a fragment (\"#...\"); remove it: there is no \"#insecure\", \
                    certificates are always verified"
                .to_owned(),
        );
    }
    parsed.into_connection_info().map(drop).map_err(|e| {
        let text = e.to_string();
        // RedisError's Display appends " - <kind>"; the description is enough.
        let description = text.split(" - ").next().unwrap_or_default();
        format!("cannot be used: {description}")
    })
}

/// `^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.*-]+)*$`, at most [`MAX_SCOPE_LEN`] bytes.
pub(super) fn check_scope(scope: &str) -> Result<(), String> {
    let shape = "a scope is letters, digits, _ . - and : separators \
                 (* allowed after the first :), like \"read:charge_points\"";
    if scope.is_empty() {
        return Err(format!("empty scope; {shape}"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(format!(
            "scope {scope:?} is longer than {MAX_SCOPE_LEN} characters"
        ));
    }
    let mut parts = scope.split(':');
    let head_ok = parts.next().is_some_and(|head| {
        !head.is_empty()
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    let tail_ok = parts.all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'))
    });
    if head_ok && tail_ok {
        Ok(())
    } else {
        Err(format!("invalid scope {scope:?}: {shape}"))
    }
}

/// The methods a route may name.
pub(super) const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

pub(super) fn parse_method(method: &str) -> Result<http::Method, String> {
    let upper = method.to_ascii_uppercase();
    if !KNOWN_METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "unknown HTTP method {method:?} (known: {})",
            KNOWN_METHODS.join(", ")
        ));
    }
    http::Method::from_bytes(upper.as_bytes()).map_err(|e| format!("{method:?}: {e}"))
}

/// Collapses duplicate slashes and strips a trailing one; refuses what a
/// request path could not literally contain, or would be normalised away.
pub(super) fn normalize_route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with \"/\""));
    }
    for c in path.chars() {
        let why = match c {
            '%' => "percent-encoding (\"%\") is not supported; write the decoded character",
            '?' => "a route matches the path only; remove the query (\"?...\")",
            '#' => "a route matches the path only; remove the fragment (\"#...\")",
            c if c.is_whitespace() || c.is_control() => {
                "whitespace and control characters are not allowed"
            }
            c if c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c) => continue,
            _ => "only letters, digits and -._~!$&'()*+,;=:@ may appear in a path",
        };
        return Err(format!("{path:?}: {why}"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!(
            "{path:?}: \".\" and \"..\" segments are not allowed"
        ));
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Does `earlier` match every request `later` would?
pub(super) fn covers(earlier: &Route, later: &Route) -> bool {
    let prefix = earlier.path == "/"
        || later.path == earlier.path
        || later
            .path
            .strip_prefix(earlier.path.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    prefix && methods
}

pub(super) fn describe_methods(methods: &Option<Vec<http::Method>>) -> String {
    match methods {
        None => "any method".to_owned(),
        Some(list) => list
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_are_normalised() {
        for (given, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/api/", "/api"),
            ("/api//v1///x/", "/api/v1/x"),
            ("/a:b@c/~d/e.f", "/a:b@c/~d/e.f"),
        ] {
            assert_eq!(normalize_route_path(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn bad_route_paths_are_refused() {
        for bad in [
            "", "api", "/a/../b", "/a/./b", "/..", "/a%20b", "/a?b", "/a#b", "/a b", "/a\tb", "/é",
            "/a\"b", "/a\\b",
        ] {
            assert!(normalize_route_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes() {
        for ok in [
            "read",
            "read:charge_points",
            "a.b-c_d:e*:f",
            &"a".repeat(64),
        ] {
            assert_eq!(check_scope(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ":a",
            "a:",
            "a::b",
            "*:a",
            "a b",
            "a\n",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "TOLLGATE_ADMIN_TOKEN", "a1"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B"] {
            assert!(!valid_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn upstream_urls() {
        let ok = |url: &str| parse_upstream_url(url).map(|(_, a, p)| (a.to_string(), p));
        assert_eq!(ok("http://h"), Ok(("h".into(), "".into())));
        assert_eq!(ok("https://h:8443/b"), Ok(("h:8443".into(), "/b".into())));
        assert!(matches!(parse_upstream_url("https://h"), Ok((true, _, _))));
        assert!(matches!(parse_upstream_url("http://h"), Ok((false, _, _))));
        assert_eq!(ok("http://h:3000/"), Ok(("h:3000".into(), "".into())));
        assert_eq!(ok("http://h/base//"), Ok(("h".into(), "/base".into())));
        assert_eq!(ok("http://[::1]:8/b"), Ok(("[::1]:8".into(), "/b".into())));
        for bad in [
            "ftp://h",
            "h:3000",
            "/x",
            "http://h:0",
            "http://h:65536",
            "http://u:p@h",
            "http://h/?q",
            "http://h/#f",
            "http://h b",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls() {
        assert_eq!(check_redis_url("redis://127.0.0.1:6379/0"), Ok(()));
        assert_eq!(check_redis_url("redis://:pw@redis"), Ok(()));
        for bad in [
            "http://h",
            "127.0.0.1:6379",
            "redis://h/notadb",
            "redis://0.0.0.0",
            "unix:///tmp/r.sock",
        ] {
            assert!(check_redis_url(bad).is_err(), "{bad}");
        }
        // Messages never repeat the URL, which may hold a password.
        let err = check_redis_url("redis://:hunter2@h/x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn listener_clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listeners_clash(a("0.0.0.0:80"), a("0.0.0.0:80")));
        assert!(listeners_clash(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(listeners_clash(a("[::1]:80"), a("[::]:80")));
        assert!(!listeners_clash(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!listeners_clash(a("0.0.0.0:80"), a("0.0.0.0:81")));
        assert!(!listeners_clash(a("0.0.0.0:0"), a("0.0.0.0:0")));
    }

    #[test]
    fn route_coverage() {
        let r = |path: &str, methods: Option<&[&str]>| Route {
            path: path.into(),
            methods: methods.map(|ms| ms.iter().map(|m| parse_method(m).unwrap()).collect()),
            scope: None,
            cost: 1,
            shadow: None,
        };
        assert!(covers(&r("/", None), &r("/a", Some(&["GET"]))));
        assert!(covers(&r("/a", None), &r("/a/b", None)));
        assert!(covers(
            &r("/a", Some(&["GET", "POST"])),
            &r("/a", Some(&["POST"]))
        ));
        assert!(!covers(&r("/a", None), &r("/ab", None)));
        assert!(!covers(&r("/a/b", None), &r("/a", None)));
        assert!(!covers(&r("/a", Some(&["GET"])), &r("/a", None)));
        assert!(!covers(
            &r("/a", Some(&["GET"])),
            &r("/a", Some(&["GET", "PUT"]))
        ));
    }
}
