//! TLS on both sides, end to end, with certificates made by rcgen: the
//! public listener (`[server.tls]`, ALPN, certificate rotation, bad files,
//! stalled handshakes) and `https://` upstreams (`upstream.ca`, hostname
//! verification, expired certificates). Each case says what it proves.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::grpc::{msg, with_key, EchoClient, GrpcUpstream};
use common::http::Http;
use common::tls::{
    https_client, presented_cert, server_tls_section, write_private, HttpsUpstream, TestCa,
};
use common::tollgate::Tollgate;
use common::upstream::Upstream;
use http_body_util::BodyExt;
use serde_json::json;

const SCOPE: &str = "echo:call";
const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// tollgate with `[upstream]` lines and `extra`, a client and a key.
async fn start(upstream_lines: &str, extra: &str) -> (Tollgate, String) {
    let tg = Tollgate::start(&common::grpc::config(upstream_lines, extra));
    let http = Http::default();
    // A limit no test here reaches: the load test makes many requests.
    // (The quota too: a fast machine makes over the default 10,000 a month.)
    create_client(
        &http,
        &tg,
        "acme",
        json!({"per_minute": 1_000_000, "monthly": 1_000_000_000}),
    )
    .await;
    let (_, key) = create_key(&http, &tg, "acme", &[SCOPE]).await;
    (tg, key)
}

fn https_url(tg: &Tollgate, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", tg.public.port())
}

async fn get(
    client: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<bytes::Bytes>,
    >,
    url: &str,
    key: &str,
) -> Result<
    (
        http::StatusCode,
        http::Version,
        http::HeaderMap,
        bytes::Bytes,
    ),
    String,
> {
    let req = http::Request::get(url)
        .header("x-api-key", key)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((parts.status, parts.version, parts.headers, body))
}

/// The TLS listener offers h2 and http/1.1 by ALPN: a client offering both
/// gets HTTP/2, one offering http/1.1 gets HTTP/1.1; the upstream is told
/// `X-Forwarded-Proto: https`. A gRPC call over TLS reaches a TLS upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_both_versions_by_alpn() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = ca.leaf(&NAMES).write(dir.path());
    let upstream = Upstream::start().await;
    let lines = format!("url = \"{}\"", upstream.url());
    let (tg, key) = start(&lines, &server_tls_section(&cert, &key_file)).await;

    let both = https_client(&ca, &[b"h2", b"http/1.1"], false);
    let (status, version, ..) = get(&both, &https_url(&tg, "/x"), &key).await.unwrap();
    assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_2));
    let h1 = https_client(&ca, &[b"http/1.1"], false);
    let (status, version, ..) = get(&h1, &https_url(&tg, "/y"), &key).await.unwrap();
    assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_11));
    assert_eq!(
        upstream.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    // Plain HTTP is not served on the TLS port.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>()
            .get(tg.url("/z").parse().unwrap()),
    )
    .await
    .expect("plain HTTP on the TLS port was not answered or closed in time");
    assert!(plain.is_err(), "plain HTTP was served on the TLS port");
}

/// gRPC end to end over TLS on both sides: the client to tollgate's TLS
/// listener (ALPN h2), tollgate to an https:// upstream with `upstream.ca`
/// (ALPN h2, hostname verified against the IP SAN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_on_both_sides() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = ca.leaf(&NAMES).write(dir.path());
    let ca_file = ca.write(dir.path(), "ca.pem");
    let up = GrpcUpstream::start_tls(ca.leaf(&NAMES).server_config(&[b"h2"])).await;
    let lines = format!(
        "url = \"{}\"\nprotocol = \"http2\"\nca = \"{}\"",
        up.url(),
        ca_file.display()
    );
    let (tg, key) = start(&lines, &server_tls_section(&cert, &key_file)).await;
    let mut client = EchoClient::with_tls(&https_url(&tg, ""), ca.client_config(&[]));
    let resp = client.unary(with_key(&key, msg("tls", 3))).await;
    let resp = resp.expect("gRPC over TLS");
    assert_eq!(resp.get_ref().text, "echo:tls");
    assert_eq!(
        resp.metadata()
            .get("x-seen-forwarded-proto")
            .and_then(|v| v.to_str().ok()),
        Some("https")
    );
}

