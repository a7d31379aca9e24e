//! Unit tests of the CLI: plans (method, path, body) for each verb, flag
//! validation, exit statuses, and how API answers and errors are printed.

use bytes::Bytes;
use clap::Parser;

use super::*;

const KEY_ID: &str = "key_AbCdEfGh01234-_x";

fn parse(args: &[&str]) -> Cli {
    match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn plan_of(args: &[&str]) -> Result<Plan, CliError> {
    plan(parse(args).command)
}

fn response(status: u16, body: &str) -> ApiResponse {
    ApiResponse {
        status: StatusCode::from_u16(status).expect("test status"),
        body: Bytes::from(body.to_string()),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8 output")
}

#[test]
fn global_options_are_accepted_anywhere() {
    let lines: [&[&str]; 4] = [
        &["tollgate", "keys", "list", "--client", "acme", "--json"],
        &["tollgate", "--json", "keys", "list", "--client", "acme"],
        &["tollgate", "keys", "--json", "list", "--client", "acme"],
        &["tollgate", "keys", "list", "--json", "--client", "acme"],
    ];
    for line in lines {
        let cli = parse(line);
        assert!(cli.global.json, "{line:?}");
        assert!(
            matches!(&cli.command, Command::Keys(KeysCommand::List { client }) if client == "acme"),
            "{line:?}"
        );
    }
    let cli = parse(&[
        "tollgate",
        "usage",
        "--client",
        "acme",
        "--admin-url",
        "http://127.0.0.1:9090",
        "--config",
        "/etc/tollgate.toml",
    ]);
    assert_eq!(
        cli.global.admin_url.as_deref(),
        Some("http://127.0.0.1:9090")
    );
    assert_eq!(
        cli.global.config.as_deref(),
        Some(std::path::Path::new("/etc/tollgate.toml"))
    );
    assert!(!cli.global.json);
}

#[test]
fn keys_create_takes_repeated_scopes_and_requires_one() {
    let cli = parse(&[
        "tollgate",
        "keys",
        "create",
        "--client",
        "acme",
        "--name",
        "ci",
        "--scope",
        "a:b",
        "--scope",
        "c:d",
        "--expires-in-days",
        "30",
    ]);
    match cli.command {
        Command::Keys(KeysCommand::Create {
            scopes,
            expires_in_days,
            ..
        }) => {
            assert_eq!(scopes, ["a:b", "c:d"]);
            assert_eq!(expires_in_days, Some(30));
        }
        other => panic!("{other:?}"),
    }
    let err = Cli::try_parse_from(["tollgate", "keys", "create", "--client", "a", "--name", "n"])
        .expect_err("no scope");
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn revoke_help_documents_the_json_output() {
    let err = Cli::try_parse_from(["tollgate", "keys", "revoke", "--help"]).expect_err("help");
    assert!(
        err.to_string()
            .contains(r#"{"id":"<KEY_ID>","revoked":true}"#),
        "{err}"
    );
}

#[test]
fn requests_follow_the_admin_api() {
    let cases: [(&[&str], Method, &str, Option<serde_json::Value>); 10] = [
        (
            &[
                "tollgate",
                "clients",
                "create",
                "acme",
                "--name",
                "Acme Corp",
                "--per-minute",
                "5",
                "--monthly",
                "99",
            ],
            Method::POST,
            "/admin/v1/clients",
            Some(
                serde_json::json!({"id": "acme", "name": "Acme Corp", "per_minute": 5, "monthly": 99}),
            ),
        ),
        (
            &["tollgate", "clients", "create", "acme"],
            Method::POST,
            "/admin/v1/clients",
            Some(serde_json::json!({"id": "acme"})),
        ),
        (
            &["tollgate", "clients", "list"],
            Method::GET,
            "/admin/v1/clients",
            None,
        ),
        (
            &["tollgate", "clients", "show", "acme"],
            Method::GET,
            "/admin/v1/clients/acme",
            None,
        ),
        (
            &["tollgate", "clients", "suspend", "acme"],
            Method::PATCH,
            "/admin/v1/clients/acme",
            Some(serde_json::json!({"status": "suspended"})),
        ),
        (
            &["tollgate", "clients", "activate", "acme"],
            Method::PATCH,
            "/admin/v1/clients/acme",
            Some(serde_json::json!({"status": "active"})),
        ),
        (
            &[
                "tollgate",
                "keys",
                "create",
                "--client",
                "acme",
                "--name",
                "ci",
                "--scope",
                "read:x",
                "--expires-in-days",
                "7",
            ],
            Method::POST,
            "/admin/v1/clients/acme/keys",
            Some(serde_json::json!({"name": "ci", "scopes": ["read:x"], "expires_in_days": 7})),
        ),
        (
            &["tollgate", "keys", "list", "--client", "acme"],
            Method::GET,
            "/admin/v1/clients/acme/keys",
            None,
        ),
        (
            &["tollgate", "keys", "revoke", KEY_ID],
            Method::DELETE,
            "/admin/v1/keys/key_AbCdEfGh01234-_x",
            None,
        ),
        (
            &["tollgate", "usage", "--client", "acme"],
            Method::GET,
            "/admin/v1/clients/acme/usage",
            None,
        ),
    ];
    for (args, method, path, body) in cases {
        let p = plan_of(args).unwrap_or_else(|e| panic!("{args:?}: {}", e.message));
        assert_eq!(p.request.method, method, "{args:?}");
        assert_eq!(p.request.path, path, "{args:?}");
        assert_eq!(p.request.body, body, "{args:?}");
    }
}

#[test]
fn bad_input_is_refused_locally_with_exit_2() {
    let cases: [(&[&str], &str); 12] = [
        (
            &["tollgate", "clients", "create", "Acme"],
            "invalid client id \"Acme\"",
        ),
        (
            &["tollgate", "clients", "create", "-", "--name", "x"],
            "invalid client id",
        ),
        (&["tollgate", "clients", "show", "a/b"], "invalid client id"),
        (
            &["tollgate", "clients", "suspend", "a b"],
            "invalid client id",
        ),
        (
            &["tollgate", "clients", "create", "acme", "--per-minute", "0"],
            "--per-minute must be at least 1",
        ),
        (
            &["tollgate", "clients", "create", "acme", "--monthly", "0"],
            "--monthly must be at least 1",
        ),
        (
            &["tollgate", "keys", "list", "--client", "../x"],
            "invalid client id",
        ),
        (&["tollgate", "usage", "--client", ""], "invalid client id"),
        (
            &[
                "tollgate",
                "keys",
                "create",
                "--client",
                "acme",
                "--name",
                "ci",
                "--scope",
                "s",
                "--expires-in-days",
                "0",
            ],
            "--expires-in-days must be between 1 and 3650, got 0",
        ),
        (
            &[
                "tollgate",
                "keys",
                "create",
                "--client",
                "acme",
                "--name",
                "ci",
                "--scope",
                "s",
                "--expires-in-days",
                "3651",
            ],
            "between 1 and 3650",
        ),
        (
            &[
                "tollgate", "keys", "create", "--client", "acme", "--name", "ci", "--scope", "",
            ],
            "--scope cannot be empty",
        ),
        (
            &["tollgate", "keys", "revoke", "key_short"],
            "invalid key id",
        ),
    ];
    for (args, want) in cases {
        let err = plan_of(args).expect_err(&format!("{args:?}"));
        assert_eq!(err.status, 2, "{args:?}");
        assert!(err.message.contains(want), "{args:?}: {}", err.message);
    }
    let long_name = "x".repeat(129);
    let err = plan_of(&[
        "tollgate", "keys", "create", "--client", "acme", "--name", &long_name, "--scope", "s",
    ])
    .expect_err("long name");
    assert_eq!(err.status, 2);
    let err = plan(Command::Keys(KeysCommand::Create {
        client: "acme".into(),
        name: "ci".into(),
        scopes: vec![],
        expires_in_days: None,
    }))
    .expect_err("no scopes");
    assert_eq!(
        (err.status, err.message.as_str()),
        (2, "at least one --scope is required")
    );
    assert_eq!(plan(Command::Serve).expect_err("serve").status, 2);
}

#[test]
fn negative_limits_are_refused_by_the_parser() {
    let err = Cli::try_parse_from([
        "tollgate",
        "clients",
        "create",
        "acme",
        "--per-minute",
        "-1",
    ])
    .expect_err("negative");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn exit_status_mapping() {
    let table = [
        (400, 2),
        (404, 2),
        (409, 2),
        (422, 2),
        (401, 1),
        (403, 1),
        (405, 1),
        (429, 1),
        (500, 1),
        (502, 1),
        (503, 1),
        (301, 1),
    ];
    for (status, want) in table {
        let got = exit_status_for(StatusCode::from_u16(status).expect("status"));
        assert_eq!(got, want, "{status}");
    }
}

#[test]
fn error_responses_print_error_and_code() {
    let p = plan_of(&["tollgate", "clients", "show", "acme"]).expect("plan");
    let err = answer(
        &p,
        &response(404, r#"{"error":"no such client","code":"not_found"}"#),
        true,
        true,
    )
    .expect_err("404");
    assert_eq!(
        (err.status, err.message.as_str()),
        (2, "no such client (not_found)")
    );

    let err = answer(&p, &response(502, "<html>bad gateway</html>"), false, true).expect_err("502");
    assert_eq!(err.status, 1);
    assert_eq!(
        err.message,
        "the admin API answered 502 Bad Gateway: <html>bad gateway</html>"
    );

    let err = answer(&p, &response(503, ""), false, true).expect_err("503");
    assert_eq!(
        err.message,
        "the admin API answered 503 Service Unavailable"
    );
}

#[test]
fn unauthorized_without_a_token_hints_at_the_variable() {
    let p = plan_of(&["tollgate", "clients", "list"]).expect("plan");
    let body = r#"{"error":"missing admin token","code":"unauthorized"}"#;
    let err = answer(&p, &response(401, body), false, false).expect_err("401");
    assert_eq!(err.status, 1);
    assert!(err
        .message
        .starts_with("missing admin token (unauthorized)\nhint:"));
    assert!(err.message.contains("TOLLGATE_ADMIN_TOKEN"));
    let err = answer(&p, &response(401, body), false, true).expect_err("401");
    assert_eq!(err.message, "missing admin token (unauthorized)");
}

#[test]
fn json_prints_the_body_as_sent() {
    let p = plan_of(&["tollgate", "clients", "list"]).expect("plan");
    // Field order and spacing are the server's, not re-serialised.
    let body = r#"{"clients": [ {"status":"active","id":"acme"} ]}"#;
    let out = answer(&p, &response(200, body), true, true).expect("ok");
    assert_eq!(text(out), format!("{body}\n"));
    let out = answer(&p, &response(200, &format!("{body}\n")), true, true).expect("ok");
    assert_eq!(text(out), format!("{body}\n"));
}

#[test]
fn json_refuses_a_body_that_is_not_one_document() {
    let p = plan_of(&["tollgate", "clients", "list"]).expect("plan");
    for body in ["", "not json", "{} {}", "{\"a\":"] {
        let err = answer(&p, &response(200, body), true, true).expect_err(body);
        assert_eq!(err.status, 1, "{body:?}");
    }
}

#[test]
fn json_revoke_prints_a_document_for_the_empty_204() {
    let p = plan_of(&["tollgate", "keys", "revoke", KEY_ID]).expect("plan");
    let out = answer(&p, &response(204, ""), true, true).expect("ok");
    assert_eq!(
        text(out),
        format!("{{\"id\":\"{KEY_ID}\",\"revoked\":true}}\n")
    );
    let out = answer(&p, &response(204, ""), false, true).expect("ok");
    assert_eq!(
        text(out),
        format!("Key {KEY_ID} revoked: it is refused from now on.\n")
    );
}

#[test]
fn human_output_decodes_each_view() {
    let client = r#"{"id":"acme","name":"Acme","status":"active","per_minute":100,"monthly":10000,"created_at":"2026-02-10T10:00:00Z"}"#;
    let p = plan_of(&["tollgate", "clients", "create", "acme"]).expect("plan");
    let out = text(answer(&p, &response(201, client), false, true).expect("create"));
    assert!(out.starts_with("Client acme created.\n"), "{out}");

    let p = plan_of(&["tollgate", "clients", "list"]).expect("plan");
    let out = text(
        answer(
            &p,
            &response(200, &format!(r#"{{"clients":[{client}]}}"#)),
            false,
            true,
        )
        .expect("list"),
    );
    assert!(out.starts_with("ID    NAME  STATUS"), "{out}");

    let p = plan_of(&[
        "tollgate", "keys", "create", "--client", "acme", "--name", "ci", "--scope", "read:x",
    ])
    .expect("plan");
    let created = r#"{"id":"key_AbCdEfGh01234-_x","name":"ci","key":"sk_live_SECRET","scopes":["read:x"],"created_at":"2026-02-10T10:00:00Z","expires_at":null}"#;
    let out = text(answer(&p, &response(201, created), false, true).expect("key"));
    assert!(
        out.contains("store it now; it cannot be shown again"),
        "{out}"
    );
    assert!(out.contains("sk_live_SECRET"));

    let p = plan_of(&["tollgate", "keys", "list", "--client", "acme"]).expect("plan");
    let out =
        text(answer(&p, &response(200, r#"{"keys":[],"total":0}"#), false, true).expect("keys"));
    assert_eq!(out, "No keys for client acme.\n");

    let p = plan_of(&["tollgate", "usage", "--client", "acme"]).expect("plan");
    let usage = r#"{"rate_limit":{"limit":100,"remaining":87,"period":"minute","reset_at":"2026-02-10T10:01:00Z"},"monthly_quota":{"limit":10000,"used":3456,"remaining":6544,"period":"month","period_start":"2026-02-01","period_end":"2026-02-28"}}"#;
    let out = text(answer(&p, &response(200, usage), false, true).expect("usage"));
    assert!(
        out.starts_with("rate limit: 87/100 remaining this minute"),
        "{out}"
    );
}

#[test]
fn rotate_plans_and_output() {
    let p = plan_of(&["tollgate", "keys", "rotate", KEY_ID]).expect("plan");
    assert_eq!(p.request.method, Method::POST);
    assert_eq!(p.request.path, format!("/admin/v1/keys/{KEY_ID}/rotate"));
    assert_eq!(p.request.body, Some(serde_json::json!({})));
    let p = plan_of(&["tollgate", "keys", "rotate", KEY_ID, "--grace-seconds", "0"]).expect("plan");
    assert_eq!(
        p.request.body,
        Some(serde_json::json!({"grace_seconds": 0}))
    );
    for (args, want) in [
        (
            &["tollgate", "keys", "rotate", "key_short"][..],
            "invalid key id",
        ),
        (
            &[
                "tollgate",
                "keys",
                "rotate",
                KEY_ID,
                "--grace-seconds",
                "2592001",
            ][..],
            "--grace-seconds must be between 0 and 2592000, got 2592001",
        ),
    ] {
        let err = plan_of(args).expect_err("bad input");
        assert_eq!(err.status, 2);
        assert!(err.message.contains(want), "{}", err.message);
    }
    let body = r#"{"id":"key_AbCdEfGh01234-_x","name":"ci","key":"sk_live_NEW","scopes":["read:x"],"created_at":"2026-02-10T10:00:00Z","expires_at":null,"previous_expires_at":"2026-02-11T10:00:00Z"}"#;
    let p = plan_of(&["tollgate", "keys", "rotate", KEY_ID]).expect("plan");
    let out = text(answer(&p, &response(201, body), false, true).expect("human"));
    assert!(out.contains("sk_live_NEW"), "{out}");
    assert!(out.contains("2026-02-11T10:00:00Z"), "{out}");
    let out = text(answer(&p, &response(201, body), true, true).expect("json"));
    assert_eq!(out, format!("{body}\n"));
}

#[test]
fn human_output_refuses_an_unexpected_body() {
    let p = plan_of(&["tollgate", "clients", "show", "acme"]).expect("plan");
    let err = answer(&p, &response(200, r#"{"id":"acme"}"#), false, true).expect_err("short");
    assert_eq!(err.status, 1);
    assert!(
        err.message.contains("does not understand"),
        "{}",
        err.message
    );
}
