//! The upstream pools of src/proxy/pool.rs, end to end: the real binary in
//! front of a raw HTTP/1.1 upstream that records which TCP connection each
//! request came on (tests/common/raw_upstream.rs), and of a real h2c
//! upstream (tests/common/refusing_h2.rs) for the HTTP/2 connection's idle
//! timeout. Discarding a connection after a malformed response is in
//! tests/hostile_http.rs.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::admin::{create_client, create_key};
use common::fault_proxy::eventually;
use common::http::Http;
use common::raw_upstream::{After, RawUpstream};
use common::refusing_h2::RefusingH2;
use common::tollgate::{memory_store, Parts, Tollgate};
use serde_json::json;

/// tollgate in front of a fresh raw upstream with `pool` lines added to
/// `[upstream]`, and a key.
async fn setup(pool: &str) -> (RawUpstream, Tollgate, Http, String) {
    setup_with(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", pool).await
}

/// The same, the upstream's first answer being `first`.
async fn setup_with(first: &[u8], pool: &str) -> (RawUpstream, Tollgate, Http, String) {
    let raw = RawUpstream::start(first, After::KeepOpen).await;
    let store = memory_store();
    let mut parts = Parts::new(&raw.url(), &store);
    parts.upstream = format!("{}\n{pool}", parts.upstream);
    let tg = Tollgate::start(&parts.text());
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, key) = create_key(&http, &tg, "acme", &["read:charge_points"]).await;
    (raw, tg, http, key)
}

/// The upstream connection index of each request, in order.
fn conns(raw: &RawUpstream) -> Vec<usize> {
    raw.requests().iter().map(|r| r.conn).collect()
}

/// Sequential requests take turns on one kept-alive connection; with
/// `pool_max_idle_per_host = 0` none is kept, and each request opens its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_reused_unless_none_may_be_kept() {
    let (raw, tg, http, key) = setup("").await;
    for _ in 0..5 {
        assert_eq!(http.get_key(&tg.url("/x"), &key).await.status, 200);
    }
    assert_eq!(conns(&raw), [0, 0, 0, 0, 0]);

    let (raw, tg, http, key) = setup("pool_max_idle_per_host = 0").await;
    for _ in 0..5 {
        assert_eq!(http.get_key(&tg.url("/x"), &key).await.status, 200);
    }
    assert_eq!(conns(&raw), [0, 1, 2, 3, 4]);
}

/// An upstream response head is read into a buffer of 64 KiB at most (the
/// upstream connection's, `proxy::pool::UPSTREAM_READ_BUFFER`; hyper checks
/// between reads, so a head a little over it may still pass): a 60 KiB
/// header is passed on whole, a 200 KiB one (which hyper's default buffer,
/// up to 400 KiB, took) is a 502 and its connection is not used again; the
/// next request is answered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_response_head_far_over_64_kib_is_a_502() {
    for (size, want, next_conn) in [(60 * 1024, 200, 0), (200 * 1024, 502, 1)] {
        let value = "v".repeat(size);
        let first = format!("HTTP/1.1 200 OK\r\nX-Big: {value}\r\nContent-Length: 5\r\n\r\nfirst");
        let (raw, tg, http, key) = setup_with(first.as_bytes(), "").await;
        let r = http.get_key(&tg.url("/x"), &key).await;
        assert_eq!(r.status, want, "a {size}-byte header");
        if want == 200 {
            assert_eq!(r.headers.get("x-big").map(|v| v.len()), Some(size));
            assert_eq!(&r.body[..], b"first");
        }
        let r = http.get_key(&tg.url("/x"), &key).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok:2"[..]));
        assert_eq!(conns(&raw), [0, next_conn], "a {size}-byte header");
    }
}

/// A connection idle longer than `pool_idle_timeout_ms` is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_past_the_timeout_is_replaced() {
    let (raw, tg, http, key) = setup("pool_idle_timeout_ms = 300").await;
    assert_eq!(http.get_key(&tg.url("/x"), &key).await.status, 200);
    assert_eq!(http.get_key(&tg.url("/x"), &key).await.status, 200);
    // Idle time is what is under test: nothing to await but the clock.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(http.get_key(&tg.url("/x"), &key).await.status, 200);
    assert_eq!(conns(&raw), [0, 0, 1]);
}

/// The shared HTTP/2 connection is closed once no request has started on it
/// for `pool_idle_timeout_ms` (within half of it more), and the next request
/// opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_timeout() {
    let up = RefusingH2::start().await;
    let lines = format!(
        "url = \"{}\"\nprotocol = \"http2\"\npool_idle_timeout_ms = 300",
        up.url()
    );
    let tg = Tollgate::start(&common::grpc::config(&lines, ""));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, key) = create_key(&http, &tg, "acme", &["echo:call"]).await;
    for _ in 0..3 {
        assert_eq!(http.get_key(&tg.url("/api/v1/x"), &key).await.status, 200);
    }
    assert_eq!(up.seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(up.seen.closed.load(Ordering::SeqCst), 0);
    assert!(
        eventually(Duration::from_secs(5), || up
            .seen
            .closed
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the idle HTTP/2 connection was not closed"
    );
    assert_eq!(http.get_key(&tg.url("/api/v1/x"), &key).await.status, 200);
    assert_eq!(up.seen.connections.load(Ordering::SeqCst), 2);
}
