//! Property tests of path normalisation and route matching.
//!
//! tollgate decides a request's route on `normalize(path)` and forwards that
//! same string. The properties: normalisation is idempotent; a normalised
//! path has no dot segments, no empty segments, no encoded unreserved
//! characters and nothing ambiguous; the decision on the checked path equals
//! the decision on the forwarded path, also as a server that decodes
//! everything, cuts at `?`/`#`, strips `;params`, treats `\` as `/` and
//! resolves dot segments would read it. Inputs are built from the hostile
//! spellings real gateways have fallen to, plus arbitrary text.

use http::Method;
use proptest::prelude::*;
use tollgate::config::Route;
use tollgate::routes::{normalize, RouteTable};

fn table() -> RouteTable {
    let route = |path: &str, methods: Option<Vec<Method>>, scope: &str| Route {
        path: path.into(),
        methods,
        scope: Some(scope.into()),
        cost: 1,
        shadow: None,
    };
    RouteTable::new(vec![
        route(
            "/api/v1/charge_points",
            Some(vec![Method::GET]),
            "read:charge_points",
        ),
        route("/api/v1/charge_points", None, "write:charge_points"),
        route("/billing", None, "billing"),
        route("/a/b", Some(vec![Method::GET]), "read:ab"),
        route("/api", Some(vec![Method::POST]), "write:api"),
    ])
}

/// Pieces a segment is made of: names of routes, dot segments in every
/// spelling, encoded separators, double encoding, parameters, escapes.
const PIECES: &[&str] = &[
    "api",
    "v1",
    "charge_points",
    "billing",
    "a",
    "b",
    "x",
    ".",
    "..",
    "",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2E",
    "%62illing",
    "%61",
    "%63harge_points",
    "charge%5Fpoints",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "\\",
    "%00",
    "%0a",
    "%252e",
    "%252F",
    "%25",
    "%",
    "%G1",
    ";x=1",
    ";",
    "%3B",
    "%3b",
    "%3F",
    "%23",
    "%20",
    "%7E",
    "~",
    "%C3%A9",
    "é",
    "%3D",
    "=",
    "%2B",
];

fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 1..4).prop_map(|p| p.concat())
}

/// Paths made of hostile pieces, sometimes with a trailing slash or a
/// doubled leading one.
fn hostile_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..7),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, trailing, double)| {
            let mut p = if double {
                "//".to_string()
            } else {
                "/".to_string()
            };
            p.push_str(&segs.join("/"));
            if trailing {
                p.push('/');
            }
            p
        })
}

/// Arbitrary text after a slash.
fn arbitrary_path() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..40).prop_map(|c| format!("/{}", String::from_iter(c)))
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![3 => hostile_path(), 1 => arbitrary_path()]
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(h: u8) -> u8 {
    (h as char).to_digit(16).map_or(0, |d| d as u8)
}

/// How a lenient server reads a path: cut at `?` or `#` once decoded,
/// `\` as `/`, `;params` stripped, dot segments resolved, empty ones dropped.
fn lenient_server_view(path: &str) -> String {
    let b = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            decoded.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let text = text.split(['?', '#']).next().unwrap_or("");
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn normalisation_is_idempotent(p in any_path()) {
        if let Ok(n) = normalize(&p) {
            prop_assert_eq!(normalize(&n), Ok(n.clone()), "{:?}", p);
        }
    }

    #[test]
    fn normalised_paths_are_plain(p in any_path()) {
        let Ok(n) = normalize(&p) else { return Ok(()) };
        prop_assert!(n.starts_with('/'), "{:?} -> {:?}", p, n);
        prop_assert!(!n.contains("//"), "{:?} -> {:?}", p, n);
        prop_assert!(!n.contains('\\'), "{:?} -> {:?}", p, n);
        prop_assert!(!n.bytes().any(|c| c.is_ascii_control()), "{:?} -> {:?}", p, n);
        for seg in n.split('/') {
            prop_assert!(seg != "." && seg != "..", "{:?} -> {:?}", p, n);
        }
        let b = n.as_bytes();
        for (i, _) in n.match_indices('%') {
            let (h, l) = (b[i + 1], b[i + 2]);
            prop_assert!(h.is_ascii_hexdigit() && l.is_ascii_hexdigit(), "{:?} -> {:?}", p, n);
            prop_assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase(), "{:?} -> {:?}", p, n);
            let v = hex(h) << 4 | hex(l);
            prop_assert!(!is_unreserved(v), "encoded unreserved in {:?} -> {:?}", p, n);
            prop_assert!(
                !matches!(v, b'/' | b'\\' | b'%' | b';' | b'?' | b'#') && !v.is_ascii_control(),
                "ambiguous escape in {:?} -> {:?}", p, n
            );
        }
    }

    /// The decision on the checked path equals the decision on the
    /// forwarded path, and on that path as a lenient upstream reads it.
    #[test]
    fn decision_on_checked_path_is_decision_on_forwarded_path(p in any_path()) {
        let t = table();
        let Ok(checked) = normalize(&p) else { return Ok(()) };
        let forwarded = normalize(&checked).expect("normal paths normalise");
        let upstream = lenient_server_view(&forwarded);
        for m in &METHODS {
            let decided = t.requirement(m, &checked);
            prop_assert_eq!(decided, t.requirement(m, &forwarded), "{} {:?}", m, p);
            prop_assert_eq!(
                decided,
                t.requirement(m, &upstream),
                "{} {:?}: checked {:?}, upstream reads {:?}", m, p, checked, upstream
            );
        }
    }
}

#[test]
fn the_lenient_server_model_is_lenient() {
    // Sanity of the model the property compares against.
    assert_eq!(lenient_server_view("/a/%2e%2e/b"), "/b");
    assert_eq!(lenient_server_view("/a%2Fb"), "/a/b");
    assert_eq!(lenient_server_view("/a;x/b%3Fc"), "/a/b");
    assert_eq!(lenient_server_view("/a\\..\\b"), "/b");
}
