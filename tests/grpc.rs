//! gRPC through tollgate, end to end: a real tonic client, the real binary,
//! a real tonic service upstream over h2c (tests/common/grpc.rs).
//! Each case says what it proves.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::{create_client, create_key, set_status};
use common::grpc::{config, msg, with_key, EchoClient, GrpcUpstream, Msg};
use common::http::Http;
use common::tollgate::Tollgate;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::json;
use tonic::Code;

const SCOPE: &str = "echo:call";

/// tollgate in front of `upstream` with `protocol`, a client `acme` (with
/// `client_extra` settings) and a key holding `echo:call`.
async fn setup(
    upstream_lines: &str,
    client_extra: serde_json::Value,
) -> (Tollgate, EchoClient, String) {
    let tg = Tollgate::start(&config(upstream_lines, ""));
    let http = Http::default();
    create_client(&http, &tg, "acme", client_extra).await;
    let (_, secret) = create_key(&http, &tg, "acme", &[SCOPE]).await;
    let client = EchoClient::new(&tg.url(""));
    (tg, client, secret)
}

fn h2_upstream(up: &GrpcUpstream) -> String {
    format!(
        "url = \"{}\"\nprotocol = \"http2\"\ntimeout_ms = 5000",
        up.url()
    )
}

fn meta<'a>(m: &'a tonic::metadata::MetadataMap, name: &str) -> &'a str {
    m.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

/// Unary, server streaming, client streaming and bidirectional calls pass
/// with a key in metadata (both forms); the credential is removed and the
/// identity added upstream; `TE: trailers` reaches it; rate-limit headers
/// come back as metadata; an upstream status with trailing metadata, sent
/// after messages, arrives untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_call_shapes_with_a_valid_key() {
    let up = GrpcUpstream::start().await;
    let (_tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;

    // Unary, X-API-Key.
    let resp = client
        .unary(with_key(&key, msg("hello", 7)))
        .await
        .expect("unary");
    let m = resp.metadata().clone();
    assert_eq!(resp.get_ref(), &msg("echo:hello", 7));
    assert_eq!(meta(&m, "x-seen-api-key"), "-", "credential forwarded");
    assert_eq!(meta(&m, "x-seen-client-id"), "acme");
    assert_eq!(meta(&m, "x-seen-te"), "trailers");
    assert_eq!(meta(&m, "x-seen-forwarded-proto"), "http");
    assert_eq!(meta(&m, "x-ratelimit-limit"), "100");
    assert_eq!(meta(&m, "x-ratelimit-remaining"), "99");

    // Unary, authorization: Bearer.
    let mut req = tonic::Request::new(msg("bearer", 1));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let resp = client.unary(req).await.expect("bearer unary");
    assert_eq!(resp.get_ref().text, "echo:bearer");
    assert_eq!(meta(resp.metadata(), "x-seen-authorization"), "-");

    // Server streaming: every message, in order.
    let mut stream = client
        .server_stream(with_key(&key, msg("", 5)))
        .await
        .expect("server stream")
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.next().await {
        got.push(m.expect("message").n);
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);

    // Client streaming.
    let msgs = futures_util::stream::iter(["a", "b", "c"].map(|t| msg(t, 0)));
    let resp = client
        .client_stream(with_key(&key, msgs))
        .await
        .expect("client stream");
    assert_eq!(resp.get_ref(), &msg("a,b,c", 3));

    // Bidirectional, one message at a time: each answer arrives before the
    // next message is sent, so nothing on the way holds the stream back.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outbound = tokio_stream_from(rx);
    let mut replies = client
        .bidi(with_key(&key, outbound))
        .await
        .expect("bidi")
        .into_inner();
    for i in 0..5 {
        tx.send(msg(&format!("m{i}"), i)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("a reply before the next message")
            .expect("stream open")
            .expect("reply");
        assert_eq!(reply.text, format!("echo:m{i}"));
    }
    drop(tx);
    assert!(replies.next().await.is_none());

    // An upstream error status after messages, with trailing metadata.
    let mut stream = client
        .server_stream(with_key(&key, msg("fail", 2)))
        .await
        .expect("server stream")
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(stream.next().await.unwrap().is_ok());
    let status = stream
        .next()
        .await
        .unwrap()
        .expect_err("the upstream's status");
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "upstream says: no more");
    assert_eq!(meta(status.metadata(), "x-upstream-trailer"), "kept");
}

