//! The organisation key-management API (`/api/v1/org/api-keys`) end to end:
//! the real binary, a real upstream and, for the Redis backend, a real
//! `redis-server`. Each case runs against both stores.

#[macro_use]
mod common;

use common::Backend;

use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::env::Env;
use common::http::{Http, Reply};
use common::tollgate::Tollgate;
use http::Method;
use serde_json::{json, Value};

const READ: &str = "read:charge_points";
const WRITE: &str = "write:charge_points";
const READ_KEYS: &str = "read:api_keys";
const WRITE_KEYS: &str = "write:api_keys";
const CP: &str = "/api/v1/charge_points";
const KEYS: &str = "/api/v1/org/api-keys";

/// The organisation API's calls on the common [`Env`].
impl Env {
    async fn org(&self, method: Method, path: &str, key: &str, body: &str) -> Reply {
        org_on(&self.http, &self.tg, method, path, key, body).await
    }

    async fn list(&self, key: &str) -> Value {
        let r = self.org(Method::GET, KEYS, key, "").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()
    }

    /// Creates a key through the organisation API; returns the 201 body.
    async fn create(&self, key: &str, body: Value) -> Value {
        let r = self.org(Method::POST, KEYS, key, &body.to_string()).await;
        assert_eq!(r.status, 201, "{body}: {:?}", r.body);
        r.json()
    }
}

async fn org_on(
    http: &Http,
    tg: &Tollgate,
    method: Method,
    path: &str,
    key: &str,
    body: &str,
) -> Reply {
    http.send(
        method,
        &tg.url(path),
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// Polls `f` until it returns true, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_stores!(
    list_needs_read_scope_and_never_shows_secrets,
    create_answers_201_once_with_the_secret,
    create_validation_codes,
    names_are_unique_per_organisation,
    a_key_grants_only_scopes_it_holds,
    the_organisation_comes_only_from_the_key,
    other_organisations_keys_are_404_like_missing_ones,
    revoke_is_204_and_immediate,
    last_used_at_is_kept,
    rotation_keeps_id_name_scopes_and_honours_the_grace,
    rotation_with_no_grace_refuses_the_old_secret_at_once,
    rotation_through_admin_api_and_cli,
    org_endpoints_are_never_forwarded,
);

async fn list_needs_read_scope_and_never_shows_secrets(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (reader_id, reader) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let (_, plain) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let (_, writer) = create_key(&env.http, &env.tg, "acme", &[WRITE_KEYS]).await;

    for key in [&plain, &writer] {
        let r = env.org(Method::GET, KEYS, key, "").await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        assert_eq!(r.code(), "forbidden");
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    }
    let r = env.org(Method::GET, KEYS, &reader, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["total"], 3);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    let mine = keys.iter().find(|k| k["id"] == reader_id.as_str()).unwrap();
    let fields: Vec<&str> = mine
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "prefix",
            "scopes"
        ]
    );
    assert_eq!(mine["prefix"], &reader[..12]);
    assert_eq!(mine["scopes"], json!([READ_KEYS]));
    let text = String::from_utf8_lossy(&r.body);
    for secret in [&reader, &plain, &writer] {
        assert!(!text.contains(secret.as_str()), "a secret in a listing");
        assert!(
            !text.contains(&secret[12..]),
            "a secret's tail in a listing"
        );
    }
    assert!(!text.contains("$2"), "a bcrypt hash in a listing: {text}");
    // Nothing was forwarded.
    assert_eq!(env.upstream.count(), 0);
}

