//! Sending one admin API request and collecting its whole response.
//!
//! Owns the HTTP client (hyper-util's legacy client over a plain
//! `HttpConnector`), the `Authorization` header, and the overall time limit.
//! It does not interpret the response: any status comes back as an
//! [`ApiResponse`]; only transport failures (refused, timed out, broken)
//! become errors, and their messages name the URL tried, never the token.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::target::{Target, ADMIN_URL_ENV};
use super::CliError;

/// Bound on one admin request: connecting, sending, and reading the whole response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const JSON: &str = "application/json";
const AGENT: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));

/// A request to the admin API: a path below the base URL and an optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    /// Starts with `/admin/v1/`; segments already percent-encoded.
    pub path: String,
    pub body: Option<serde_json::Value>,
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why no response came back.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection could not be made.
    Connect { url: Uri, detail: String },
    /// No complete response within the time limit.
    Timeout { url: Uri, limit: Duration },
    /// The connection broke, or the response was not HTTP.
    Transport { url: Uri, detail: String },
}

impl From<SendError> for CliError {
    fn from(e: SendError) -> CliError {
        let hint = format!(
            "hint: is the server running? Point --admin-url or ${ADMIN_URL_ENV} at its admin listener"
        );
        let message = match e {
            SendError::Connect { url, detail } => {
                format!("cannot connect to the admin API at {url}: {detail}\n{hint}")
            }
            SendError::Timeout { url, limit } => format!(
                "the admin API at {url} did not answer within {}\n{hint}",
                human_duration(limit)
            ),
            SendError::Transport { url, detail } => {
                format!("request to the admin API at {url} failed: {detail}")
            }
        };
        CliError::failure(message)
    }
}

/// `10 s`, or `200 ms` below a whole second.
fn human_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends `request` to `target`, bounded by [`REQUEST_TIMEOUT`].
pub async fn send(target: &Target, request: &ApiRequest) -> Result<ApiResponse, CliError> {
    send_within(target, request, REQUEST_TIMEOUT).await
}

/// Sends `request` to `target` and reads the whole response within `limit`.
pub async fn send_within(
    target: &Target,
    request: &ApiRequest,
    limit: Duration,
) -> Result<ApiResponse, CliError> {
    let url = target.base.join(&request.path)?;
    let http_request = build_request(target, request, url.clone())?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    let exchange = async {
        let response = client.request(http_request).await.map_err(|e| {
            if e.is_connect() {
                // Skip hyper-util's "client error (Connect)" wrapper.
                let detail = match std::error::Error::source(&e) {
                    Some(cause) => error_chain(cause),
                    None => error_chain(&e),
                };
                SendError::Connect {
                    url: url.clone(),
                    detail,
                }
            } else {
                SendError::Transport {
                    url: url.clone(),
                    detail: error_chain(&e),
                }
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Transport {
                url: url.clone(),
                detail: format!("reading the response: {}", error_chain(&e)),
            })?
            .to_bytes();
        Ok::<_, SendError>(ApiResponse { status, body })
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => Ok(result?),
        Err(_elapsed) => Err(SendError::Timeout { url, limit }.into()),
    }
}

fn build_request(
    target: &Target,
    request: &ApiRequest,
    url: Uri,
) -> Result<Request<Full<Bytes>>, CliError> {
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(url)
        .header(ACCEPT, HeaderValue::from_static(JSON))
        .header(USER_AGENT, HeaderValue::from_static(AGENT));
    if let Some(token) = &target.token {
        builder = builder.header(AUTHORIZATION, token.authorization().clone());
    }
    let body = match &request.body {
        Some(json) => {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static(JSON));
            Full::new(Bytes::from(json.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    builder
        .body(body)
        .map_err(|e| CliError::failure(format!("cannot build the request: {e}")))
}

/// `error: cause: cause`, so that "connection refused" is visible.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::target::{BaseUrl, Token, UrlSource};

    fn target(url: &str) -> Target {
        Target {
            base: BaseUrl::parse(url, UrlSource::Flag).expect("test url"),
            token: None,
        }
    }

    fn get(path: &str) -> ApiRequest {
        ApiRequest {
            method: Method::GET,
            path: path.into(),
            body: None,
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("acme-corp_2"), "acme-corp_2");
        assert_eq!(encode_segment("key_Ab-_~."), "key_Ab-_~.");
        assert_eq!(encode_segment("a/b c?d#%"), "a%2Fb%20c%3Fd%23%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment(".."), "..");
    }

    #[test]
    fn request_carries_token_json_and_body() {
        let mut t = target("http://127.0.0.1:9/base");
        t.token = Some(Token::for_tests("s3cret"));
        let req = ApiRequest {
            method: Method::POST,
            path: "/admin/v1/clients".into(),
            body: Some(serde_json::json!({"id": "acme"})),
        };
        let url = t.base.join(&req.path).expect("url");
        let built = build_request(&t, &req, url).expect("request");
        assert_eq!(built.method(), Method::POST);
        assert_eq!(
            built.uri().to_string(),
            "http://127.0.0.1:9/base/admin/v1/clients"
        );
        let auth = built.headers().get(AUTHORIZATION).expect("authorization");
        assert_eq!(auth, "Bearer s3cret");
        assert!(auth.is_sensitive());
        assert_eq!(built.headers().get(CONTENT_TYPE).expect("type"), JSON);
    }

    #[test]
    fn no_token_no_authorization_header() {
        let t = target("http://127.0.0.1:9");
        let req = get("/admin/v1/clients");
        let url = t.base.join(&req.path).expect("url");
        let built = build_request(&t, &req, url).expect("request");
        assert!(built.headers().get(AUTHORIZATION).is_none());
        assert!(built.headers().get(CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn refused_connection_names_the_url_and_hints() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut t = target(&format!("http://127.0.0.1:{port}"));
        t.token = Some(Token::for_tests("s3cret"));
        let err = send(&t, &get("/admin/v1/clients"))
            .await
            .expect_err("refused");
        assert_eq!(err.status, 1);
        assert!(
            err.message
                .contains(&format!("http://127.0.0.1:{port}/admin/v1/clients")),
            "{}",
            err.message
        );
        assert!(err.message.contains("--admin-url"), "{}", err.message);
        assert!(!err.message.contains("s3cret"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accept and hold the connection, never answering.
        let holder = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let t = target(&format!("http://127.0.0.1:{port}"));
        let err = send_within(&t, &get("/admin/v1/clients"), Duration::from_millis(200))
            .await
            .expect_err("timeout");
        holder.abort();
        assert_eq!(err.status, 1);
        assert!(
            err.message.contains("did not answer within"),
            "{}",
            err.message
        );
        assert!(err.message.contains(&format!("127.0.0.1:{port}")));
    }
}
