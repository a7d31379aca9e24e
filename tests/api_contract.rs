//! The API fixes found by fuzzing both listeners with Schemathesis, each
//! against the real binary (memory store) and a real upstream: `Allow` on
//! every 405, HEAD on the probes, one credential in both headers, control
//! characters named, 415 for a body that is not JSON, 409 for a duplicate
//! client, the malformed-path 400 before anything is read, and the OpenAPI
//! document served by the admin listener.

mod common;

use common::admin::{call, create_client, create_key};
use common::http::{Http, Reply};
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use http::Method;
use serde_json::json;

const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token-5f2c");
const KEYS: &str = "/api/v1/org/api-keys";
const READ_KEYS: &str = "read:api_keys";
const WRITE_KEYS: &str = "write:api_keys";

struct Env {
    upstream: Upstream,
    tg: Tollgate,
    http: Http,
}

impl Env {
    async fn new() -> Env {
        let upstream = Upstream::start().await;
        let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), ""));
        Env {
            upstream,
            tg,
            http: Http::default(),
        }
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut h = vec![AUTH];
        h.extend_from_slice(headers);
        self.http
            .send(method, &self.tg.admin_url(path), &h, body.to_owned())
            .await
    }

    async fn public(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.http
            .send(method, &self.tg.url(path), headers, body.to_owned())
            .await
    }
}

