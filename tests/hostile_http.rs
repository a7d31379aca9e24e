//! Hostile HTTP against the real binary: raw bytes over TCP to the public
//! listener, a recording upstream to see what got through, and a raw
//! misbehaving upstream to see what tollgate does with bad answers.
//!
//! The smuggling table's rule: every shape ends in a 4xx or in exactly the
//! well-framed request(s) the bytes really contain reaching the upstream —
//! never a second, smuggled one. Every target carries the case's number
//! (`/h/<nnn>/...`), so all cases run at once on one tollgate and each case
//! sees only its own upstream requests. The shapes come from PortSwigger's
//! request-smuggling research and http-garden's findings; docs/hostile-http.md
//! lists them with what tollgate answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::admin::{create_client, create_key};
use common::http::Http;
use common::raw_upstream::{After, RawUpstream};
use common::tollgate::{config, memory_store, Tollgate};
use common::upstream::Upstream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ: &str = "read:charge_points";
const WRITE: &str = "write:charge_points";

// ---------------------------------------------------------------------------
// Harness: a tollgate with a client whose limits never get in the way, and a
// raw client that writes bytes and reads until the server closes.
// ---------------------------------------------------------------------------

struct Env {
    upstream: Upstream,
    tg: Tollgate,
    key: String,
}

impl Env {
    /// `server` is added to `[server]`, `extra` appended to the config.
    async fn start(server: &str, extra: &str) -> Env {
        let upstream = Upstream::start().await;
        let text = with_server(&config(&upstream.url(), &memory_store(), extra), server);
        let tg = Tollgate::start(&text);
        let key = new_key(&Http::default(), &tg).await;
        Env { upstream, tg, key }
    }

    /// Upstream requests whose target starts with `prefix`: `(target, body_len)`.
    fn seen(&self, prefix: &str) -> Vec<(String, u64)> {
        self.upstream
            .requests()
            .into_iter()
            .filter(|r| r.target.starts_with(prefix))
            .map(|r| (r.target, r.body_len))
            .collect()
    }
}

/// Adds `keys` to the `[server]` table of a test config.
fn with_server(config: &str, keys: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\n{keys}\n"), 1)
}

/// A client with limits far above what a test sends, and a key with both scopes.
async fn new_key(http: &Http, tg: &Tollgate) -> String {
    create_client(
        http,
        tg,
        "hostile",
        json!({"per_minute": 1_000_000, "monthly": 100_000_000}),
    )
    .await;
    create_key(http, tg, "hostile", &[READ, WRITE]).await.1
}

#[derive(Debug, Clone)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What came back on one connection.
#[derive(Debug)]
struct Exchange {
    responses: Vec<RawResponse>,
    /// The server closed the connection (EOF or reset) before the deadline.
    closed: bool,
    /// Bytes after the last complete response (a truncated one).
    trailing: Vec<u8>,
    /// When the connection was closed, from the first write.
    elapsed: Duration,
}