/// An https:// upstream is verified with `upstream.ca`: a good certificate
/// is served (HTTP/1.1); a certificate for another host, or an expired one,
/// is a 502 (UNAVAILABLE for gRPC) with a log line saying why, and no
/// request reaches that upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
    let lines = |up: &HttpsUpstream, protocol: &str| {
        format!(
            "url = \"{}\"\nprotocol = \"{protocol}\"\nca = \"{}\"",
            up.url(),
            ca_file.display()
        )
    };

    let good = HttpsUpstream::start(ca.leaf(&NAMES).server_config(alpn)).await;
    let (tg, key) = start(&lines(&good, "http1"), "").await;
    let http = Http::default();
    let r = http.get_key(&tg.url("/ok"), &key).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"tls-ok"[..]));
    assert_eq!(good.requests.load(Ordering::SeqCst), 1);
    drop(tg);

    for (what, leaf, needle) in [
        (
            "wrong host",
            ca.leaf(&["other.example"]),
            "certificate not valid for name",
        ),
        ("expired", ca.expired_leaf(&NAMES), "certificate expired"),
    ] {
        let bad = HttpsUpstream::start(leaf.server_config(alpn)).await;
        let (tg, key) = start(&lines(&bad, "http1"), "").await;
        let r = http.get_key(&tg.url("/x"), &key).await;
        assert_eq!(r.status, 502, "{what}");
        assert_eq!(r.code(), "bad_gateway", "{what}");
        assert!(
            tg.wait_for_log("upstream TLS handshake failed", Duration::from_secs(5)),
            "{what}: no log line:\n{}",
            tg.log_text()
        );
        assert!(tg.log_text().contains(needle), "{what}:\n{}", tg.log_text());
        assert_eq!(
            bad.requests.load(Ordering::SeqCst),
            0,
            "{what}: a request got through"
        );
        drop(tg);

        // The same refusal for a gRPC call is UNAVAILABLE.
        let (tg, key) = start(&lines(&bad, "http2"), "").await;
        let mut client = EchoClient::new(&tg.url(""));
        let st = client.unary(with_key(&key, msg("x", 0))).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unavailable, "{what}: {st:?}");
        assert_eq!(bad.requests.load(Ordering::SeqCst), 0, "{what}");
    }
}

