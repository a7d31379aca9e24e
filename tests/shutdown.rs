//! Graceful shutdown of the real binary: on SIGTERM the listeners close at
//! once, requests in flight (a slow one, a large download) complete in full,
//! the process exits 0 as soon as they are done, and a request still running
//! at `[server] drain_timeout_ms` is cut off there.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::{create_client, create_key};
use common::http::Http;
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

const MB: u64 = 1024 * 1024;

/// A running tollgate with one client key, its upstream and an HTTP client.
async fn setup(config_text: &str) -> (Upstream, Tollgate, Http, String) {
    let upstream = Upstream::start().await;
    let tg = Tollgate::start(&config_text.replace("{upstream}", &upstream.url()));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &["read:charge_points"]).await;
    // The first request pays for bcrypt; later ones are in the upstream at once.
    assert_eq!(http.get_key(&tg.url("/warm"), &secret).await.status, 200);
    (upstream, tg, http, secret)
}

fn base_config() -> String {
    config("{upstream}", &memory_store(), "")
}

/// Waits until the upstream has received `n` requests.
async fn upstream_received(upstream: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() < n {
        assert!(
            Instant::now() < deadline,
            "the upstream never got request {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_in_flight_requests_refuses_new_connections_and_exits_0() {
    let (upstream, mut tg, http, secret) = setup(&base_config()).await;
    let mut received = upstream.count();

    // 1. A slow request, in the upstream when SIGTERM arrives.
    let slow = {
        let (http, url, secret) = (http.clone(), tg.url("/slow/1500"), secret.clone());
        tokio::spawn(async move { http.get_key(&url, &secret).await })
    };
    received += 1;
    upstream_received(&upstream, received).await;

    // 2. A 64 MB download, headers and first bytes received, the rest not yet read.
    let size = 64 * MB;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(tg.url(&format!("/stream/{size}")))
        .header("x-api-key", &secret)
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    if let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert!(got > 0 && got < size);

    let sent = Instant::now();
    tg.signal("TERM");
    assert!(
        tg.wait_for_log("shutting down", Duration::from_secs(10)),
        "{}",
        tg.log_text()
    );

    // 3. The listeners are closed: a new connection is refused, on both.
    assert!(refused(tg.public), "public listener still accepts");
    assert!(refused(tg.admin), "admin listener still accepts");

    // 4. Both in-flight requests complete in full.
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the download was cut short");
        got += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, size, "the download did not complete");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.json()["target"], "/slow/1500", "{:?}", slow.body);

    // 5. Then the process exits 0, well before the 25 s drain timeout.
    let status = tokio::task::block_in_place(|| tg.wait_exit(Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", tg.log_text()));
    let elapsed = sent.elapsed();
    eprintln!(
        "drain: slow request 200 with full body, {size} B download complete, \
         new connections refused; SIGTERM → exit code {:?} in {} ms",
        status.code(),
        elapsed.as_millis()
    );
    assert_eq!(status.code(), Some(0), "{}", tg.log_text());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(tg.log_text().contains("drained"), "{}", tg.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_the_exit() {
    let (_upstream, mut tg, http, secret) = setup(&base_config()).await;
    // The HTTP client keeps its connection to tollgate open and idle.
    assert_eq!(http.get_key(&tg.url("/x"), &secret).await.status, 200);
    let sent = Instant::now();
    tg.signal("TERM");
    let status = tokio::task::block_in_place(|| tg.wait_exit(Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", tg.log_text()));
    let elapsed = sent.elapsed();
    eprintln!(
        "idle: SIGTERM → exit code {:?} in {} ms",
        status.code(),
        elapsed.as_millis()
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        elapsed < Duration::from_secs(3),
        "exit took {elapsed:?}: idle connections held up the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_is_configurable_and_bounds_the_exit() {
    let text = base_config().replace("[server]\n", "[server]\ndrain_timeout_ms = 300\n");
    let (upstream, mut tg, _http, secret) = setup(&text).await;
    let before = upstream.count();
    let slow = {
        let (url, secret) = (tg.url("/slow/1900"), secret.clone());
        tokio::spawn(async move {
            let req = http::Request::get(url)
                .header("x-api-key", secret)
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            let client =
                Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
            client.request(req).await.map(|r| r.status())
        })
    };
    upstream_received(&upstream, before + 1).await;
    let sent = Instant::now();
    tg.signal("TERM");
    let status = tokio::task::block_in_place(|| tg.wait_exit(Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", tg.log_text()));
    let elapsed = sent.elapsed();
    eprintln!(
        "timeout 300 ms: SIGTERM → exit code {:?} in {} ms",
        status.code(),
        elapsed.as_millis()
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(
        slow.await.unwrap().is_err(),
        "the request outlived the drain timeout"
    );
    assert!(
        tg.log_text().contains("drain timeout reached"),
        "{}",
        tg.log_text()
    );
}
