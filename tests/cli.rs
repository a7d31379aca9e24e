//! The real `tollgate` binary's admin verbs, in the cases that need no server:
//! local validation, unreachable admin API, unusable URLs. Each run gets a
//! clean environment (no `TOLLGATE_*` variables) and an empty working
//! directory, so no stray `tollgate.toml` or shell setting leaks in.
//!
//! End-to-end runs against a real server belong with the server.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::Output;

mod common;

use common::tollgate::command;

const TOKEN: &str = "tok-do-not-print-4f1c9a";

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = command();
    cmd.args(args).current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tollgate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port on which nothing listens (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn bad_input_exits_2_and_sends_nothing() {
    // A listener that would see any connection attempt in its backlog.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));

    let lines: [&[&str]; 6] = [
        &["clients", "show", "Acme"],
        &["clients", "create", "acme", "--per-minute", "0"],
        &["keys", "list", "--client", "no/slash"],
        &[
            "keys",
            "create",
            "--client",
            "acme",
            "--name",
            "ci",
            "--scope",
            "read:x",
            "--expires-in-days",
            "3651",
        ],
        &["keys", "revoke", "not-a-key-id"],
        &["usage", "--client=-x", "--json"],
    ];
    for line in lines {
        let mut args = line.to_vec();
        args.extend(["--admin-url", url.as_str()]);
        let out = tollgate(&args, &[("TOLLGATE_ADMIN_TOKEN", TOKEN)]);
        assert_eq!(out.status.code(), Some(2), "{line:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{line:?}");
        assert!(
            stderr(&out).starts_with("tollgate: "),
            "{line:?}: {}",
            stderr(&out)
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("accept: {e}"),
        Ok((_, peer)) => panic!("a request was sent from {peer}"),
    }
}

#[test]
fn connection_refused_names_the_url_and_not_the_token() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = tollgate(
        &["clients", "list", "--admin-url", &url],
        &[("TOLLGATE_ADMIN_TOKEN", TOKEN)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{url}/admin/v1/clients")), "{err}");
    assert!(err.contains("--admin-url"), "{err}");
    assert!(err.contains("TOLLGATE_ADMIN_URL"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_failure_prints_nothing_on_stdout() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The URL from the environment this time, --json after the verb.
    let out = tollgate(
        &["keys", "list", "--client", "acme", "--json"],
        &[
            ("TOLLGATE_ADMIN_URL", &url),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(&format!("{url}/admin/v1/clients/acme/keys")),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn https_admin_url_is_bad_usage() {
    let out = tollgate(
        &["--admin-url", "https://127.0.0.1:9090", "clients", "list"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("https is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_url_and_no_config_is_bad_usage_with_a_hint() {
    let out = tollgate(&["clients", "list"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--admin-url"), "{err}");
    assert!(err.contains("tollgate.toml"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn revoke_help_documents_the_json_document() {
    let out = tollgate(&["keys", "revoke", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(r#"{"id":"<KEY_ID>","revoked":true}"#),
        "{help}"
    );
}