fn assert_405(r: &Reply, allow: &str, what: &str) {
    assert_eq!(r.status, 405, "{what}: {:?}", r.body);
    assert_eq!(r.code(), "method_not_allowed", "{what}");
    assert_eq!(r.header("allow"), Some(allow), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_405_carries_allow_on_both_listeners() {
    let env = Env::new().await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (key_id, key) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS]).await;

    let admin: [(Method, String, &str); 9] = [
        (Method::POST, "/healthz".into(), "GET, HEAD"),
        (Method::DELETE, "/readyz".into(), "GET, HEAD"),
        (Method::PUT, "/metrics".into(), "GET, HEAD"),
        (Method::PUT, "/admin/v1/clients".into(), "GET, HEAD, POST"),
        (
            Method::PUT,
            "/admin/v1/clients/acme".into(),
            "GET, HEAD, PATCH",
        ),
        (
            Method::TRACE,
            "/admin/v1/clients/acme/keys".into(),
            "GET, HEAD, POST",
        ),
        (
            Method::POST,
            "/admin/v1/clients/acme/usage".into(),
            "GET, HEAD",
        ),
        (Method::GET, format!("/admin/v1/keys/{key_id}"), "DELETE"),
        (
            Method::GET,
            format!("/admin/v1/keys/{key_id}/rotate"),
            "POST",
        ),
    ];
    for (method, path, allow) in admin {
        let r = env.admin(method.clone(), &path, &[], "").await;
        assert_405(&r, allow, &format!("{method} {path}"));
    }
    let public: [(Method, String, &str); 4] = [
        (Method::TRACE, KEYS.into(), "GET, HEAD, POST"),
        (Method::GET, format!("{KEYS}/{key_id}"), "DELETE"),
        (Method::GET, format!("{KEYS}/{key_id}/rotate"), "POST"),
        (Method::POST, "/api/v1/client/usage".into(), "GET, HEAD"),
    ];
    for (method, path, allow) in public {
        let r = env
            .public(method.clone(), &path, &[("x-api-key", &key)], "")
            .await;
        assert_405(&r, allow, &format!("{method} {path}"));
        // Still a response to a valid key: the rate-limit headers ride along.
        assert!(r.header("x-ratelimit-limit").is_some(), "{method} {path}");
    }
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_head() {
    let env = Env::new().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = env
            .http
            .send(Method::HEAD, &env.tg.admin_url(path), &[], "")
            .await;
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path} has no body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_in_both_headers_is_one_credential_whatever_the_spacing() {
    let env = Env::new().await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, key) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let bearer = format!("Bearer  {key}");
    let r = env
        .public(
            Method::GET,
            KEYS,
            &[("x-api-key", &key), ("authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Two different keys are still refused as ambiguous.
    let (_, other) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let bearer = format!("Bearer {other}");
    let r = env
        .public(
            Method::GET,
            KEYS,
            &[("x-api-key", &key), ("authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_names_are_refused_by_name() {
    let env = Env::new().await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let json = [("content-type", "application/json")];
    let r = env
        .admin(
            Method::PATCH,
            "/admin/v1/clients/acme",
            &json,
            r#"{"name": "Acme\u000fCorp"}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.code(), "bad_request");
    assert_eq!(
        r.json()["error"],
        "\"name\": must not contain control characters (U+000F at character 5)."
    );
    let (_, key) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS]).await;
    let r = env
        .public(
            Method::POST,
            KEYS,
            &[("x-api-key", &key), json[0]],
            r#"{"name": "ci\nkey", "scopes": ["read:api_keys"]}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("must not contain control characters (U+000A"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_415_and_a_missing_content_type_reads_as_json() {
    let env = Env::new().await;
    let body = r#"{"id": "acme"}"#;
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
    ] {
        let r = env
            .admin(
                Method::POST,
                "/admin/v1/clients",
                &[("content-type", ct)],
                body,
            )
            .await;
        assert_eq!(r.status, 415, "{ct}: {:?}", r.body);
        assert_eq!(r.code(), "unsupported_media_type");
    }
    let r = env
        .admin(Method::POST, "/admin/v1/clients", &[], body)
        .await;
    assert_eq!(r.status, 201, "no Content-Type: {:?}", r.body);
    let r = env
        .admin(
            Method::POST,
            "/admin/v1/clients",
            &[("content-type", "application/json; charset=utf-8")],
            r#"{"id": "beta"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let (_, key) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS]).await;
    let r = env
        .public(
            Method::POST,
            KEYS,
            &[("x-api-key", &key), ("content-type", "text/plain")],
            r#"{"name": "ci", "scopes": ["read:api_keys"]}"#,
        )
        .await;
    assert_eq!(r.status, 415, "{:?}", r.body);
    assert_eq!(r.code(), "unsupported_media_type");
    assert!(r.header("x-ratelimit-limit").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_client_is_409_conflict() {
    let env = Env::new().await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let r = call(
        &env.http,
        &env.tg,
        Method::POST,
        "/admin/v1/clients",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "conflict");
}

/// A malformed path is refused before the key is read: no rate-limit headers,
/// even with a valid key, and nothing counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_path_is_refused_before_the_key_is_read() {
    let env = Env::new().await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, key) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS]).await;
    let r = env
        .public(
            Method::DELETE,
            &format!("{KEYS}/key%2Fx"),
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "bad_request");
    assert_eq!(r.header("x-ratelimit-limit"), None);
    let usage = env
        .public(
            Method::GET,
            "/api/v1/client/usage",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(usage.json()["monthly_quota"]["used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_the_openapi_document() {
    let env = Env::new().await;
    let r = env
        .admin(Method::GET, "/admin/v1/openapi.json", &[], "")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml");
    let yaml: serde_json::Value = serde_norway::from_str(&file).expect("openapi.yaml parses");
    assert_eq!(served, yaml, "the served document is openapi.yaml");
    // Behind the admin token, like everything under /admin/v1.
    let r = env
        .http
        .get(&env.tg.admin_url("/admin/v1/openapi.json"), &[])
        .await;
    assert_eq!(r.status, 401);
}

/// Every path of both listeners that docs/api.md documents is in
/// openapi.yaml, and every operation in openapi.yaml is in docs/api.md.
#[test]
fn docs_and_openapi_describe_the_same_endpoints() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/api.md")).expect("docs/api.md");
    let file = std::fs::read_to_string(format!("{root}/openapi.yaml")).expect("openapi.yaml");
    let spec: serde_json::Value = serde_norway::from_str(&file).expect("openapi.yaml parses");
    let mut in_spec = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "patch", "delete", "put", "head"].contains(&method.as_str()) {
                in_spec.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(in_spec.len() >= 15, "{in_spec:?}");
    for op in &in_spec {
        assert!(doc.contains(&format!("`{op}`")), "docs/api.md lacks `{op}`");
    }
    for line in doc.lines().filter(|l| l.starts_with("### `")) {
        let op = line.trim_start_matches("### `").trim_end_matches('`');
        assert!(in_spec.iter().any(|s| s == op), "openapi.yaml lacks {op}");
    }
    let codes: Vec<&str> = [
        "bad_request",
        "invalid_scope",
        "name_taken",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "unsupported_media_type",
        "payload_too_large",
        "request_timeout",
        "rate_limited",
        "internal",
        "not_implemented",
        "bad_gateway",
        "unavailable",
        "gateway_timeout",
    ]
    .to_vec();
    for code in codes {
        assert!(
            doc.contains(&format!("`{code}`")),
            "docs/api.md lacks {code}"
        );
        assert!(file.contains(code), "openapi.yaml lacks {code}");
    }
}
