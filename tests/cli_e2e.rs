//! The admin verbs of the real binary against a real running tollgate: the
//! quick-start flow of the README, `--json` output equal to the admin API's
//! body, human tables, and the exit statuses of server-side refusals.

mod common;

use std::process::Output;

use common::http::Http;
use common::tollgate::{command, config, memory_store, Tollgate};
use common::upstream::Upstream;
use serde_json::Value;

fn json_of(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn text(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_flow_through_the_cli() {
    let upstream = Upstream::start().await;
    let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), ""));
    let http = Http::default();

    let c = json_of(&tg.cli(&[
        "clients",
        "create",
        "acme",
        "--name",
        "Acme Corp",
        "--per-minute",
        "5",
        "--json",
    ]));
    assert_eq!(c["id"], "acme");
    assert_eq!(c["name"], "Acme Corp");
    assert_eq!(c["status"], "active");
    assert_eq!(c["per_minute"], 5);
    assert_eq!(c["monthly"], 10000);

    // Global options anywhere on the line.
    let k = json_of(&tg.cli(&[
        "--json",
        "keys",
        "create",
        "--client",
        "acme",
        "--name",
        "ci",
        "--scope",
        "read:charge_points",
    ]));
    let secret = k["key"].as_str().expect("key").to_owned();
    let key_id = k["id"].as_str().expect("id").to_owned();
    assert!(secret.starts_with("sk_live_"));

    let r = http
        .get_key(&tg.url("/api/v1/charge_points"), &secret)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));

    let list = json_of(&tg.cli(&["keys", "list", "--client", "acme", "--json"]));
    assert_eq!(list["total"], 1);
    assert_eq!(list["keys"][0]["id"], key_id.as_str());
    assert_eq!(list["keys"][0]["prefix"], &secret[..12]);
    assert!(!String::from_utf8_lossy(
        &tg.cli(&["keys", "list", "--client", "acme", "--json"])
            .stdout
    )
    .contains(&secret[12..]));
    let table = text(&tg.cli(&["keys", "list", "--client", "acme"]));
    assert!(table.contains(&key_id) && table.contains("ci"), "{table}");
    assert!(!table.contains(&secret[12..]));

    let usage = json_of(&tg.cli(&["usage", "--client", "acme", "--json"]));
    assert_eq!(usage["rate_limit"]["remaining"], 4);
    assert_eq!(usage["monthly_quota"]["used"], 1);

    let shown = json_of(&tg.cli(&["clients", "suspend", "acme", "--json"]));
    assert_eq!(shown["status"], "suspended");
    assert_eq!(
        http.get_key(&tg.url("/api/v1/charge_points"), &secret)
            .await
            .status,
        403
    );
    let shown = json_of(&tg.cli(&["clients", "activate", "acme", "--json"]));
    assert_eq!(shown["status"], "active");

    let clients = text(&tg.cli(&["clients", "list"]));
    assert!(
        clients.contains("acme") && clients.contains("Acme Corp"),
        "{clients}"
    );

    let revoked = json_of(&tg.cli(&["keys", "revoke", &key_id, "--json"]));
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        http.get_key(&tg.url("/api/v1/charge_points"), &secret)
            .await
            .status,
        401
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_exit_with_their_status() {
    let upstream = Upstream::start().await;
    let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), ""));
    assert!(tg.cli(&["clients", "create", "acme"]).status.success());

    let dup = tg.cli(&["clients", "create", "acme", "--json"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(dup.stdout.is_empty());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("conflict"));

    let missing = tg.cli(&["clients", "show", "nobody"]);
    assert_eq!(missing.status.code(), Some(2));

    let bad_scope = tg.cli(&[
        "keys", "create", "--client", "acme", "--name", "x", "--scope", "nope",
    ]);
    assert_eq!(bad_scope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("invalid_scope"));

    let no_token = command()
        .args(["clients", "list"])
        .env("TOLLGATE_ADMIN_URL", format!("http://{}", tg.admin))
        .env("TOLLGATE_ADMIN_TOKEN", "wrong-token")
        .output()
        .expect("run");
    assert_eq!(no_token.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&no_token.stderr).contains("wrong-token"));
}