impl Exchange {
    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Writes `bytes` and reads until the server closes or `deadline` passes.
async fn exchange(addr: SocketAddr, bytes: &[u8], deadline: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    s.write_all(bytes).await.expect("write");
    read_all(&mut s, started, deadline).await
}

async fn read_all(s: &mut TcpStream, started: Instant, deadline: Duration) -> Exchange {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut closed = false;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    let (responses, trailing) = parse_responses(&got);
    Exchange {
        responses,
        closed,
        trailing,
        elapsed,
    }
}

/// Splits a byte stream into the complete responses it holds.
fn parse_responses(mut b: &[u8]) -> (Vec<RawResponse>, Vec<u8>) {
    let mut out = Vec::new();
    while let Some((resp, used)) = parse_response(b) {
        out.push(resp);
        b = &b[used..];
    }
    (out, b.to_vec())
}

fn parse_response(b: &[u8]) -> Option<(RawResponse, usize)> {
    let head_end = find(b, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rest = &b[head_end..];
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((
            RawResponse {
                status,
                headers,
                body: Vec::new(),
            },
            head_end,
        ));
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let eol = find(&rest[at..], b"\r\n")? + at;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[at..eol]).ok()?, 16).ok()?;
            at = eol + 2;
            if size == 0 {
                let end = find(&rest[at..], b"\r\n")? + at + 2;
                let resp = RawResponse {
                    status,
                    headers,
                    body,
                };
                return Some((resp, head_end + end));
            }
            body.extend_from_slice(rest.get(at..at + size)?);
            at += size + 2;
        }
    }
    let len: usize = match get("content-length") {
        Some(v) => v.parse().ok()?,
        None => rest.len(),
    };
    let body = rest.get(..len)?.to_vec();
    Some((
        RawResponse {
            status,
            headers,
            body,
        },
        head_end + len,
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `{:x}\r\n<data>\r\n`: one chunk of a chunked body.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

// ---------------------------------------------------------------------------
// Request smuggling and malformed framing.
// ---------------------------------------------------------------------------

/// What may reach the upstream for one case (targets relative to `/h/<n>`).
#[derive(Debug)]
enum Up {
    /// Exactly these requests, `(target, body_len)`, in this order.
    Exactly(Vec<(&'static str, u64)>),
    /// Nothing, or one request to this target that was cut off (its body
    /// broke after tollgate had started forwarding it).
    AtMostOne(&'static str),
}

struct Case {
    name: &'static str,
    /// The bytes, with `{C}` for the case number.
    bytes: String,
    /// Statuses of the complete responses, in order; `[]` means "closed without one".
    statuses: &'static [u16],
    up: Up,
}

fn case(name: &'static str, bytes: String, statuses: &'static [u16], up: Up) -> Case {
    Case {
        name,
        bytes,
        statuses,
        up,
    }
}

/// The cases, with `key` in every request; `{C}` stands for the case number
/// (three digits, so that replacing it keeps every length).
fn smuggling_cases(key: &str) -> Vec<Case> {
    use Up::*;
    // `Host` and the API key, as every request carries them.
    let h = format!("Host: t\r\nX-API-Key: {key}\r\n");
    // The smuggled request every case tries to slip through.
    let smuggled = format!("GET /h/{{C}}/smuggled HTTP/1.1\r\n{h}\r\n");
    let s = &smuggled;
    vec![
        // Control: two honest pipelined requests are two forwarded requests,
        // so the harness does see a second request when there is one.
        case(
            "pipelined_control",
            format!("GET /h/{{C}}/a HTTP/1.1\r\n{h}\r\nGET /h/{{C}}/b HTTP/1.1\r\n{h}\r\n"),
            &[200, 200],
            Exactly(vec![("/a", 0), ("/b", 0)]),
        ),
        // CL.TE: a front end that believes Content-Length would see the
        // smuggled request as part of the body; tollgate uses the chunked
        // framing and then closes the connection (RFC 9112 §6.3).
        case(
            "cl_te",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"),
            &[200],
            Exactly(vec![("/a", 0)]),
        ),
        // TE.CL: the chunk holds what a Content-Length reader would see as
        // the next request.
        case(
            "te_cl",
            format!(
                "POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{}0\r\n\r\n",
                chunk(s)
            ),
            &[200],
            Exactly(vec![("/a", s.len() as u64)]),
        ),
        case(
            "cl_duplicate_differing",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_duplicate_equal",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
        // RFC 9110 §8.6 allows accepting a list of equal values; hyper
        // refuses it, which is the stricter of the two allowed answers.
        case(
            "cl_list_equal",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 5,5\r\n\r\nhello{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_list_differing",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 5,6\r\n\r\nhello!{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_plus_sign",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nhello{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_hex",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 0x5\r\n\r\nhello{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_negative",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_overflow",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 18446744073709551616\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_empty",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: \r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_space_inside",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 1 0\r\n\r\nhellohello{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "cl_leading_zeros",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 005\r\n\r\nhello"),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
        case(
            "cl_underscore_alias",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Content_Length: 44\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_xchunked",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_chunked_then_identity",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_space_before_colon",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_obs_fold",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "obs_fold_hides_te",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}X-Padding: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_two_lines_chunked_first",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_two_lines_chunked_last",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk("hello")),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
        case(
            "te_on_http10",
            format!("POST /h/{{C}}/a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_upper_case",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: CHUNKED\r\n\r\n{}0\r\n\r\n", chunk("hello")),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
        case(
            "te_vertical_tab",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "te_underscore_alias",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "chunk_size_overflow",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nhello\r\n0\r\n\r\n{s}"),
            &[400],
            AtMostOne("/a"),
        ),
        case(
            "chunk_size_negative",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n{s}"),
            &[400],
            AtMostOne("/a"),
        ),
        case(
            "chunk_data_longer_than_size",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{s}"),
            &[400],
            AtMostOne("/a"),
        ),
        case(
            "chunk_size_bare_lf",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{s}"),
            &[400],
            AtMostOne("/a"),
        ),
        // RFC 9112 §2.2 lets a recipient take a bare LF as a line end; the
        // upstream gets tollgate's own CRLF framing, so no one disagrees.
        case(
            "bare_lf_line_ends",
            format!("GET /h/{{C}}/a HTTP/1.1\nHost: t\nX-API-Key: {key}\n\n"),
            &[200],
            Exactly(vec![("/a", 0)]),
        ),
        case(
            "bare_lf_in_header_value_is_a_line_end",
            format!("POST /h/{{C}}/a HTTP/1.1\r\n{h}X-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
            &[200],
            Exactly(vec![("/a", 0)]),
        ),
        case(
            "bare_cr_in_header_value",
            format!("GET /h/{{C}}/a HTTP/1.1\r\n{h}X-A: a\rTransfer-Encoding: chunked\r\n\r\n"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "nul_in_header_value",
            format!("GET /h/{{C}}/a HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "header_without_colon",
            format!("GET /h/{{C}}/a HTTP/1.1\r\n{h}Transfer-Encoding chunked\r\n\r\n"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "request_line_double_space",
            format!("GET  /h/{{C}}/a HTTP/1.1\r\n{h}\r\n"),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "http09_request_line",
            "GET /h/{C}/a\r\n\r\n".to_string(),
            &[400],
            Exactly(vec![]),
        ),
        case(
            "absolute_form_target",
            format!("GET http://elsewhere.example/h/{{C}}/a HTTP/1.1\r\n{h}\r\n"),
            &[200],
            Exactly(vec![("/a", 0)]),
        ),
        // Raw UTF-8 in the path reaches the upstream as sent (a fuzzing
        // finding: the normaliser copied it byte by byte, as Latin-1).
        case(
            "raw_utf8_path",
            format!("GET /h/{{C}}/caf\u{e9}/\u{671} HTTP/1.1\r\n{h}\r\n"),
            &[200],
            Exactly(vec![("/caf\u{e9}/\u{671}", 0)]),
        ),
        case(
            "get_with_body",
            format!("GET /h/{{C}}/a HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello"),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
        case(
            "http10_with_length_then_more",
            format!("POST /h/{{C}}/a HTTP/1.0\r\n{h}Content-Length: 5\r\n\r\nhello{s}"),
            &[200],
            Exactly(vec![("/a", 5)]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_or_forwarded_once() {
    // A short header timeout ends every kept-alive connection soon after its
    // last response, so reading until the server closes needs no sleep.
    let env = Env::start("header_read_timeout_ms = 1500", "").await;
    let cases = smuggling_cases(&env.key);
    let runs = cases.iter().enumerate().map(|(i, c)| {
        let bytes = c.bytes.replace("{C}", &format!("{i:03}"));
        let addr = env.tg.public;
        async move { exchange(addr, bytes.as_bytes(), Duration::from_secs(15)).await }
    });
    let results = futures_util::future::join_all(runs).await;

    let mut failures = Vec::new();
    for (i, (c, got)) in cases.iter().zip(&results).enumerate() {
        let prefix = format!("/h/{i:03}/");
        let seen: Vec<(String, u64)> = env
            .seen(&prefix)
            .into_iter()
            .map(|(t, n)| (t[prefix.len() - 1..].to_owned(), n))
            .collect();
        let up_ok = match &c.up {
            Up::Exactly(want) => {
                seen.len() == want.len()
                    && seen.iter().zip(want).all(|(s, w)| s.0 == w.0 && s.1 == w.1)
            }
            Up::AtMostOne(target) => seen.len() <= 1 && seen.iter().all(|s| s.0 == *target),
        };
        if got.statuses() != c.statuses || !got.closed || !up_ok {
            failures.push(format!(
                "{}: statuses {:?} (want {:?}), closed {}, upstream {:?} (want {:?}), trailing {:?}",
                c.name,
                got.statuses(),
                c.statuses,
                got.closed,
                seen,
                c.up,
                String::from_utf8_lossy(&got.trailing)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// A misbehaving upstream: the bad answer goes to one client at most, its
// connection is never reused, and the next client gets its own answer.
// ---------------------------------------------------------------------------

/// What the first client sees.
#[derive(Debug, PartialEq)]
enum First {
    /// A complete response with this status and body.
    Full(u16, &'static str),
    /// A complete response with this status (tollgate's own error).
    Status(u16),
    /// The connection closed before a complete response.
    Cut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_upstream_connection_is_discarded() {
    let cases: Vec<(&str, &[u8], After, First)> = vec![
        (
            "body_longer_than_content_length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
            After::KeepOpen,
            First::Full(200, "hello"),
        ),
        (
            "content_length_and_chunked",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            After::KeepOpen,
            First::Status(502),
        ),
        (
            "unsolicited_101",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
            After::KeepOpen,
            First::Status(502),
        ),
        (
            "reset_mid_body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
            After::Reset,
            First::Cut,
        ),
        (
            "reset_mid_chunked_body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            After::Reset,
            First::Cut,
        ),
        ("reset_before_answering", b"", After::Reset, First::Status(502)),
        (
            "malformed_status_line",
            b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
            After::KeepOpen,
            First::Status(502),
        ),
        (
            "nul_in_response_header",
            b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n",
            After::KeepOpen,
            First::Status(502),
        ),
        (
            "duplicate_differing_content_length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            After::KeepOpen,
            First::Status(502),
        ),
    ];
    let mut failures = Vec::new();
    for (name, script, after, want) in cases {
        let raw = RawUpstream::start(script, after).await;
        let tg = Tollgate::start(&config(&raw.url(), &memory_store(), ""));
        let key = new_key(&Http::default(), &tg).await;
        let req = |n: u32| {
            format!(
                "GET /m/{n} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
            )
        };
        let first = exchange(tg.public, req(1).as_bytes(), Duration::from_secs(10)).await;
        let got = match first.responses.first() {
            None => First::Cut,
            Some(r) if r.status == 200 && r.body == b"hello" => First::Full(200, "hello"),
            Some(r) => First::Status(r.status),
        };
        let second = exchange(tg.public, req(2).as_bytes(), Duration::from_secs(10)).await;
        let seen = raw.requests();
        let second_ok = second.responses.len() == 1
            && second.responses[0].status == 200
            && second.responses[0].body == b"ok:2";
        let fresh_connection = seen.len() == 2 && seen[0].conn != seen[1].conn;
        if got != want || !first.closed || !second_ok || !fresh_connection {
            failures.push(format!(
                "{name}: first {got:?} (want {want:?}, closed {}), second {:?} {:?}, upstream {seen:?}",
                first.closed,
                second.statuses(),
                second
                    .responses
                    .first()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned()),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Limits: header count and size, body size, Expect, slow clients.
// ---------------------------------------------------------------------------

/// A request with `n` header fields in all (`Host` and, unless `key` is
/// empty, `X-API-Key` included), the others `filler` bytes long.
fn with_headers(key: &str, target: &str, n: usize, filler: usize) -> String {
    let mut s = format!("GET {target} HTTP/1.1\r\nHost: t\r\n");
    let mut fields = 1;
    if !key.is_empty() {
        s.push_str(&format!("X-API-Key: {key}\r\n"));
        fields += 1;
    }
    let value = "v".repeat(filler);
    for i in 0..n - fields {
        s.push_str(&format!("X-H{i}: {value}\r\n"));
    }
    s.push_str("\r\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_are_431() {
    let env = Env::start("header_read_timeout_ms = 1500", "").await;
    let k = &env.key;
    let cases: Vec<(&str, String, u16, usize)> = vec![
        // 100 fields are parsed (the missing key is tollgate's own 401)...
        ("100 fields", with_headers("", "/l/100", 100, 1), 401, 0),
        // ... 101 are not. (94 is what the test upstream, itself limited to
        // 100, takes once tollgate has added its X-Forwarded-* and X-Tollgate-*.)
        ("94 fields", with_headers(k, "/l/94", 94, 1), 200, 1),
        ("101 fields", with_headers(k, "/l/101", 101, 1), 431, 0),
        (
            "101 fields, no key",
            with_headers("", "/l/101nokey", 101, 1),
            431,
            0,
        ),
        (
            "one 60 KiB field",
            with_headers(k, "/l/60k", 3, 60 * 1024),
            200,
            1,
        ),
        (
            "one 70 KiB field",
            with_headers(k, "/l/70k", 3, 70 * 1024),
            431,
            0,
        ),
        (
            "1 MiB of headers",
            with_headers(k, "/l/1m", 90, 12 * 1024),
            431,
            0,
        ),
        (
            "a 70 KiB target",
            format!(
                "GET /l/long?{} HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\n\r\n",
                "q".repeat(70 * 1024)
            ),
            431,
            0,
        ),
    ];
    for (name, bytes, status, forwarded) in cases {
        let target = bytes.split(' ').nth(1).unwrap_or_default().to_owned();
        let prefix: String = target.chars().take_while(|&c| c != '?').collect();
        let got = exchange(env.tg.public, bytes.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(got.statuses(), [status], "{name}");
        assert_eq!(env.seen(&prefix).len(), forwarded, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_above_the_maximum_are_413_and_slow_bodies_408() {
    let env = Env::start(
        "max_body_bytes = 1000\nbody_read_timeout_ms = 800\nheader_read_timeout_ms = 1500",
        "",
    )
    .await;
    let k = &env.key;
    let post = |target: &str, extra: &str| {
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\n{extra}\r\n")
    };
    let body = |n: usize| "b".repeat(n);
    let t = Duration::from_secs(10);

    // A declared length above the maximum: 413 before the key is even looked
    // at, nothing forwarded, and no 100 Continue invites the body.
    for (name, bytes) in [
        (
            "declared",
            post("/b/declared", "Content-Length: 1001\r\n") + &body(1001),
        ),
        (
            "declared, body not sent",
            post("/b/unsent", "Content-Length: 5000000\r\n"),
        ),
        (
            "declared with Expect",
            post(
                "/b/expect",
                "Content-Length: 1001\r\nExpect: 100-continue\r\n",
            ),
        ),
        (
            "declared, bad key",
            "POST /b/badkey HTTP/1.1\r\nHost: t\r\nX-API-Key: nope\r\nContent-Length: 1001\r\n\r\n"
                .to_string(),
        ),
    ] {
        let got = exchange(env.tg.public, bytes.as_bytes(), t).await;
        assert_eq!(got.statuses(), [413], "{name}");
        assert!(got.closed, "{name}: the connection stays open");
        assert_eq!(
            got.responses[0].header("connection"),
            Some("close"),
            "{name}"
        );
    }
    assert!(env.seen("/b/").is_empty(), "{:?}", env.seen("/b/"));

    // At the maximum: forwarded whole.
    let got = exchange(
        env.tg.public,
        (post("/b/exact", "Content-Length: 1000\r\nConnection: close\r\n") + &body(1000))
            .as_bytes(),
        t,
    )
    .await;
    assert_eq!(got.statuses(), [200]);
    assert_eq!(env.seen("/b/exact"), [("/b/exact".to_owned(), 1000)]);

    // Chunked bodies have no declared length: cut off when they pass it.
    let chunked = post("/b/chunked", "Transfer-Encoding: chunked\r\n")
        + &chunk(&body(600))
        + &chunk(&body(600))
        + "0\r\n\r\n";
    let got = exchange(env.tg.public, chunked.as_bytes(), t).await;
    assert_eq!(got.statuses(), [413]);
    assert!(got.closed);
    let seen = env.seen("/b/chunked");
    assert!(
        seen.len() <= 1 && seen.iter().all(|(_, n)| *n < 1000),
        "{seen:?}"
    );
    let chunked_ok = post(
        "/b/chunked-ok",
        "Transfer-Encoding: chunked\r\nConnection: close\r\n",
    ) + &chunk(&body(500))
        + &chunk(&body(500))
        + "0\r\n\r\n";
    let got = exchange(env.tg.public, chunked_ok.as_bytes(), t).await;
    assert_eq!(got.statuses(), [200]);
    assert_eq!(
        env.seen("/b/chunked-ok"),
        [("/b/chunked-ok".to_owned(), 1000)]
    );

    // A body that stops arriving: 408 once it has paused for 800 ms.
    for (name, bytes) in [
        (
            "stalled sized body",
            post("/b/slow", "Content-Length: 100\r\n") + &body(10),
        ),
        (
            "stalled chunked body",
            post("/b/slow-chunked", "Transfer-Encoding: chunked\r\n") + &chunk(&body(10)),
        ),
    ] {
        let got = exchange(env.tg.public, bytes.as_bytes(), t).await;
        assert_eq!(got.statuses(), [408], "{name}");
        assert!(got.closed, "{name}");
        assert!(
            got.elapsed >= Duration::from_millis(700) && got.elapsed < Duration::from_secs(5),
            "{name}: closed after {:?}",
            got.elapsed
        );
    }
}

/// Reads until one complete response has arrived (or the deadline passes).
async fn read_response(s: &mut TcpStream, deadline: Duration) -> Option<RawResponse> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((r, _)) = parse_response(&got) {
            return Some(r);
        }
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_sent_only_to_an_admitted_request() {
    let env = Env::start("", "").await;
    let t = Duration::from_secs(10);
    let head = |key: &str| {
        format!("POST /e/x HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    };

    // A bad key: 401 first, no 100 Continue, and the body never needed.
    let mut s = TcpStream::connect(env.tg.public).await.expect("connect");
    s.write_all(head("sk_live_wrong").as_bytes())
        .await
        .expect("write");
    let first = read_response(&mut s, t).await.expect("a response");
    assert_eq!(first.status, 401);

    // A good key: 100 Continue, then the body, then the upstream's 200.
    let mut s = TcpStream::connect(env.tg.public).await.expect("connect");
    s.write_all(head(&env.key).as_bytes()).await.expect("write");
    let first = read_response(&mut s, t).await.expect("a response");
    assert_eq!(first.status, 100);
    s.write_all(b"hello").await.expect("write body");
    let second = read_response(&mut s, t).await.expect("a response");
    assert_eq!(second.status, 200);
    assert_eq!(env.seen("/e/"), [("/e/x".to_owned(), 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off() {
    let env = Env::start("header_read_timeout_ms = 1000", "").await;
    let cases: Vec<(&str, &[u8])> = vec![
        ("silent connection", b""),
        ("partial request line", b"GET /s/x HT"),
        (
            "partial headers",
            b"GET /s/x HTTP/1.1\r\nHost: t\r\nX-Slow: ",
        ),
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ];
    let runs = cases.iter().map(|(name, bytes)| async move {
        let got = exchange(env.tg.public, bytes, Duration::from_secs(10)).await;
        (name, got)
    });
    for (name, got) in futures_util::future::join_all(runs).await {
        assert!(got.closed, "{name}: still open after 10 s");
        assert!(
            got.elapsed >= Duration::from_millis(900) && got.elapsed < Duration::from_secs(5),
            "{name}: closed after {:?}",
            got.elapsed
        );
    }

    // Headers dripped a byte at a time: the timeout is for the whole head.
    let mut s = TcpStream::connect(env.tg.public).await.expect("connect");
    let started = Instant::now();
    let mut closed_after = None;
    for b in b"GET /s/drip HTTP/1.1\r\nHost: t\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 256];
        // Read with a short timeout: the drip interval, and a close shows as EOF.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut probe)).await {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a dripping client was never cut off");
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    assert!(env.seen("/s/").is_empty());
}

// ---------------------------------------------------------------------------
// Upgrades and tunnels.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_and_connect_never_open_a_tunnel() {
    let env = Env::start("header_read_timeout_ms = 1500", "").await;
    let k = &env.key;
    let t = Duration::from_secs(10);

    // h2c upgrade: ignored (RFC 9110 §7.8); a plain request reaches the
    // upstream without the upgrade headers, and the connection stays HTTP/1.1.
    let mut s = TcpStream::connect(env.tg.public).await.expect("connect");
    let upgrade = format!(
        "GET /u/h2c HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    );
    s.write_all(upgrade.as_bytes()).await.expect("write");
    let r = read_response(&mut s, t).await.expect("a response");
    assert_eq!(r.status, 200);
    let rec = env.upstream.last();
    assert_eq!(rec.target, "/u/h2c");
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(rec.header(h).is_none(), "{h} reached the upstream");
    }
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let after = read_all(&mut s, Instant::now(), t).await;
    assert!(after.closed);
    assert!(
        after.statuses().iter().all(|&st| st == 400),
        "{:?}",
        after.statuses()
    );

    // WebSocket, not enabled: tollgate's own 501, nothing forwarded.
    let ws = format!(
        "GET /u/ws HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let got = exchange(env.tg.public, ws.as_bytes(), t).await;
    assert_eq!(got.statuses(), [501]);
    assert!(env.seen("/u/ws").is_empty());

    // CONNECT, in authority form and in origin form: 405, nothing forwarded.
    for target in ["127.0.0.1:9", "/u/connect"] {
        let connect =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-API-Key: {k}\r\n\r\n");
        let got = exchange(env.tg.public, connect.as_bytes(), t).await;
        assert!(
            matches!(got.statuses()[..], [400] | [405]),
            "CONNECT {target}: {:?}",
            got.statuses()
        );
        assert!(got.closed);
    }
    assert_eq!(env.seen("/u/").len(), 1, "{:?}", env.seen("/u/"));
}

// ---------------------------------------------------------------------------
// HTTP/2 (prior knowledge, h2c): frames written by hand, so that the client
// can send what a well-behaved library never would.
// ---------------------------------------------------------------------------

mod h2raw {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::OwnedReadHalf;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The preface, an empty SETTINGS and an ACK of the server's.
    pub fn hello() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[]));
        b.extend(frame(SETTINGS, 0x1, 0, &[]));
        b
    }

    /// An HPACK integer with an `n`-bit prefix.
    fn int(out: &mut Vec<u8>, n: u32, v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(v as u8);
            return;
        }
        out.push(max as u8);
        let mut v = v - max;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// Literal header fields without indexing, raw bytes (no Huffman), so
    /// that names and values may hold anything.
    pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0);
            int(&mut out, 7, name.len());
            out.extend_from_slice(name);
            int(&mut out, 7, value.len());
            out.extend_from_slice(value);
        }
        out
    }

    /// A request's header block: pseudo-headers, the key, then `extra`.
    pub fn request(method: &str, path: &str, key: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", method.as_bytes()),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"t"),
            (b"x-api-key", key.as_bytes()),
        ];
        fields.extend_from_slice(extra);
        block(&fields)
    }

    #[derive(Debug, Clone)]
    pub struct Frame {
        pub ty: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.ty {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            let b = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }

        /// The last stream a GOAWAY says the server processed.
        pub fn last_stream(&self) -> Option<u32> {
            let b = self.payload.get(..4).filter(|_| self.ty == GOAWAY)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
        }
    }

    /// Reads frames until `stop` says so, the connection closes, or the deadline.
    /// Answers the frames and whether the connection was closed.
    pub async fn read_until(
        r: &mut OwnedReadHalf,
        deadline: Duration,
        stop: impl Fn(&Frame) -> bool,
    ) -> (Vec<Frame>, bool) {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while buf.len() >= 9 {
                let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    ty: buf[3],
                    stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                    payload: buf[9..9 + len].to_vec(),
                };
                buf.drain(..9 + len);
                let done = stop(&f);
                frames.push(f);
                if done {
                    return (frames, false);
                }
            }
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, r.read(&mut chunk)).await {
                Err(_) => return (frames, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// One GET over a fresh prior-knowledge HTTP/2 connection: its status.
async fn h2_get(addr: SocketAddr, path: &str, key: &str) -> u16 {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("x-api-key", key)
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("an HTTP/2 answer within 5 s")
        .expect("HTTP/2 request");
    resp.status().as_u16()
}

/// Resident set size (kB) and CPU time (clock ticks) of a process, from /proc.
fn rss_kb_and_cpu_ticks(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = after.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    (rss, f[11] + f[12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_malformed_requests_are_reset_and_not_forwarded() {
    use h2raw::*;
    let env = Env::start("", "").await;
    assert_eq!(h2_get(env.tg.public, "/h2/ok", &env.key).await, 200);

    // (name, extra header fields, body DATA or none, may the upstream see it?)
    type Case<'a> = (&'a str, Vec<(&'a [u8], &'a [u8])>, Option<&'a [u8]>, bool);
    let cases: Vec<Case> = vec![
        (
            "connection",
            vec![(b"connection", b"keep-alive")],
            None,
            false,
        ),
        (
            "transfer_encoding",
            vec![(b"transfer-encoding", b"chunked")],
            None,
            false,
        ),
        ("te_not_trailers", vec![(b"te", b"gzip")], None, false),
        ("upper_case_name", vec![(b"X-Upper", b"1")], None, false),
        ("crlf_in_value", vec![(b"x-a", b"a\r\nx-b: b")], None, false),
        ("nul_in_value", vec![(b"x-a", b"a\0b")], None, false),
        (
            "pseudo_after_regular",
            vec![(b":path", b"/h2/again")],
            None,
            false,
        ),
        // A body shorter or longer than its content-length: the stream is
        // reset; what reached the upstream was cut off with it.
        (
            "content_length_above_data",
            vec![(b"content-length", b"5")],
            Some(b"hi"),
            true,
        ),
        (
            "content_length_below_data",
            vec![(b"content-length", b"2")],
            Some(b"hello"),
            true,
        ),
    ];
    for (name, extra, body, may_forward) in cases {
        let path = format!("/h2/{name}");
        let method = if body.is_some() { "POST" } else { "GET" };
        let mut bytes = hello();
        let flags = if body.is_some() {
            END_HEADERS
        } else {
            END_HEADERS | END_STREAM
        };
        bytes.extend(frame(
            HEADERS,
            flags,
            1,
            &request(method, &path, &env.key, &extra),
        ));
        if let Some(b) = body {
            bytes.extend(frame(DATA, END_STREAM, 1, b));
        }
        let s = TcpStream::connect(env.tg.public).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        w.write_all(&bytes).await.expect("write");
        let (frames, closed) = read_until(&mut r, Duration::from_secs(10), |f| {
            (f.ty == RST_STREAM && f.stream == 1) || f.ty == GOAWAY
        })
        .await;
        let refused = closed
            || frames
                .iter()
                .any(|f| (f.ty == RST_STREAM && f.stream == 1) || f.ty == GOAWAY);
        let answered = frames.iter().any(|f| f.ty == HEADERS && f.stream == 1);
        assert!(refused && !answered, "{name}: {frames:?} closed={closed}");
        let seen = env.seen(&path);
        if may_forward {
            assert!(seen.len() <= 1, "{name}: {seen:?}");
        } else {
            assert!(seen.is_empty(), "{name}: {seen:?}");
        }
    }
    assert_eq!(h2_get(env.tg.public, "/h2/still-ok", &env.key).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_and_continuation_floods_stay_bounded() {
    use h2raw::*;
    let env = Env::start("", "").await;
    assert_eq!(h2_get(env.tg.public, "/f/warm", &env.key).await, 200);
    let pid = env.tg.pid();
    let (rss_before, cpu_before) = rss_kb_and_cpu_ticks(pid);

    // Rapid reset (CVE-2023-44487): requests cancelled as soon as they are
    // sent, until the server has taken 10,000 of them in, over as many
    // connections as it makes us use. A GOAWAY's last stream id says how
    // many streams the server took in on that connection.
    const RESETS: u32 = 10_000;
    let mut processed = 0u32;
    let mut connections = 0;
    let mut calm = 0;
    let started = Instant::now();
    while processed < RESETS && started.elapsed() < Duration::from_secs(60) {
        connections += 1;
        let s = TcpStream::connect(env.tg.public).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let reader = tokio::spawn(async move {
            read_until(&mut r, Duration::from_secs(30), |f| f.ty == GOAWAY).await
        });
        let _ = w.write_all(&hello()).await;
        let mut stream = 1u32;
        while stream / 2 < RESETS - processed && !reader.is_finished() {
            let mut batch = Vec::new();
            for _ in 0..100 {
                let block = request("GET", "/f/reset", &env.key, &[]);
                batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
                batch.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
                stream += 2;
            }
            if w.write_all(&batch).await.is_err() {
                break;
            }
        }
        drop(w);
        let (frames, _) = reader.await.expect("reader");
        match frames.iter().find(|f| f.ty == GOAWAY) {
            Some(g) => {
                processed += g.last_stream().map_or(0, |l| l.div_ceil(2));
                if g.error_code() == Some(ENHANCE_YOUR_CALM) {
                    calm += 1;
                }
            }
            None => processed += stream / 2,
        }
    }
    let sent = processed;
    assert!(sent >= RESETS, "only {sent} resets taken in within 60 s");
    assert_eq!(h2_get(env.tg.public, "/f/after-reset", &env.key).await, 200);
    let (rss_reset, cpu_reset) = rss_kb_and_cpu_ticks(pid);
    eprintln!(
        "rapid reset: {sent} reset streams taken in over {connections} connections ({calm} GOAWAY ENHANCE_YOUR_CALM) in {:?}; \
         upstream saw {}; tollgate CPU {} ticks, RSS {rss_before} -> {rss_reset} kB",
        started.elapsed(),
        env.seen("/f/reset").len(),
        cpu_reset - cpu_before,
    );

    // CONTINUATION floods: a header block that never ends, made of 1 KiB
    // fields (past max_header_bytes) or of empty frames (h2's frame count).
    for (name, payload) in [
        ("1 KiB fields", block(&[(b"x-flood", &[b'a'; 1024][..])])),
        ("empty frames", Vec::new()),
    ] {
        let s = TcpStream::connect(env.tg.public).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let reader = tokio::spawn(async move {
            read_until(&mut r, Duration::from_secs(30), |f| f.ty == GOAWAY).await
        });
        let mut bytes = hello();
        bytes.extend(frame(
            HEADERS,
            0,
            1,
            &request("GET", "/f/flood", &env.key, &[]),
        ));
        let mut written = 0usize;
        let mut frames_sent = 0usize;
        let flood_started = Instant::now();
        let _ = w.write_all(&bytes).await;
        // Up to 100,000 frames (about 100 MB of 1 KiB fields), until the server hangs up.
        while frames_sent < 100_000 && !reader.is_finished() {
            let batch: Vec<u8> = (0..100)
                .flat_map(|_| frame(CONTINUATION, 0, 1, &payload))
                .collect();
            if w.write_all(&batch).await.is_err() {
                break;
            }
            written += batch.len();
            frames_sent += 100;
        }
        drop(w);
        let (frames, closed) = reader.await.expect("reader");
        let goaway = frames.iter().find(|f| f.ty == GOAWAY);
        assert!(
            goaway.is_some() || closed,
            "{name}: {frames_sent} CONTINUATION frames ({written} bytes) and the server still listens"
        );
        eprintln!(
            "CONTINUATION flood ({name}): cut off after {frames_sent} frames sent ({written} bytes) in {:?}, GOAWAY {:?}",
            flood_started.elapsed(),
            goaway.and_then(Frame::error_code),
        );
        assert!(env.seen("/f/flood").is_empty());
    }

    assert_eq!(h2_get(env.tg.public, "/f/after", &env.key).await, 200);
    let (rss_after, cpu_after) = rss_kb_and_cpu_ticks(pid);
    eprintln!(
        "after the floods: CPU {} ticks in all, RSS {rss_before} -> {rss_after} kB",
        cpu_after - cpu_before
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    // Clock ticks are 1/100 s: ten seconds of CPU would mean no mitigation.
    assert!(
        cpu_after - cpu_before < 1000,
        "{} ticks of CPU",
        cpu_after - cpu_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_when_enabled() {
    let accept = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let raw = RawUpstream::start(accept, After::Echo).await;
    let text = with_server(&config(&raw.url(), &memory_store(), ""), "websocket = true");
    let tg = Tollgate::start(&text);
    let key = new_key(&Http::default(), &tg).await;

    let mut s = TcpStream::connect(tg.public).await.expect("connect");
    let ws = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(ws.as_bytes()).await.expect("write");
    let r = read_response(&mut s, Duration::from_secs(10))
        .await
        .expect("a response");
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(raw.requests().len(), 1);
    assert_eq!(raw.requests()[0].line, "GET /ws/chat HTTP/1.1");

    // Bytes go through the tunnel both ways (the upstream echoes them).
    let frame = b"\x81\x05hello";
    s.write_all(frame).await.expect("write through the tunnel");
    let mut back = vec![0u8; frame.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .expect("echo");
    assert_eq!(&back, frame);

    // Without a valid key there is no tunnel.
    let bad = ws
        .replace(&key, "sk_live_nope")
        .replace("Connection: Upgrade", "Connection: Upgrade, close");
    let got = exchange(tg.public, bad.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(got.statuses(), [401]);
    assert_eq!(raw.requests().len(), 1);
}
