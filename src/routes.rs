//! Path normalisation and route matching.
//!
//! Routes are matched on one normalised path, and that same path is what the
//! upstream receives: tollgate forwards exactly the path it authorised. The
//! normaliser decodes percent-encoded unreserved characters, resolves `.` and
//! `..` segments and collapses empty segments; it refuses (400) what could
//! mean different paths to different servers: encoded `/`, `\\`, `%` (double
//! encoding), `;`, `?`, `#` and control characters, malformed escapes, raw
//! backslashes and control characters, dot or empty segments with
//! parameters (`..;/`), and `..` above the root. What is left
//! decodes, in any server, to a path with the same segments, so the route
//! decided here is the route the upstream serves (`tests/routes_prop.rs`).

use std::borrow::Cow;

use http::Method;

use crate::config::Route;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`/...`).
    NotOriginForm,
    /// Something whose meaning differs between servers (encoded separators, NUL, `\`).
    Ambiguous,
    /// A bad percent-escape.
    BadEscape,
    /// `..` above the root.
    AboveRoot,
}

/// Normalises a request path (without query). Idempotent. A path that is
/// already normal (the common case) is returned borrowed, without copying.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        Ok(Cow::Borrowed(path))
    } else {
        normalize_slow(path).map(Cow::Owned)
    }
}

/// Is `path` its own normal form: exactly the paths `normalize_slow` maps
/// to themselves (a unit test holds the two together). Origin form; no
/// empty segment but a final one; no `.` or `..` segment; no segment whose
/// name before `;` is empty, `.` or `..`; no `\\` or control character;
/// every `%` an upper-case escape of something that stays encoded. One
/// pass over the bytes.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // The current segment starts at `start`; its name ends at its first `;`.
    let mut start = 1;
    let mut name_end = None;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'/' => {
                if !name_is_normal(&b[start..name_end.unwrap_or(i)]) {
                    return false;
                }
                start = i + 1;
                name_end = None;
                i += 1;
            }
            b';' => {
                name_end = name_end.or(Some(i));
                i += 1;
            }
            b'%' => match b.get(i + 1..i + 3) {
                Some(&[h, l]) if is_upper_hex(h) && is_upper_hex(l) => {
                    let v = hex_value(h) << 4 | hex_value(l);
                    if is_unreserved(v) || is_ambiguous_escape(v) {
                        return false;
                    }
                    i += 3;
                }
                _ => return false,
            },
            b'\\' => return false,
            c if c.is_ascii_control() => return false,
            _ => i += 1,
        }
    }
    // The last segment may be empty: `/` itself, or a trailing slash.
    start == b.len() || name_is_normal(&b[start..name_end.unwrap_or(b.len())])
}

/// A segment name (before any `;`) that is kept: not empty, `.` or `..`.
fn name_is_normal(name: &[u8]) -> bool {
    !matches!(name, b"" | b"." | b"..")
}

fn is_upper_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'A'..=b'F').contains(&c)
}

/// Decoded by the normaliser (and by every server).
fn is_unreserved(v: u8) -> bool {
    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')
}

/// Escapes refused: read as structure by a server that decodes first.
fn is_ambiguous_escape(v: u8) -> bool {
    matches!(v, b'/' | b'\\' | b'%' | b';' | b'?' | b'#') || v.is_ascii_control()
}

