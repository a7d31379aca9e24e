//! Requests an HTTP/2 upstream refused without processing them
//! (`RST_STREAM(REFUSED_STREAM)`), end to end: the real binary in front of
//! the `h2` crate's server (tests/common/refusing_h2.rs), which refuses
//! each marked request once. The concurrent GOAWAY case, with a real gRPC
//! service shut down gracefully, is in tests/grpc.rs.

mod common;

use std::sync::atomic::Ordering;

use common::admin::{create_client, create_key};
use common::http::Http;
use common::refusing_h2::RefusingH2;
use common::tollgate::Tollgate;
use http::Method;
use serde_json::json;

/// The replay buffer of src/proxy/replay.rs (`REPLAY_BUFFER_BYTES`).
const REPLAY_BUFFER: usize = 64 * 1024;

async fn setup(up: &RefusingH2) -> (Tollgate, Http, String) {
    let lines = format!(
        "url = \"{}\"\nprotocol = \"http2\"\ntimeout_ms = 5000",
        up.url()
    );
    let tg = Tollgate::start(&common::grpc::config(&lines, ""));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({"per_minute": 1000})).await;
    let (_, key) = create_key(&http, &tg, "acme", &["echo:call"]).await;
    (tg, http, key)
}

/// A body whose bytes differ along its length, so that a replay that
/// dropped, repeated or reordered a chunk would not echo it back.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A refused request — no body, a body just under the replay buffer, one of
/// exactly its size — is sent once more, on a new connection, whole: the
/// client gets the upstream's 200 and its exact body back. Each retry opens
/// exactly one new connection (the refusing one is not reused for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_on_a_new_connection() {
    let up = RefusingH2::start().await;
    let (tg, http, key) = setup(&up).await;
    for (i, len) in [0, 1000, REPLAY_BUFFER - 1, REPLAY_BUFFER]
        .into_iter()
        .enumerate()
    {
        let token = format!("t{i}");
        let sent = body(len);
        let r = http
            .send(
                Method::POST,
                &tg.url("/api/v1/things"),
                &[("x-api-key", &key), ("x-refuse-once", &token)],
                sent.clone(),
            )
            .await;
        assert_eq!(r.status, 200, "{len} bytes: {:?}", r.body);
        assert_eq!(r.header("x-seen-token"), Some(token.as_str()));
        assert_eq!(r.body.len(), len, "{len} bytes");
        assert!(r.body[..] == sent[..], "{len} bytes: the body changed");
        assert_eq!(up.seen.refused.load(Ordering::SeqCst), i + 1);
        assert_eq!(up.seen.answered.load(Ordering::SeqCst), i + 1);
        assert_eq!(
            up.seen.connections.load(Ordering::SeqCst),
            i + 2,
            "the retry of request {i} did not open a new connection"
        );
    }
    assert!(
        tg.wait_for_log(
            "sending it once more on a new connection",
            std::time::Duration::from_secs(5)
        ),
        "no log line for the retry"
    );
}

/// A refused request whose body outgrew the replay buffer is not retried:
/// it fails as before (502, tollgate's JSON error), the upstream saw it
/// once, and the next request is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_with_a_body_over_the_buffer_fails_cleanly() {
    let up = RefusingH2::start().await;
    let (tg, http, key) = setup(&up).await;
    let r = http
        .send(
            Method::POST,
            &tg.url("/api/v1/things"),
            &[("x-api-key", &key), ("x-refuse-once", "big")],
            body(REPLAY_BUFFER + 1),
        )
        .await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.code(), "bad_gateway");
    assert_eq!(up.seen.refused.load(Ordering::SeqCst), 1);
    assert_eq!(
        up.seen.answered.load(Ordering::SeqCst),
        0,
        "it was sent again"
    );
    assert!(
        tg.wait_for_log(
            "outgrew the replay buffer",
            std::time::Duration::from_secs(5)
        ),
        "no log line saying why it was not retried"
    );
    // The same request again is answered (its token was refused once already).
    let sent = body(REPLAY_BUFFER + 1);
    let r = http
        .send(
            Method::POST,
            &tg.url("/api/v1/things"),
            &[("x-api-key", &key), ("x-refuse-once", "big")],
            sent.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body[..] == sent[..]);
}
