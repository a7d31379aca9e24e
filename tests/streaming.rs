//! Bodies stream through tollgate in both directions without being held:
//! 100 MB up and 100 MB down, with tollgate's peak RSS checked.

mod common;

use bytes::Bytes;
use common::admin::{create_client, create_key};
use common::http::Http;
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

const MB: u64 = 1024 * 1024;

/// Peak resident set size of a process, from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_both_ways_in_flat_memory() {
    let upstream = Upstream::start().await;
    let tg = Tollgate::start(&config(&upstream.url(), &memory_store(), ""));
    let http = Http::default();
    create_client(&http, &tg, "acme", json!({})).await;
    let (_, secret) = create_key(&http, &tg, "acme", &["read:charge_points"]).await;
    // Warm up: first verification, pools, allocator.
    assert_eq!(http.get_key(&tg.url("/warm"), &secret).await.status, 200);
    let before = peak_rss_kb(tg.pid());

    // Download.
    let client = Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>();
    let req = http::Request::get(tg.url(&format!("/stream/{}", 100 * MB)))
        .header("x-api-key", &secret)
        .body(http_body_util::Empty::new().boxed())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, 100 * MB);

    // Upload, produced lazily 64 KiB at a time.
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let chunks = (100 * MB / (64 * 1024)) as usize;
    let stream = futures_util::stream::iter(
        std::iter::repeat_n(chunk, chunks)
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c))),
    );
    let req = http::Request::post(tg.url("/upload"))
        .header("x-api-key", &secret)
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], 100 * MB);

    let after = peak_rss_kb(tg.pid());
    eprintln!("tollgate peak RSS: {before} kB before, {after} kB after 2 x 100 MB");
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} kB to {after} kB: a body was buffered"
    );
}