async fn create_answers_201_once_with_the_secret(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let before = chrono::Utc::now().timestamp();
    let r = env
        .org(
            Method::POST,
            KEYS,
            &admin,
            &json!({"name": "ci", "scopes": [READ], "expires_in_days": 30}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = r.json();
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["created_at", "expires_at", "id", "key", "name", "scopes"]
    );
    assert_eq!(v["name"], "ci");
    assert_eq!(v["scopes"], json!([READ]));
    let secret = v["key"].as_str().unwrap();
    assert!(secret.starts_with("sk_live_") && secret.len() == 72);
    let created = chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((before - 1..=before + 5).contains(&created));
    let expires = chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(expires - created, 30 * 86_400);
    // The new key works at once, for its scope only.
    assert_eq!(env.get(CP, secret).await.status, 200);
    let r = env
        .http
        .send(Method::POST, &env.tg.url(CP), &[("x-api-key", secret)], "")
        .await;
    assert_eq!(r.status, 403);
    // The listing shows it, without the secret.
    let list = env.list(&admin).await;
    let listed = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == v["id"])
        .unwrap()
        .clone();
    assert_eq!(listed["expires_at"], v["expires_at"]);
    assert!(!list.to_string().contains(secret));
}

async fn create_validation_codes(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let long = "x".repeat(129);
    let cases: Vec<(String, &str)> = vec![
        (
            json!({"name": "a", "scopes": ["nope:x"]}).to_string(),
            "invalid_scope",
        ),
        (
            json!({"name": "", "scopes": [READ]}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": long, "scopes": [READ]}).to_string(),
            "bad_request",
        ),
        (json!({"scopes": [READ]}).to_string(), "bad_request"),
        (
            json!({"name": "a", "scopes": []}).to_string(),
            "bad_request",
        ),
        (json!({"name": "a"}).to_string(), "bad_request"),
        (
            json!({"name": "a", "scopes": READ}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": "a", "scopes": [READ], "expires_in_days": 0}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": "a", "scopes": [READ], "expires_in_days": 3651}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": "a", "scopes": [READ], "expires_in_days": -5}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": "a", "scopes": [READ], "expires_in_days": 1.5}).to_string(),
            "bad_request",
        ),
        (
            json!({"name": "a", "scopes": [READ], "expires_in_days": "30"}).to_string(),
            "bad_request",
        ),
        ("name=a&scopes=read".to_owned(), "bad_request"),
        ("".to_owned(), "bad_request"),
        ("[]".to_owned(), "bad_request"),
        ("{\"name\": \"a\",".to_owned(), "bad_request"),
    ];
    for (body, code) in &cases {
        let r = env.org(Method::POST, KEYS, &admin, body).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.code(), *code, "{body}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // The bounds themselves are accepted.
    let max_name = "é".repeat(128);
    for (name, days) in [(max_name.as_str(), 1), ("b", 3650)] {
        env.create(
            &admin,
            json!({"name": name, "scopes": [READ], "expires_in_days": days}),
        )
        .await;
    }
    // None of the refused ones was created.
    assert_eq!(env.list(&admin).await["total"], 3);
}

async fn names_are_unique_per_organisation(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    create_client(&env.http, &env.tg, "beta", json!({})).await;
    let (_, acme) = create_key(&env.http, &env.tg, "acme", &[WRITE_KEYS, READ]).await;
    let (_, beta) = create_key(&env.http, &env.tg, "beta", &[WRITE_KEYS, READ]).await;
    let body = json!({"name": "deploy", "scopes": [READ]});
    env.create(&acme, body.clone()).await;
    let r = env.org(Method::POST, KEYS, &acme, &body.to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "name_taken");
    // Another organisation may use the same name.
    env.create(&beta, body.clone()).await;
}

async fn a_key_grants_only_scopes_it_holds(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, key) = create_key(&env.http, &env.tg, "acme", &[WRITE_KEYS, READ]).await;
    for scopes in [json!([WRITE]), json!([READ, WRITE]), json!([READ_KEYS])] {
        let r = env
            .org(
                Method::POST,
                KEYS,
                &key,
                &json!({"name": "x", "scopes": scopes}).to_string(),
            )
            .await;
        assert_eq!(r.status, 403, "{scopes}: {:?}", r.body);
        assert_eq!(r.code(), "forbidden");
    }
    env.create(&key, json!({"name": "x", "scopes": [READ]}))
        .await;
    env.create(&key, json!({"name": "y", "scopes": [READ, WRITE_KEYS]}))
        .await;
}