/// The full normaliser: decodes, resolves and rebuilds the path.
fn normalize_slow(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<String> = Vec::new();
    let ends_with_slash = path.len() > 1 && path.ends_with('/');
    for raw in path.split('/') {
        let seg = decode_segment(raw)?;
        // `..;x` is `..` to servers that drop parameters first (Tomcat),
        // and a plain name to others; `;x` alone is an empty segment to some.
        if let Some((name, _)) = seg.split_once(';') {
            if matches!(name, "" | "." | "..") {
                return Err(PathError::Ambiguous);
            }
        }
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || (ends_with_slash && !out.is_empty()) {
        s.push('/');
    }
    Ok(s)
}

/// Decodes `%XX` of unreserved characters, upper-cases the other escapes, and
/// refuses escapes that a server decoding before it parses could read as
/// structure: `/`, `\`, `%` itself (double encoding), `;` (parameters), `?`
/// and `#` (end of path), and control characters.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let v = match b.get(i + 1..i + 3) {
                    Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                        hex_value(h) << 4 | hex_value(l)
                    }
                    _ => return Err(PathError::BadEscape),
                };
                if is_unreserved(v) {
                    out.push(v);
                } else if is_ambiguous_escape(v) {
                    return Err(PathError::Ambiguous);
                } else {
                    out.extend_from_slice(format!("%{v:02X}").as_bytes());
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Ambiguous),
            c if c.is_ascii_control() => return Err(PathError::Ambiguous),
            c => {
                // Raw bytes (UTF-8 included) are kept as they are.
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII was added to a copy of valid UTF-8, split at ASCII bytes.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn hex_value(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        b'a'..=b'f' => h - b'a' + 10,
        _ => h - b'A' + 10,
    }
}

/// What a request needs, from the first route it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// No route matched: a valid key suffices.
    ValidKey,
    /// A route matched; it may name a scope.
    Route {
        index: usize,
        scope: Option<&'a str>,
    },
}

/// The routes of the config, in order: first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable { routes }
    }

    /// The requirement for `method` on a normalised `path`. Matrix parameters
    /// (`;x=1`) are ignored for matching, as servers that honour them do, so
    /// `/private;x` needs what `/private` needs.
    pub fn requirement(&self, method: &Method, path: &str) -> Requirement<'_> {
        let stripped;
        let path = if path.contains(';') {
            stripped = strip_params(path);
            stripped.as_str()
        } else {
            path
        };
        for (index, r) in self.routes.iter().enumerate() {
            if prefix_matches(&r.path, path) && method_matches(r.methods.as_deref(), method) {
                return Requirement::Route {
                    index,
                    scope: r.scope.as_deref(),
                };
            }
        }
        Requirement::ValidKey
    }
}