/// Certificate rotation under load: while clients make requests on new
/// connections (a handshake each) and on kept-alive ones, the certificate
/// files are replaced; new connections get the new certificate and not one
/// request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&NAMES);
    let (cert, key_file) = first.write(dir.path());
    let upstream = Upstream::start().await;
    let lines = format!("url = \"{}\"", upstream.url());
    let (tg, key) = start(&lines, &server_tls_section(&cert, &key_file)).await;
    assert_eq!(presented_cert(tg.public, &ca).await.unwrap(), first.der());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for i in 0..4 {
        let fresh = i % 2 == 0;
        let client = https_client(&ca, &[b"h2", b"http/1.1"], fresh);
        let (stop, ok, failed, key) = (stop.clone(), ok.clone(), failed.clone(), key.clone());
        let url = https_url(&tg, "/load");
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match get(&client, &url, &key).await {
                    Ok((s, ..)) if s == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    // Some load first, then the rotation (key, then certificate, as two
    // separate renames: the watcher may see the pair half-written).
    wait_until(Duration::from_secs(20), || ok.load(Ordering::SeqCst) >= 20).await;
    let second = ca.leaf(&NAMES);
    write_private(&key_file, &second.key_pem);
    replace(&cert, &second.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if presented_cert(tg.public, &ca).await.unwrap() == second.der() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_rotation = ok.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(20), || {
        ok.load(Ordering::SeqCst) >= at_rotation + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(tg.wait_for_log("TLS certificate reloaded", Duration::from_secs(5)));
}

/// A new certificate that does not match its key is refused with a log
/// line; the certificate in force keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_certificate_is_refused() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&NAMES);
    let (cert, key_file) = first.write(dir.path());
    let upstream = Upstream::start().await;
    let lines = format!("url = \"{}\"", upstream.url());
    let (tg, key) = start(&lines, &server_tls_section(&cert, &key_file)).await;
    // Another certificate, without its key.
    replace(&cert, &ca.leaf(&NAMES).cert_pem);
    assert!(
        tg.wait_for_log("TLS certificate reload refused", Duration::from_secs(20)),
        "{}",
        tg.log_text()
    );
    assert!(
        tg.log_text().contains("does not match the key"),
        "{}",
        tg.log_text()
    );
    assert_eq!(presented_cert(tg.public, &ca).await.unwrap(), first.der());
    let client = https_client(&ca, &[b"http/1.1"], true);
    let (status, ..) = get(&client, &https_url(&tg, "/still"), &key).await.unwrap();
    assert_eq!(status, 200);
}

/// Bad TLS files are config errors naming the file: exit 2, nothing started.
#[test]
fn bad_tls_files_are_config_errors() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = ca.leaf(&NAMES).write(dir.path());
    let check = |extra: &str, upstream: &str| {
        let text = common::grpc::config(upstream, extra);
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let up = "url = \"http://127.0.0.1:1\"";
    let tls = server_tls_section(&cert, &key_file);
    assert_eq!(check(&tls, up).0, Some(0), "{}", check(&tls, up).1);

    // A key readable by others.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = check(&tls, up);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.tls.key"), "{err}");
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    assert!(
        err.contains("accessible to other users (mode 0644)"),
        "{err}"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A certificate that is not the key's.
    let other = dir.path().join("other.crt");
    std::fs::write(&other, ca.leaf(&NAMES).cert_pem).unwrap();
    let (code, err) = check(&server_tls_section(&other, &key_file), up);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.tls.cert"), "{err}");
    assert!(err.contains("does not match the key"), "{err}");
    assert!(err.contains(&other.display().to_string()), "{err}");

    // Not a certificate at all; a missing key file.
    let (code, err) = check(&server_tls_section(&key_file, &key_file), up);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.tls.cert"), "{err}");
    let missing = dir.path().join("missing.key");
    let (code, err) = check(&server_tls_section(&cert, &missing), up);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.key"), "{err}");

    // upstream.ca: only with https://, and it must hold certificates.
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (code, err) = check("", &format!("{up}\nca = \"{}\"", ca_file.display()));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("upstream.ca: applies only to an https:// upstream.url"),
        "{err}"
    );
    let (code, err) = check(
        "",
        &format!("url = \"https://h\"\nca = \"{}\"", key_file.display()),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("upstream.ca"), "{err}");
    let (code, err) = check("", "url = \"https://h\"\nprotocol = \"h3\"");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("upstream.protocol"), "{err}");
}

/// The handshake is bounded by `server.header_read_timeout_ms`: a client
/// that connects and sends nothing, one that stalls mid-handshake, a flood
/// of both, and plain HTTP on the TLS port are all closed within it, while
/// a real client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_bounded_by_the_header_deadline() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = ca.leaf(&NAMES).write(dir.path());
    let upstream = Upstream::start().await;
    let lines = format!("url = \"{}\"", upstream.url());
    // header_read_timeout_ms lives in [server]: written into the config text.
    let extra = server_tls_section(&cert, &key_file);
    let text = common::grpc::config(&lines, &extra).replace(
        "listen = \"127.0.0.1:0\"\n\n[admin]",
        "listen = \"127.0.0.1:0\"\nheader_read_timeout_ms = 1000\n\n[admin]",
    );
    let tg = Tollgate::start(&text);
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, key) = create_key(&http, &tg, "acme", &[SCOPE]).await;

    let addr = tg.public;
    let started = Instant::now();
    let stalled: Vec<std::thread::JoinHandle<Duration>> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                match i % 3 {
                    0 => {}
                    // A TLS record header announcing a ClientHello that never comes.
                    1 => s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap(),
                    // Plain HTTP on the TLS port.
                    _ => s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap(),
                }
                let t = Instant::now();
                let mut buf = [0u8; 512];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return t.elapsed(),
                        Ok(_) => continue,
                    }
                }
            })
        })
        .collect();
    // Meanwhile a real client is served.
    let client = https_client(&ca, &[b"h2", b"http/1.1"], true);
    let (status, ..) = get(&client, &https_url(&tg, "/during"), &key)
        .await
        .unwrap();
    assert_eq!(status, 200);
    for t in stalled {
        let held = t.join().unwrap();
        assert!(
            held < Duration::from_secs(8),
            "a connection was held {held:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Replaces a file's content by rename, as a Secret volume update does.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The TLS overlay's tollgate.toml is a valid config once its two files
/// exist (here: rcgen's, at the paths the overlay mounts them, rewritten to a
/// temporary directory).
#[test]
fn the_tls_overlay_config_is_accepted() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/overlays/tls/tollgate.toml"
    ))
    .unwrap();
    assert!(text.contains("cert = \"/etc/tollgate-tls/tls.crt\""));
    assert!(text.contains("key = \"/etc/tollgate-tls/tls.key\""));
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.leaf(&["example-api.tollgate-tls.svc"]).write(dir.path());
    // The Secret is mounted 0440 with the pod's fsGroup: group-readable is accepted.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("tls.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    let text = text.replace("/etc/tollgate-tls", &dir.path().display().to_string());
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[server.tls]"));
}