async fn the_organisation_comes_only_from_the_key(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    create_client(&env.http, &env.tg, "beta", json!({})).await;
    let (_, acme) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let (_, beta) = create_key(&env.http, &env.tg, "beta", &[READ_KEYS]).await;
    // A body naming another organisation is refused outright: request bodies
    // refuse unknown fields, and nothing is created.
    let sneaky = json!({"name": "sneaky", "scopes": [READ], "client_id": "beta",
                        "client": "beta", "org": "beta", "organisation_id": "beta"});
    let r = env
        .org(Method::POST, KEYS, &acme, &sneaky.to_string())
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "bad_request"));
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown field `client`"));
    assert_eq!(env.list(&acme).await["total"], 1);
    let body = json!({"name": "sneaky", "scopes": [READ]});
    let r = env
        .http
        .send(
            Method::POST,
            &env.tg.url(&format!("{KEYS}?client_id=beta&org=beta")),
            &[
                ("x-api-key", &acme),
                ("x-tollgate-client-id", "beta"),
                ("x-client-id", "beta"),
                ("x-organisation-id", "beta"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let in_acme = env.list(&acme).await;
    assert!(in_acme["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == id.as_str()));
    let in_beta = env.list(&beta).await;
    assert_eq!(in_beta["total"], 1);
    assert!(!in_beta.to_string().contains(&id));
    // A listing asked "for beta" with acme's key is acme's listing.
    let r = env
        .http
        .get(
            &env.tg.url(&format!("{KEYS}?client_id=beta")),
            &[("x-api-key", &acme), ("x-tollgate-client-id", "beta")],
        )
        .await;
    assert_eq!(r.json(), in_acme);
}

async fn other_organisations_keys_are_404_like_missing_ones(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    create_client(&env.http, &env.tg, "beta", json!({})).await;
    let (_, acme) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS]).await;
    let (beta_id, beta) = create_key(&env.http, &env.tg, "beta", &[READ]).await;
    // Shaped like a key id but never issued, and not shaped like one at all.
    let never = tollgate::keys::generate().key_id().to_owned();
    let mut answers = Vec::new();
    for id in [beta_id.as_str(), never.as_str(), "nope", "key_", "..%2f"] {
        for (method, suffix, body) in [(Method::DELETE, "", ""), (Method::POST, "/rotate", "{}")] {
            let r = env
                .org(method.clone(), &format!("{KEYS}/{id}{suffix}"), &acme, body)
                .await;
            if id == "..%2f" {
                // Refused before anything: not a path tollgate accepts.
                assert_eq!(r.status, 400, "{id}");
                continue;
            }
            assert_eq!(r.status, 404, "{method} {id}{suffix}: {:?}", r.body);
            assert_eq!(r.code(), "not_found");
            answers.push((method, r.json()));
        }
    }
    // The answer for another organisation's key is byte for byte the answer for no key.
    let deletes: Vec<&Value> = answers
        .iter()
        .filter(|(m, _)| *m == Method::DELETE)
        .map(|(_, v)| v)
        .collect();
    assert!(deletes.windows(2).all(|w| w[0] == w[1]), "{deletes:?}");
    let rotates: Vec<&Value> = answers
        .iter()
        .filter(|(m, _)| *m == Method::POST)
        .map(|(_, v)| v)
        .collect();
    assert!(rotates.windows(2).all(|w| w[0] == w[1]), "{rotates:?}");
    // beta's key was neither revoked nor rotated.
    assert_eq!(env.get(CP, &beta).await.status, 200);
}

async fn revoke_is_204_and_immediate(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (admin_id, admin) =
        create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let (_, reader) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS]).await;
    let victim = env
        .create(&admin, json!({"name": "victim", "scopes": [READ]}))
        .await;
    let (victim_id, victim) = (
        victim["id"].as_str().unwrap().to_owned(),
        victim["key"].as_str().unwrap().to_owned(),
    );
    // Cached in both processes before the revocation.
    assert_eq!(env.get(CP, &victim).await.status, 200);
    let other = env.redis.as_ref().map(|_| env.second_process());
    if let Some(tg2) = &other {
        assert_eq!(env.http.get_key(&tg2.url(CP), &victim).await.status, 200);
    }
    // Revoking needs write:api_keys.
    let r = env
        .org(Method::DELETE, &format!("{KEYS}/{victim_id}"), &reader, "")
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(env.get(CP, &victim).await.status, 200);

    let r = env
        .org(Method::DELETE, &format!("{KEYS}/{victim_id}"), &admin, "")
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(r.header("content-type").is_none());
    let r = env.get(CP, &victim).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    if let Some(tg2) = &other {
        let r = env.http.get_key(&tg2.url(CP), &victim).await;
        assert_eq!(
            r.status, 401,
            "the other process still accepts a revoked key"
        );
    }
    // Twice is 404; the listing no longer has it.
    let r = env
        .org(Method::DELETE, &format!("{KEYS}/{victim_id}"), &admin, "")
        .await;
    assert_eq!(r.status, 404);
    assert!(!env.list(&admin).await.to_string().contains(&victim_id));
    // A key may revoke itself; it is refused from then on.
    let r = env
        .org(Method::DELETE, &format!("{KEYS}/{admin_id}"), &admin, "")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(env.org(Method::GET, KEYS, &admin, "").await.status, 401);
}

