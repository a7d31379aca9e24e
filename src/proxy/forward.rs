//! Forwarding to the upstream: the request rewrite of SPEC.md
//! ("Forwarding"), the choice of connection pool ([`crate::proxy::pool`])
//! and the response clean-up. Bodies stream both ways;
//! request bodies go through [`LimitedBody`] (size and pause limits). A
//! response whose framing is ambiguous (`Content-Length` beside
//! `Transfer-Encoding`, an unsolicited `101`) is answered 502 and its pooled
//! connection is never reused. With `server.websocket`, a WebSocket upgrade
//! keeps its `Upgrade` header and, once the upstream answers `101`, the two
//! connections are joined into a tunnel.
//!
//! Protocols (docs/protocols.md): two pools, one of HTTP/1.1 keep-alive
//! connections and one HTTP/2 connection (multiplexed: h2c prior knowledge
//! on `http://`, ALPN `h2` on `https://`);
//! `upstream.protocol` picks one, or, with `auto`, the request's version
//! does. `https://` upstreams are verified by rustls (roots of `upstream.ca`
//! or the system's, hostname checked, SNI sent); a refused certificate is a
//! 502 and nothing is sent. A gRPC call keeps `TE: trailers`, and its
//! `grpc-timeout` replaces `upstream.timeout_ms` as the bound on the wait.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::{
    Entry, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING,
    UPGRADE,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::StatusCode;