/// A stream of what `rx` yields.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Msg>,
) -> impl futures_util::Stream<Item = Msg> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// Each refusal is a trailers-only gRPC response with SPEC.md's status, the
/// message tollgate wrote (tonic decodes the percent-encoding), and, when
/// the key was valid, the rate-limit headers as metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_grpc_statuses() {
    let up = GrpcUpstream::start().await;
    let (tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;

    // No key.
    let st = client
        .unary(tonic::Request::new(msg("x", 0)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert_eq!(
        st.message(),
        "An API key is required: send it in X-API-Key or Authorization: Bearer."
    );

    // An unknown key.
    let bogus = format!("sk_live_{}", "A".repeat(64));
    let st = client
        .unary(with_key(&bogus, msg("x", 0)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert_eq!(st.message(), "The API key is invalid, expired or revoked.");

    // A method whose route needs a scope the key lacks: the path routes it.
    let mut other = EchoClient::new(&tg.url(""));
    let st = other
        .unary_at("/test.Forbidden/Call", with_key(&key, msg("x", 0)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert_eq!(
        st.message(),
        "This key lacks the scope \"other:thing\" that this route needs."
    );
    assert_eq!(meta(st.metadata(), "x-ratelimit-limit"), "100");

    // A suspended client.
    let http = Http::default();
    set_status(&http, &tg, "acme", "suspended").await;
    let st = client.unary(with_key(&key, msg("x", 0))).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert_eq!(st.message(), "The client is suspended.");
    assert_eq!(
        up.counters.calls.load(Ordering::SeqCst),
        0,
        "a refusal was forwarded"
    );
}

/// The wire form itself, seen by a raw HTTP/2 client: HTTP 200,
/// `content-type: application/grpc`, `grpc-status` and `grpc-message` in
/// the one HEADERS frame, no body, no trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_trailers_only_on_the_wire() {
    let up = GrpcUpstream::start().await;
    let tg = Tollgate::start(&config(&h2_upstream(&up), ""));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let req = http::Request::post(tg.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
    let resp = client.request(req).await.expect("h2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["grpc-status"], "16");
    assert_eq!(
        h["grpc-message"],
        "An API key is required: send it in X-API-Key or Authorization: Bearer."
    );
    let body = resp.into_body().collect().await.expect("body");
    assert!(body.trailers().is_none(), "trailers-only has no trailers");
    assert!(body.to_bytes().is_empty(), "trailers-only has no body");
}

/// A client whose limit runs out during a run of unary calls gets
/// RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms` (not UNAVAILABLE, which
/// clients retry at once), and the refused calls never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_reached_mid_stream_of_unary_calls() {
    let up = GrpcUpstream::start().await;
    let (_tg, mut client, key) = setup(&h2_upstream(&up), json!({"per_minute": 3})).await;
    for i in 0..3 {
        client
            .unary(with_key(&key, msg("ok", i)))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
    }
    let st = client
        .unary(with_key(&key, msg("no", 4)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    let m = st.metadata();
    let retry_after: u64 = meta(m, "retry-after").parse().unwrap();
    assert!((1..=61).contains(&retry_after), "{retry_after}");
    assert_eq!(
        st.message(),
        format!("Rate limit exceeded. Retry after {retry_after} seconds.")
    );
    assert_eq!(
        meta(m, "grpc-retry-pushback-ms"),
        (retry_after * 1000).to_string()
    );
    assert_eq!(meta(m, "x-ratelimit-limit"), "3");
    assert_eq!(meta(m, "x-ratelimit-remaining"), "0");
    assert_eq!(up.counters.calls.load(Ordering::SeqCst), 3);
}

/// An upstream that cannot be reached is UNAVAILABLE as a gRPC status, not
/// an HTTP 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_unavailable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lines = format!("url = \"http://{closed}\"\nprotocol = \"http2\"");
    let (_tg, mut client, key) = setup(&lines, json!({})).await;
    let st = client.unary(with_key(&key, msg("x", 0))).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert_eq!(
        st.message(),
        "The upstream refused or broke the connection."
    );
    assert_eq!(meta(st.metadata(), "x-ratelimit-limit"), "100");
}

/// `content-type: application/grpc` over HTTP/1.1 is refused with a clear
/// message, before anything is counted or forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http1_is_refused() {
    let up = GrpcUpstream::start().await;
    let (tg, _client, key) = setup(&h2_upstream(&up), json!({})).await;
    let http = Http::default();
    let r = http
        .send(
            http::Method::POST,
            &tg.url("/test.Echo/Unary"),
            &[("content-type", "application/grpc"), ("x-api-key", &key)],
            Bytes::from_static(&[0, 0, 0, 0, 0]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "bad_request");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("gRPC needs HTTP/2"),
        "{:?}",
        r.body
    );
    assert_eq!(up.counters.calls.load(Ordering::SeqCst), 0);
    // Nothing was counted: the next request sees the whole limit.
    let usage = http.get_key(&tg.url("/api/v1/client/usage"), &key).await;
    assert_eq!(usage.json()["rate_limit"]["remaining"], 100);
}

/// An upstream that dies in the middle of a server stream: the client gets
/// the messages sent so far, then an error status — never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_dies_mid_stream() {
    let up = GrpcUpstream::start().await;
    let (_tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut stream = client
            .server_stream(with_key(
                &key,
                Msg {
                    text: "die".into(),
                    n: 10,
                    delay_ms: 200,
                },
            ))
            .await
            .expect("stream starts")
            .into_inner();
        let mut ok = 0;
        loop {
            match stream.next().await {
                Some(Ok(_)) => ok += 1,
                Some(Err(st)) => return (ok, Some(st)),
                None => return (ok, None),
            }
        }
    })
    .await
    .expect("the client hung after the upstream died");
    assert_eq!(outcome.0, 2, "the messages sent before the upstream died");
    let st = outcome.1.expect("a clean end after the upstream died");
    assert_ne!(st.code(), Code::Ok, "{st:?}");
}

/// A client that cancels a call (drops it): the upstream's handler is
/// dropped too (RST_STREAM reached it), and tollgate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_reaches_the_upstream() {
    let up = GrpcUpstream::start().await;
    let (_tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;
    let req = with_key(
        &key,
        Msg {
            text: "zz".into(),
            n: 0,
            delay_ms: 10_000,
        },
    );
    let mut c2 = client.clone();
    let call = tokio::spawn(async move { c2.sleep(req).await });
    // Wait until the upstream's handler runs, then cancel the call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.counters.sleeping.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.counters.cancelled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the cancellation did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = client.unary(with_key(&key, msg("after", 1))).await;
    assert_eq!(
        resp.expect("served after a cancel").get_ref().text,
        "echo:after"
    );
}

/// `grpc-timeout`: a call past its deadline ends DEADLINE_EXCEEDED (from
/// tollgate, whose wait it bounds), and a call the client allows longer than
/// `upstream.timeout_ms` is not cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_honoured() {
    let up = GrpcUpstream::start().await;
    let lines = format!(
        "url = \"{}\"\nprotocol = \"http2\"\ntimeout_ms = 500",
        up.url()
    );
    let (_tg, mut client, key) = setup(&lines, json!({})).await;
    let sleep = |ms: u32, timeout: Duration| {
        let mut req = with_key(
            &key,
            Msg {
                text: String::new(),
                n: 0,
                delay_ms: ms,
            },
        );
        req.set_timeout(timeout);
        req
    };

    // Allowed 10 s, takes 1.5 s: upstream.timeout_ms (500) does not cut it.
    let resp = client.sleep(sleep(1500, Duration::from_secs(10))).await;
    assert_eq!(
        resp.expect("a call within its deadline").get_ref().text,
        "slept"
    );

    // Allowed 300 ms, takes 5 s: DEADLINE_EXCEEDED, well before the 5 s.
    let started = Instant::now();
    let st = client
        .sleep(sleep(5000, Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // No grpc-timeout: upstream.timeout_ms applies as to any request.
    let st = client
        .sleep(with_key(
            &key,
            Msg {
                text: String::new(),
                n: 0,
                delay_ms: 3000,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
}

/// `protocol = "auto"`: an HTTP/2 call goes upstream over HTTP/2 (the
/// h2-only gRPC service answers it), an HTTP/1.1 request goes over HTTP/1.1
/// (which that service cannot speak: 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_keeps_each_requests_version() {
    let up = GrpcUpstream::start().await;
    let lines = format!("url = \"{}\"\nprotocol = \"auto\"", up.url());
    let (tg, mut client, key) = setup(&lines, json!({})).await;
    let resp = client.unary(with_key(&key, msg("auto", 1))).await;
    assert_eq!(resp.expect("h2 call").get_ref().text, "echo:auto");
    let r = Http::default()
        .get_key(&tg.url("/test.Echo/Unary"), &key)
        .await;
    assert_eq!(
        r.status, 502,
        "an HTTP/1.1 request reached an h2-only upstream"
    );
}

/// GOAWAY from the upstream (a graceful shutdown of its connection, as a
/// rolling restart does) while calls are in flight and arriving: calls keep
/// being served, on a new connection, and none fails. A call that races the
/// GOAWAY (opened above its last-stream-id, or handed to the closing
/// connection) was not processed, and tollgate sends it once more on a new
/// connection, its small body replayed (tests/upstream_retry.rs has the
/// body over the replay buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_from_the_upstream_moves_calls_to_a_new_connection() {
    let up = GrpcUpstream::start().await;
    let lines = format!("url = \"{}\"\nprotocol = \"http2\"", up.url());
    let (_tg, client, key) = setup(&lines, json!({"per_minute": 1_000_000})).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (mut client, key, stop) = (client.clone(), key.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                // Some calls take a while, so that GOAWAY finds them in flight.
                let req = with_key(
                    &key,
                    Msg {
                        text: String::new(),
                        n: i,
                        delay_ms: if w == 0 { 50 } else { 0 },
                    },
                );
                match client.sleep(req).await {
                    Ok(_) => ok += 1,
                    Err(st) => failed.push(st),
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        up.goaway();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "{ok} calls served, {} failed across 3 GOAWAYs",
        failed.len()
    );
    assert!(ok > 20, "only {ok} calls");
    assert!(
        failed.is_empty(),
        "{} of {ok} calls failed: {failed:?}",
        failed.len()
    );
    assert!(
        up.counters.connections.load(Ordering::SeqCst) >= 2,
        "GOAWAY did not make tollgate open a new connection"
    );
    // After the GOAWAYs, calls are served on the new connection.
    let mut client = client;
    for i in 0..10 {
        let resp = client.unary(with_key(&key, msg("after", i))).await;
        assert_eq!(resp.expect("served after GOAWAY").get_ref().n, i);
    }
}

/// The gRPC overlay's tollgate.toml is a valid config (HTTP/2 upstream,
/// method routes).
#[test]
fn the_grpc_overlay_config_is_accepted() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/overlays/grpc/tollgate.toml"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config", path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("protocol = \"http2\""), "{stdout}");
    assert!(
        stdout.contains("path = \"/grpc.health.v1.Health\""),
        "{stdout}"
    );
}

/// A tollgate process's resident set, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// HTTP/2 flow control holds both ways: a client that stops reading a
/// 128 MiB server stream makes the upstream wait, not tollgate buffer (its
/// memory stays flat), and every message still arrives once it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_make_tollgate_buffer_a_stream() {
    let up = GrpcUpstream::start().await;
    let (tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;
    client.unary(with_key(&key, msg("warm", 0))).await.unwrap();
    let before = rss_kb(tg.pid());
    let mut stream = client
        .big(with_key(&key, msg("", 128)))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().n, 0);
    // The client reads nothing for a while; the upstream could send 127 MiB.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused = rss_kb(tg.pid());
    let mut n = 1;
    while let Some(m) = stream.next().await {
        assert_eq!(m.unwrap().n, n);
        n += 1;
    }
    assert_eq!(n, 128);
    let grew_mb = paused.saturating_sub(before) / 1024;
    eprintln!("tollgate RSS before {before} kB, with the reader paused {paused} kB");
    assert!(
        grew_mb < 32,
        "tollgate grew by {grew_mb} MiB while the reader paused"
    );
}

/// A malformed gRPC frame (a length prefix promising more bytes than the
/// body holds) is forwarded as bytes — tollgate does not parse messages —
/// and the upstream's refusal (a gRPC error status) reaches the client;
/// tollgate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_gets_the_upstreams_status() {
    let up = GrpcUpstream::start().await;
    let (tg, mut client, key) = setup(&h2_upstream(&up), json!({})).await;
    let raw = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let req = http::Request::post(tg.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", &key)
        // Uncompressed, 1000 bytes announced, 2 sent.
        .body(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 3, 0xE8, 1, 2,
        ])))
        .unwrap();
    let resp = raw.request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body");
    let status = body
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .expect("a grpc-status from the upstream")
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(status, "0", "a malformed frame was accepted");
    let ok = client.unary(with_key(&key, msg("after", 1))).await;
    assert_eq!(ok.expect("still serving").get_ref().text, "echo:after");
}