async fn last_used_at_is_kept(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (admin_id, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, READ]).await;
    let (user_id, user) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let listed = |v: &Value, id: &str| {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["last_used_at"]
            .clone()
    };
    let v = env.list(&admin).await;
    assert_eq!(listed(&v, &user_id), Value::Null);

    // On Redis, watch every write of last_used_at while the key is used in a burst.
    let monitor = env.redis.as_ref().map(|r| Monitor::start(r.port()));
    let started = chrono::Utc::now().timestamp();
    let burst = Instant::now();
    let mut requests = 0;
    while burst.elapsed() < Duration::from_millis(1500) && requests < 60 {
        assert_eq!(env.get(CP, &user).await.status, 200);
        requests += 1;
    }
    let ended = chrono::Utc::now().timestamp();
    let v = env.list(&admin).await;
    let at = listed(&v, &user_id);
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().expect("last_used_at set"))
        .unwrap()
        .timestamp();
    assert!(
        (started..=ended).contains(&at),
        "{started} <= {at} <= {ended}"
    );
    assert_eq!(
        listed(&v, &admin_id),
        Value::Null,
        "only forwarded requests count"
    );
    if let Some(m) = monitor {
        let writes = m.stop_and_count("last_used_at");
        let seconds = (ended - started + 1) as usize;
        assert!(requests >= 10, "only {requests} requests");
        assert!(
            (1..=seconds).contains(&writes),
            "{writes} writes of last_used_at for {requests} requests over {seconds} s"
        );
    }
}

/// A Redis `MONITOR` connection that records every command until stopped.
struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stream: std::net::TcpStream,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("monitor");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("+OK");
        assert_eq!(ok.trim(), "+OK");
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Monitor { lines, stream }
    }

    /// Commands written to Redis that set `field`.
    fn stop_and_count(self, field: &str) -> usize {
        // Let the monitor catch up with what was already sent.
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("\"HSET\"") && l.contains(&format!("\"{field}\"")))
            .count()
    }
}