use http::{HeaderMap, HeaderName, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::auth::{CredentialSource, Principal};
use crate::body::ProxyBody;
use crate::config::{UpstreamConfig, UpstreamProtocol, DEFAULT_BODY_READ_TIMEOUT_MS};
use crate::error::ApiError;
use crate::headers::{
    remove_each, strip_hop_by_hop, X_API_KEY, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_TOLLGATE_CLIENT_ID, X_TOLLGATE_KEY_ID, X_TOLLGATE_SCOPES,
};
use crate::proxy::limits::{is_websocket_upgrade, BodyError, LimitedBody};
use crate::proxy::pool::{Connector, Http1Pool, Http2Pool, Returning};
use crate::settings::LiveServer;

/// Headers some frameworks honour to change the method or the path of a
/// request after tollgate has authorised it (method overrides, and the
/// `X-Original-URL` / `X-Rewrite-URL` of IIS and Symfony): stripped, so a
/// GET-only scope cannot become a write and a path cannot be swapped.
static REQUEST_OVERRIDES: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// The upstream and the pools of connections to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// HTTP/1.1: `protocol = "http1"`, HTTP/1 requests under `"auto"`, and
    /// WebSocket upgrades whatever the protocol.
    http1: Http1Pool,
    /// HTTP/2 only, one multiplexed connection: `"http2"`, and HTTP/2
    /// requests under `"auto"`.
    http2: Http2Pool,
    protocol: UpstreamProtocol,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` an HTTP/1.1 request gets when the client sent none: the
    /// upstream's host, with its port unless it is the scheme's default.
    host: Option<HeaderValue>,
    base_path: String,
    timeout: Duration,
    keep_credential: bool,
    /// `server.max_body_bytes` (`None`: unlimited).
    max_body: Option<u64>,
    /// `server.body_read_timeout_ms`.
    body_timeout: Duration,
    /// `server.websocket`: tunnel WebSocket upgrades.
    websocket: bool,
}

/// The client end of a connection, with its `X-Forwarded-For` entry made
/// once per connection instead of once per request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `addr`'s IP as a header value.
    forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: `http`, or `https` on a TLS listener.
    proto: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            forwarded_for: HeaderValue::from_str(&addr.ip().to_string()).ok(),
            proto: HeaderValue::from_static("http"),
        }
    }

    /// A peer that reached tollgate over TLS.
    pub fn over_tls(mut self) -> Self {
        self.proto = HeaderValue::from_static("https");
        self
    }
}

/// What the forwarding stage needs to know about the request it forwards.
#[derive(Debug)]
pub struct ForwardContext<'a> {
    pub principal: &'a Principal,
    pub credential: CredentialSource,
    pub peer: &'a Peer,
    /// The normalised path that was authorised (the query is forwarded as received).
    pub path: &'a str,
    /// The request is a gRPC call over HTTP/2.
    pub grpc: bool,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        // An http:// upstream never uses TLS: no roots to load.
        let tls = if cfg.tls {
            crate::tls::upstream_client_config(cfg.ca.as_ref().map(|ca| &ca.certs[..]))
        } else {
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()))
                .map(|b| b.with_no_client_auth())
                .unwrap_or_else(|e| unreachable!("ring supports TLS 1.2 and 1.3: {e}"))
        };
        let connector = |h2: bool| -> Connector {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.set_connect_timeout(Some(cfg.connect_timeout));
            // The HTTPS layer owns the scheme check.
            http.enforce_http(false);
            let b = HttpsConnectorBuilder::new().with_tls_config(tls.clone());
            // https:// is https only: a plain connection is never opened to it.
            let b = if cfg.tls {
                b.https_only()
            } else {
                b.https_or_http()
            };
            if h2 {
                b.enable_http2().wrap_connector(http)
            } else {
                b.enable_http1().wrap_connector(http)
            }
        };
        let scheme = if cfg.tls { Scheme::HTTPS } else { Scheme::HTTP };
        // What the connector dials: the upstream's scheme and authority.
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(cfg.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|e| unreachable!("a checked scheme and authority make a URI: {e}"));
        let default_port = if cfg.tls { 443 } else { 80 };
        let host = match cfg.authority.port_u16() {
            Some(p) if p != default_port => {
                HeaderValue::from_str(&format!("{}:{p}", cfg.authority.host())).ok()
            }
            _ => HeaderValue::from_str(cfg.authority.host()).ok(),
        };
        Upstream {
            http1: Http1Pool::new(
                connector(false),
                target.clone(),
                cfg.pool_max_idle_per_host,
                cfg.pool_idle_timeout,
            ),
            http2: Http2Pool::new(connector(true), target, cfg.pool_idle_timeout),
            protocol: cfg.protocol,
            scheme,
            authority: cfg.authority.clone(),
            host,
            base_path: cfg.base_path.clone(),
            timeout: cfg.timeout,
            keep_credential: cfg.keep_credential,
            max_body: None,
            body_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            websocket: false,
        }
    }

    /// Applies the listener's settings about what it forwards: the request
    /// body limits and whether WebSocket upgrades are tunnelled.
    pub fn with_listener(mut self, server: &LiveServer) -> Self {
        self.max_body = server.max_body_bytes;
        self.body_timeout = server.body_read_timeout;
        self.websocket = server.websocket;
        self
    }

    /// Sends the request upstream; answers with the upstream's response, its
    /// hop-by-hop headers removed, and the time to its headers.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        ctx: ForwardContext<'_>,
    ) -> Result<(Response<ProxyBody>, Duration), ApiError> {
        // The client's side of a tunnel, and the protocol it asks for.
        let websocket = (self.websocket && is_websocket_upgrade(req.headers())).then(|| {
            (
                hyper::upgrade::on(&mut req),
                req.headers().get(UPGRADE).cloned(),
            )
        });
        let (mut parts, body) = req.into_parts();
        // The host the client addressed. An absolute-form target (or h2's
        // :authority) wins over a Host header, as RFC 9112 section 3.2.2 says;
        // only the path tollgate authorised is forwarded either way.
        let target_authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let absolute_form = target_authority.is_some() && parts.version <= Version::HTTP_11;
        let original_host = target_authority.or_else(|| parts.headers.get(HOST).cloned());
        // The client and version: an upgrade needs HTTP/1.1 whatever the protocol.
        let h2 = websocket.is_none()
            && match self.protocol {
                UpstreamProtocol::Http1 => false,
                UpstreamProtocol::Http2 => true,
                UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
            };
        // HTTP/2 names the upstream in `:scheme` / `:authority` (an absolute
        // URI); HTTP/1.1 sends the origin form, the host in `Host`.
        parts.uri = self.uri(ctx.path, parts.uri.query(), h2)?;
        parts.version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // A gRPC call's deadline bounds the wait instead of upstream.timeout_ms.
        let timeout = match ctx.grpc {
            true => crate::grpc::timeout(&parts.headers).unwrap_or(self.timeout),
            false => self.timeout,
        };
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        if ctx.grpc {
            // The one TE value HTTP/2 allows, and gRPC servers expect.
            h.insert(TE, HeaderValue::from_static("trailers"));
        }
        remove_each(h, &REQUEST_OVERRIDES);
        if !self.keep_credential {
            if ctx.credential.api_key_header {
                h.remove(&X_API_KEY);
            }
            if ctx.credential.bearer {
                remove_bearer(h);
            }
        }
        append_forwarded_for(h, ctx.peer);
        h.insert(X_FORWARDED_PROTO.clone(), ctx.peer.proto.clone());
        match &original_host {
            // Over HTTP/2 the upstream's `:authority` names the upstream (the
            // connection goes there); a Host beside it must not differ (RFC
            // 9113 §8.3.1), so the client's host rides in X-Forwarded-Host only.
            Some(host) if h2 => {
                h.insert(X_FORWARDED_HOST.clone(), host.clone());
                h.remove(HOST);
            }
            Some(host) => {
                h.insert(X_FORWARDED_HOST.clone(), host.clone());
                if absolute_form {
                    h.insert(HOST, host.clone());
                } else {
                    h.entry(HOST).or_insert_with(|| host.clone());
                }
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
                if let (false, Some(host)) = (h2, &self.host) {
                    h.insert(HOST, host.clone());
                }
            }
        }
        set_identity(h, ctx.principal);
        if let Some((_, Some(protocol))) = &websocket {
            h.insert(UPGRADE, protocol.clone());
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }

        let body = LimitedBody::new(body, self.max_body, self.body_timeout);
        let req = Request::from_parts(parts, body);
        let started = Instant::now();
        let sent = async {
            match h2 {
                true => self.http2.send(req).await.map(|r| (r, None)),
                false => self.http1.send(req).await.map(|(r, c)| (r, Some(c))),
            }
        };
        let (resp, checkin) = match tokio::time::timeout(timeout, sent).await {
            Err(_) => {
                return Err(ApiError::GatewayTimeout(
                    "The upstream did not answer in time.".into(),
                ))
            }
            Ok(Err(e)) => {
                if let Some(cause) = BodyError::find(&e) {
                    tracing::info!(error = %cause, "request body cut off; upstream request aborted");
                    return Err(cause.to_api_error());
                }
                let cause = ErrorChain(&e);
                if cause.is_tls() {
                    tracing::warn!(
                        error = %cause,
                        "upstream TLS handshake failed: the upstream's certificate was refused \
                         (nothing was sent to it)"
                    );
                } else {
                    tracing::warn!(error = %cause, connect = e.is_connect(), "upstream request failed");
                }
                return Err(ApiError::BadGateway(
                    "The upstream refused or broke the connection.".into(),
                ));
            }
            Ok(Ok(resp)) => resp,
        };
        let elapsed = started.elapsed();
        if let (Some((client_side, _)), StatusCode::SWITCHING_PROTOCOLS) =
            (websocket, resp.status())
        {
            return Ok((tunnel(client_side, resp), elapsed));
        }
        if let Some(problem) = framing_problem(&resp) {
            // `checkin` dropped unused: the connection is never reused.
            drop(checkin);
            tracing::warn!(
                problem,
                "upstream response refused; its connection is discarded"
            );
            return Err(ApiError::BadGateway(
                "The upstream sent a malformed response.".into(),
            ));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = match checkin {
            Some(c) => Returning::new(body, c).boxed(),
            None => body.map_err(Into::into).boxed(),
        };
        Ok((Response::from_parts(parts, body), elapsed))
    }

    fn uri(&self, path: &str, query: Option<&str>, absolute: bool) -> Result<Uri, ApiError> {
        // Exactly the length: a `String` with spare room becomes `Bytes`
        // through one more allocation.
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| 1 + q.len()),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq)
            .map_err(|_| ApiError::BadRequest("The request target is not valid.".into()))?;
        if !absolute {
            return Ok(Uri::from(pq));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ApiError::BadRequest("The request target is not valid.".into()))
    }
}

/// An error and its sources, for the log; looks inside `io::Error`s (whose
/// `source` skips the error they wrap), where rustls's errors travel.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl ErrorChain<'_> {
    /// Each error of the chain, outermost first.
    fn each(&self, mut f: impl FnMut(&(dyn std::error::Error + 'static))) {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        while let Some(e) = cur {
            f(e);
            cur = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => e.source(),
            };
        }
    }

    /// Whether rustls failed the connection (a refused certificate, a
    /// failed handshake).
    fn is_tls(&self) -> bool {
        let mut found = false;
        self.each(|e| found |= e.is::<rustls::Error>());
        found
    }
}

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        self.each(|e| {
            let text = e.to_string();
            if parts.last() != Some(&text) {
                parts.push(text);
            }
        });
        f.write_str(&parts.join(": "))
    }
}

/// Joins the client's and the upstream's upgraded connections once both are
/// ready, and answers the client with the upstream's `101`.
fn tunnel(
    client_side: hyper::upgrade::OnUpgrade,
    mut resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let upstream_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_side, upstream_side) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(up, down, "websocket tunnel closed"),
                    Err(e) => tracing::debug!(error = %e, "websocket tunnel broken"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
        }
    });
    let (mut parts, _) = resp.into_parts();
    let protocol = parts.headers.get(UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        parts.headers.insert(UPGRADE, p);
    }
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    Response::from_parts(parts, crate::body::empty())
}

/// Why an upstream response must not be passed on, if it must not: framing
/// that two parsers could read differently (RFC 9112 §6.3 calls it a
/// possible smuggling attempt), or a `101` nobody asked for.
fn framing_problem<B>(resp: &Response<B>) -> Option<&'static str> {
    let h = resp.headers();
    if h.contains_key(TRANSFER_ENCODING) && h.contains_key(CONTENT_LENGTH) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return Some("an unsolicited 101 Switching Protocols");
    }
    None
}

/// Removes `Authorization: Bearer ...` values, keeping any other scheme.
fn remove_bearer(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(AUTHORIZATION)
        .iter()
        .filter(|v| {
            let b = v.as_bytes();
            !(b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"bearer "))
        })
        .cloned()
        .collect();
    h.remove(AUTHORIZATION);
    for v in kept {
        h.append(AUTHORIZATION, v);
    }
}

/// Appends the peer's IP to `X-Forwarded-For` (the readable values the
/// client sent, joined into one, then the IP).
fn append_forwarded_for(h: &mut HeaderMap, peer: &Peer) {
    let Some(ip) = &peer.forwarded_for else {
        return;
    };
    match h.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(ip.clone());
        }
        Entry::Occupied(mut e) => {
            let prior: Vec<&str> = e.iter().filter_map(|v| v.to_str().ok()).collect();
            let value = if prior.is_empty() {
                ip.clone()
            } else {
                let ip = ip.to_str().unwrap_or_default();
                match HeaderValue::from_str(&format!("{}, {ip}", prior.join(", "))) {
                    Ok(v) => v,
                    Err(_) => return,
                }
            };
            e.insert(value);
        }
    }
}

/// Replaces any client-sent `X-Tollgate-*` with the verified identity.
fn set_identity(h: &mut HeaderMap, p: &Principal) {
    let id = p.identity();
    for (name, value) in [
        (&X_TOLLGATE_CLIENT_ID, id.client_id),
        (&X_TOLLGATE_KEY_ID, id.key_id),
        (&X_TOLLGATE_SCOPES, id.scopes),
    ] {
        // `insert` drops every value the client sent under that name.
        match value {
            Some(v) => {
                h.insert(name.clone(), v);
            }
            None => {
                h.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn identity_replaces_client_copies() {
        let mut h = HeaderMap::new();
        h.append(
            X_TOLLGATE_CLIENT_ID.clone(),
            HeaderValue::from_static("evil"),
        );
        h.append(
            X_TOLLGATE_CLIENT_ID.clone(),
            HeaderValue::from_static("evil2"),
        );
        h.append(X_TOLLGATE_SCOPES.clone(), HeaderValue::from_static("admin"));
        let p = Principal::new(
            Arc::from("key_abc"),
            Arc::from("acme"),
            1,
            &["read:x".to_string(), "write:x".to_string()],
        );
        set_identity(&mut h, &p);
        let all: Vec<_> = h.get_all(&X_TOLLGATE_CLIENT_ID).iter().collect();
        assert_eq!(all, ["acme"]);
        assert_eq!(h[&X_TOLLGATE_KEY_ID], "key_abc");
        let all: Vec<_> = h.get_all(&X_TOLLGATE_SCOPES).iter().collect();
        assert_eq!(all, ["read:x write:x"]);

        // A value that cannot be sent is not, and neither is the client's copy.
        let p = Principal::new(Arc::from("key\n"), Arc::from("acme"), 1, &[]);
        h.append(X_TOLLGATE_KEY_ID.clone(), HeaderValue::from_static("evil"));
        set_identity(&mut h, &p);
        assert!(h.get(&X_TOLLGATE_KEY_ID).is_none());
        assert_eq!(h[&X_TOLLGATE_SCOPES], "");
    }

    #[test]
    fn forwarded_for_appends() {
        let peer = Peer::new("127.0.0.1:5000".parse().unwrap());
        let v6 = Peer::new("[::1]:5000".parse().unwrap());
        let cases: [(&[&str], &Peer, &str); 5] = [
            (&[], &peer, "127.0.0.1"),
            (&["10.0.0.1"], &peer, "10.0.0.1, 127.0.0.1"),
            (
                &["10.0.0.1", "10.0.0.2, 10.0.0.3"],
                &peer,
                "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1",
            ),
            (&["10.0.0.1"], &v6, "10.0.0.1, ::1"),
            // Unreadable values are dropped, not passed on.
            (&["caf\u{e9}"], &peer, "127.0.0.1"),
        ];
        for (prior, peer, want) in cases {
            let mut h = HeaderMap::new();
            for v in prior {
                let v = HeaderValue::from_bytes(v.as_bytes()).unwrap();
                h.append(X_FORWARDED_FOR.clone(), v);
            }
            append_forwarded_for(&mut h, peer);
            let all: Vec<_> = h.get_all(&X_FORWARDED_FOR).iter().collect();
            assert_eq!(all, [want], "{prior:?}");
        }
    }

    #[test]
    fn only_bearer_authorization_is_removed() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer sk"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
        remove_bearer(&mut h);
        let all: Vec<_> = h.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(all, ["Basic dXNlcg=="]);
    }
}