/// The path with every segment's `;...` parameters removed.
fn strip_params(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// Prefix match on segment boundaries.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// HEAD is served by whatever serves GET, so a GET route covers HEAD too.
fn method_matches(methods: Option<&[Method]>, method: &Method) -> bool {
    match methods {
        None => true,
        Some(ms) => ms
            .iter()
            .any(|m| m == method || (*method == Method::HEAD && *m == Method::GET)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("/", "/"),
            ("//", "/"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/x/../b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/%62illing", "/billing"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/%7euser", "/a/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%3db", "/a%3Db"),
            ("/%c3%a9", "/%C3%A9"),
            ("/é/x", "/é/x"),
            ("/a/b;x=1", "/a/b;x=1"),
            // Raw UTF-8 is kept as it is (a fuzzing finding: it was mangled).
            ("/caf\u{e9}/\u{671}x", "/caf\u{e9}/\u{671}x"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
            assert_eq!(normalize(want).as_deref(), Ok(want), "idempotent {want}");
        }
        let bad = [
            ("a", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("/a%2Fb", PathError::Ambiguous),
            ("/a%5cb", PathError::Ambiguous),
            ("/a\\b", PathError::Ambiguous),
            ("/a%00", PathError::Ambiguous),
            ("/a%252e", PathError::Ambiguous),
            ("/a%3bb", PathError::Ambiguous),
            ("/a/..;/b", PathError::Ambiguous),
            ("/a/.;x/b", PathError::Ambiguous),
            ("/a/;x/b", PathError::Ambiguous),
            ("/a/%2e%2e;/b", PathError::Ambiguous),
            ("/a%3Fb", PathError::Ambiguous),
            ("/a%23b", PathError::Ambiguous),
            ("/a%0a", PathError::Ambiguous),
            ("/a%7F", PathError::Ambiguous),
            ("/a\tb", PathError::Ambiguous),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%+1", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
        ];
        for (input, want) in bad {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }

    /// The fast path and the full normaliser agree: `normalize` answers
    /// what `normalize_slow` answers, and every path the normaliser produces
    /// is recognised as normal (so normal paths never take the slow path).
    fn assert_paths_agree(p: &str) {
        let slow = normalize_slow(p);
        assert_eq!(normalize(p).map(Cow::into_owned), slow, "{p:?}");
        if is_normal(p) {
            assert_eq!(slow.as_deref(), Ok(p), "fast path taken for {p:?}");
        }
        if let Ok(n) = &slow {
            assert!(
                is_normal(n),
                "{p:?} normalises to {n:?}, not seen as normal"
            );
        }
    }

    /// Segment pieces: names, dot segments in every spelling, escapes of
    /// every class in both cases, parameters, raw oddities.
    const PIECES: &[&str] = &[
        "api", "a", ".", "..", "", "%2e", "%2E", "%2e%2e", ".%2E", "%62", "%61", "%2F", "%5C",
        "%5c", "\\", "%00", "%0a", "%7F", "%252e", "%25", "%", "%G1", "%2", ";x=1", ";", "%3B",
        "%3F", "%23", "%20", "%3d", "%3D", "%7E", "%7e", "~", "%C3%A9", "%c3%a9", "é", "=", "\t",
        "\u{7f}", "\u{80}", "x;", ".;", "..;y",
    ];

    #[test]
    fn fast_path_and_slow_path_agree_on_a_corpus() {
        let mut corpus: Vec<String> = vec![
            String::new(),
            "/".into(),
            "//".into(),
            "a".into(),
            "*".into(),
            "/api/v1/charge_points/CP-1234/sessions".into(),
            "/api//v1/./charge_points/x/../%43P-1234/%7euser".into(),
        ];
        // Every path of up to three segments of one piece, with and without
        // a trailing slash, and every segment of two pieces.
        for a in PIECES {
            corpus.push(format!("/{a}"));
            for b in PIECES {
                corpus.push(format!("/{a}{b}"));
                corpus.push(format!("/{a}/{b}"));
                for c in PIECES {
                    corpus.push(format!("/{a}/{b}/{c}"));
                    corpus.push(format!("/{a}/{b}/{c}/"));
                }
            }
        }
        for p in &corpus {
            assert_paths_agree(p);
        }
        // And the common case is borrowed.
        let clean = "/api/v1/charge_points/CP-1234/sessions;v=2/%C3%A9/";
        assert!(matches!(normalize(clean), Ok(Cow::Borrowed(p)) if p == clean));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_path_and_slow_path_agree_on_arbitrary_text(
            c in proptest::collection::vec(proptest::prelude::any::<char>(), 0..24),
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..10),
        ) {
            assert_paths_agree(&format!("/{}", String::from_iter(c)));
            assert_paths_agree(&format!("/{}", pieces.join("/")));
            assert_paths_agree(&format!("/{}", pieces.concat()));
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            Route {
                path: "/api/v1/charge_points".into(),
                methods: Some(vec![Method::GET]),
                scope: Some("read:charge_points".into()),
                cost: 1,
                shadow: None,
            },
            Route {
                path: "/api/v1/charge_points".into(),
                methods: None,
                scope: Some("write:charge_points".into()),
                cost: 1,
                shadow: None,
            },
        ])
    }

    #[test]
    fn first_match_wins_on_segment_boundaries() {
        let t = table();
        let scope = |m: Method, p: &str| match t.requirement(&m, p) {
            Requirement::Route { scope, .. } => scope.map(str::to_owned),
            Requirement::ValidKey => None,
        };
        assert_eq!(
            scope(Method::GET, "/api/v1/charge_points").as_deref(),
            Some("read:charge_points")
        );
        assert_eq!(
            scope(Method::HEAD, "/api/v1/charge_points/7").as_deref(),
            Some("read:charge_points")
        );
        assert_eq!(
            scope(Method::POST, "/api/v1/charge_points").as_deref(),
            Some("write:charge_points")
        );
        assert_eq!(
            t.requirement(&Method::GET, "/api/v1/charge_pointsX"),
            Requirement::ValidKey
        );
        assert_eq!(
            t.requirement(&Method::GET, "/api/v1"),
            Requirement::ValidKey
        );
        assert_eq!(
            scope(Method::GET, "/api/v1/charge_points;x=1").as_deref(),
            Some("read:charge_points")
        );
        assert_eq!(
            scope(Method::GET, "/api;v/v1/charge_points/2").as_deref(),
            Some("read:charge_points")
        );
    }
}