async fn rotation_keeps_id_name_scopes_and_honours_the_grace(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let (_, reader) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, READ]).await;
    let created = env
        .create(
            &admin,
            json!({"name": "svc", "scopes": [READ], "expires_in_days": 7}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let old = created["key"].as_str().unwrap().to_owned();
    let rotate = format!("{KEYS}/{id}/rotate");
    // The old secret verified (and is cached) before the rotation.
    assert_eq!(env.get(CP, &old).await.status, 200);
    let other = env.redis.as_ref().map(|_| env.second_process());
    if let Some(tg2) = &other {
        assert_eq!(env.http.get_key(&tg2.url(CP), &old).await.status, 200);
    }

    // Rotation needs write:api_keys; grace_seconds is validated.
    assert_eq!(
        env.org(Method::POST, &rotate, &reader, "").await.status,
        403
    );
    for body in [
        r#"{"grace_seconds": -1}"#,
        r#"{"grace_seconds": 2592001}"#,
        r#"{"grace_seconds": "5"}"#,
        r#"{"grace_seconds": 1.5}"#,
        "not json",
    ] {
        let r = env.org(Method::POST, &rotate, &admin, body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.code(), "bad_request");
    }
    assert_eq!(env.org(Method::GET, &rotate, &admin, "").await.status, 405);

    let grace = 3;
    let requested = Instant::now();
    let r = env
        .org(
            Method::POST,
            &rotate,
            &admin,
            &json!({ "grace_seconds": grace }).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "svc");
    assert_eq!(v["scopes"], json!([READ]));
    assert_eq!(v["created_at"], created["created_at"]);
    assert_eq!(v["expires_at"], created["expires_at"]);
    let new = v["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(new.len(), 72);
    assert_eq!(&new[..12], &old[..12], "the listing prefix stays");
    let until = chrono::DateTime::parse_from_rfc3339(v["previous_expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + grace - 1..=now + grace + 2).contains(&until),
        "{until} vs {now}"
    );

    // Same id in the listing, once.
    let list = env.list(&admin).await;
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .filter(|k| *k == id)
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(!list.to_string().contains(&new));

    // Both secrets work during the grace period, in every process.
    let mut tgs = vec![&env.tg];
    if let Some(tg2) = &other {
        tgs.push(tg2);
    }
    for tg in &tgs {
        assert_eq!(env.http.get_key(&tg.url(CP), &new).await.status, 200);
        assert_eq!(env.http.get_key(&tg.url(CP), &old).await.status, 200);
    }
    // After it, only the new one; the cached old one too.
    for tg in &tgs {
        let refused = eventually(Duration::from_secs(grace as u64 + 5), || async {
            env.http.get_key(&tg.url(CP), &old).await.status == 401
        })
        .await;
        assert!(refused, "the old secret still works after the grace period");
        assert!(
            requested.elapsed() >= Duration::from_secs(grace as u64 - 1),
            "refused after {:?}, before the grace period ended",
            requested.elapsed()
        );
        assert_eq!(env.http.get_key(&tg.url(CP), &new).await.status, 200);
        assert_eq!(env.http.get_key(&tg.url(CP), &old).await.status, 401);
    }
}

async fn rotation_with_no_grace_refuses_the_old_secret_at_once(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    let created = env
        .create(&admin, json!({"name": "svc", "scopes": [READ]}))
        .await;
    let id = created["id"].as_str().unwrap();
    let old = created["key"].as_str().unwrap();
    assert_eq!(env.get(CP, old).await.status, 200);
    let r = env
        .org(
            Method::POST,
            &format!("{KEYS}/{id}/rotate"),
            &admin,
            r#"{"grace_seconds": 0}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let new = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(env.get(CP, old).await.status, 401);
    assert_eq!(env.get(CP, &new).await.status, 200);
    // Rotating without a body uses the default grace of a day.
    let r = env
        .org(Method::POST, &format!("{KEYS}/{id}/rotate"), &admin, "")
        .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    let until = chrono::DateTime::parse_from_rfc3339(v["previous_expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let now = chrono::Utc::now().timestamp();
    assert!((now + 86_400 - 2..=now + 86_400 + 2).contains(&until));
    let newest = v["key"].as_str().unwrap();
    assert_eq!(env.get(CP, newest).await.status, 200);
    assert_eq!(env.get(CP, &new).await.status, 200, "in its day of grace");
    assert_eq!(env.get(CP, old).await.status, 401, "two rotations ago");
    // A key may rotate itself: both of its secrets work during the grace.
    let list = env.list(&admin).await;
    let admin_id = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == admin[..12])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .org(
            Method::POST,
            &format!("{KEYS}/{admin_id}/rotate"),
            &admin,
            "",
        )
        .await;
    assert_eq!(r.status, 201);
    let admin_new = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(env.org(Method::GET, KEYS, &admin_new, "").await.status, 200);
    assert_eq!(env.org(Method::GET, KEYS, &admin, "").await.status, 200);
}

/// Expiry is checked by the store on every request, cached secret or not:
/// moving a key's `expires_at` into the past in Redis refuses it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_enforced_on_every_request() {
    let env = Env::new(Backend::Redis).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[WRITE_KEYS, READ]).await;
    let created = env
        .create(
            &admin,
            json!({"name": "short", "scopes": [READ], "expires_in_days": 1}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let secret = created["key"].as_str().unwrap();
    assert_eq!(env.get(CP, secret).await.status, 200);
    let redis = env.redis.as_ref().unwrap();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let past = chrono::Utc::now().timestamp() - 1;
    let _: i64 = ::redis::cmd("HSET")
        .arg(tollgate::store::redis::layout::key("acme", id))
        .arg("expires_at")
        .arg(past)
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = env.get(CP, secret).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(env.upstream.count(), 1);
}

async fn rotation_through_admin_api_and_cli(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (id, old) = create_key(&env.http, &env.tg, "acme", &[READ]).await;
    let r = common::admin::call(
        &env.http,
        &env.tg,
        Method::POST,
        &format!("/admin/v1/keys/{id}/rotate"),
        Some(json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["id"], id.as_str());
    let admin_new = v["key"].as_str().unwrap().to_owned();
    assert_eq!(env.get(CP, &old).await.status, 401);
    assert_eq!(env.get(CP, &admin_new).await.status, 200);
    for (path, body, status) in [
        (
            format!("/admin/v1/keys/{id}/rotate"),
            json!({"grace_seconds": -1}),
            400,
        ),
        (
            format!("/admin/v1/keys/{id}/rotate"),
            json!({"grace": 1}),
            400,
        ),
        (
            format!(
                "/admin/v1/keys/{}/rotate",
                tollgate::keys::generate().key_id()
            ),
            json!({}),
            404,
        ),
    ] {
        let r = common::admin::call(&env.http, &env.tg, Method::POST, &path, Some(body)).await;
        assert_eq!(r.status, status, "{path}: {:?}", r.body);
    }

    // The CLI: --json prints the admin API's body.
    let out = env
        .tg
        .cli(&["keys", "rotate", &id, "--grace-seconds", "0", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["id"], id.as_str());
    let cli_new = v["key"].as_str().unwrap();
    assert!(v["previous_expires_at"].is_string());
    assert_eq!(env.get(CP, &admin_new).await.status, 401);
    assert_eq!(env.get(CP, cli_new).await.status, 200);
    // Human output: the secret, labelled as shown once.
    let out = env.tg.cli(&["keys", "rotate", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("it cannot be shown again"), "{text}");
    assert_eq!(
        env.get(CP, cli_new).await.status,
        200,
        "a day of grace by default"
    );
}

async fn org_endpoints_are_never_forwarded(b: Backend) {
    let env = Env::new(b).await;
    create_client(&env.http, &env.tg, "acme", json!({})).await;
    let (_, admin) = create_key(&env.http, &env.tg, "acme", &[READ_KEYS, WRITE_KEYS, READ]).await;
    for (method, path) in [
        (Method::GET, KEYS.to_owned()),
        (Method::PUT, KEYS.to_owned()),
        (Method::GET, format!("{KEYS}/key_x")),
        (Method::GET, format!("{KEYS}/key_x/other")),
        (Method::GET, format!("{KEYS}/")),
        (Method::GET, "/api/v1/org//api-keys".to_owned()),
        (Method::GET, "/api/v1/org/./api-keys".to_owned()),
    ] {
        let r = env.org(method.clone(), &path, &admin, "").await;
        assert!(
            [200, 404, 405].contains(&r.status.as_u16()),
            "{method} {path}: {}",
            r.status
        );
        assert!(
            r.header("x-upstream").is_none(),
            "{method} {path} forwarded"
        );
    }
    assert_eq!(env.upstream.count(), 0);
    // Without a valid key, 401 and not forwarded either.
    let r = env.org(Method::GET, KEYS, "sk_live_nope", "").await;
    assert_eq!(r.status, 401);
    assert_eq!(env.upstream.count(), 0);
}
