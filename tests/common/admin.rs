//! Admin-API helpers for integration tests: clients and keys through the real API.

use http::Method;
use serde_json::{json, Value};

use super::http::{Http, Reply};
use super::tollgate::{Tollgate, ADMIN_TOKEN};

const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token-5f2c");

pub async fn call(
    http: &Http,
    tg: &Tollgate,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    assert!(AUTH.1.ends_with(ADMIN_TOKEN));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http.send(
        method,
        &tg.admin_url(path),
        &[AUTH, ("content-type", "application/json")],
        body,
    )
    .await
}

/// Creates a client; `extra` is merged into the body (e.g. `{"per_minute": 7}`).
pub async fn create_client(http: &Http, tg: &Tollgate, id: &str, extra: Value) -> Value {
    let mut body = json!({ "id": id });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    let r = call(http, tg, Method::POST, "/admin/v1/clients", Some(body)).await;
    assert_eq!(r.status, 201, "create client: {:?}", r.body);
    r.json()
}

/// Creates a key and returns `(key_id, secret)`.
pub async fn create_key(
    http: &Http,
    tg: &Tollgate,
    client: &str,
    scopes: &[&str],
) -> (String, String) {
    let name = format!("k{}", rand_suffix());
    let r = call(
        http,
        tg,
        Method::POST,
        &format!("/admin/v1/clients/{client}/keys"),
        Some(json!({ "name": name, "scopes": scopes })),
    )
    .await;
    assert_eq!(r.status, 201, "create key: {:?}", r.body);
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_owned(),
        v["key"].as_str().expect("key").to_owned(),
    )
}

pub async fn set_status(http: &Http, tg: &Tollgate, client: &str, status: &str) {
    let r = call(
        http,
        tg,
        Method::PATCH,
        &format!("/admin/v1/clients/{client}"),
        Some(json!({ "status": status })),
    )
    .await;
    assert_eq!(r.status, 200, "patch: {:?}", r.body);
}

pub async fn revoke(http: &Http, tg: &Tollgate, key_id: &str) {
    let r = call(
        http,
        tg,
        Method::DELETE,
        &format!("/admin/v1/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "revoke: {:?}", r.body);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
