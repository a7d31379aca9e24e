//! The one error type of the request paths (public and admin), and the one
//! place it becomes a response, in either of its two wire forms
//! ([`ApiError::respond`]): SPEC.md's JSON error
//! (`{"error": "...", "code": "..."}` with the HTTP status), or, for a gRPC
//! call, a trailers-only gRPC response (HTTP 200, `grpc-status` from SPEC.md's
//! table, a percent-encoded `grpc-message`, `grpc-retry-pushback-ms` on 429)
//! — never an HTTP error status, which gRPC clients read as UNAVAILABLE and
//! retry.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{empty, full, ProxyBody};

/// `grpc-status`: the call's status code.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// How long a client should wait before retrying, in milliseconds (gRFC A6).
pub static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
/// The `content-type` of a gRPC response.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// The two shapes a refusal can take on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireForm {
    /// SPEC.md's JSON error with its HTTP status.
    Json,
    /// A trailers-only gRPC response.
    Grpc,
}

/// gRPC status codes (grpc/doc/statuscodes.md) that tollgate answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// Everything a request can fail with, each variant one row of SPEC.md's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    NameTaken(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The method is not one the endpoint serves; `allow` lists those it does
    /// (the `Allow` header RFC 9110 requires on a 405).
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        allow: &'static str,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A limit is exhausted; `retry_after` whole seconds, at least 1.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// Policies: the route costs more units than the client's limit allows:
    /// 429 `rate_limited` without `Retry-After`, since waiting never helps.
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidScope(_) | ApiError::NameTaken(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } | ApiError::OverLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine code of SPEC.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidScope(_) => "invalid_scope",
            ApiError::NameTaken(_) => "name_taken",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Conflict(_) => "conflict",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RateLimited { .. } | ApiError::OverLimit(_) => "rate_limited",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::GatewayTimeout(_) => "gateway_timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A 405 for an endpoint serving the methods `allow` (e.g. `"GET, POST"`).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError::MethodNotAllowed {
            message: format!("Method not allowed: this endpoint allows {allow}."),
            allow,
        }
    }

    /// The gRPC status of SPEC.md's table ("Protocols"); the rows it does
    /// not name take the nearest status.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidScope(_) | ApiError::NameTaken(_) => {
                GrpcCode::InvalidArgument
            }
            ApiError::Unauthorized(_) => GrpcCode::Unauthenticated,
            ApiError::Forbidden(_) => GrpcCode::PermissionDenied,
            ApiError::NotFound(_) => GrpcCode::NotFound,
            ApiError::MethodNotAllowed { .. } | ApiError::NotImplemented(_) => {
                GrpcCode::Unimplemented
            }
            ApiError::UnsupportedMediaType(_) => GrpcCode::InvalidArgument,
            ApiError::Conflict(_) => GrpcCode::AlreadyExists,
            ApiError::RequestTimeout(_) | ApiError::GatewayTimeout(_) => GrpcCode::DeadlineExceeded,
            ApiError::PayloadTooLarge(_)
            | ApiError::RateLimited { .. }
            | ApiError::OverLimit(_) => GrpcCode::ResourceExhausted,
            ApiError::BadGateway(_) | ApiError::Unavailable(_) => GrpcCode::Unavailable,
            ApiError::Internal(_) => GrpcCode::Internal,
        }
    }

    /// The refusal in the form the request calls for. Rate-limit headers
    /// are added by the caller (as gRPC metadata they ride the same way).
    pub fn respond(&self, form: WireForm) -> Response<ProxyBody> {
        match form {
            WireForm::Json => self.to_response(),
            WireForm::Grpc => self.to_grpc_response(),
        }
    }

    /// The trailers-only gRPC response: HTTP 200, no body, the status in the
    /// one HEADERS frame.
    pub fn to_grpc_response(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
        h.insert(
            GRPC_STATUS.clone(),
            HeaderValue::from(self.grpc_code() as u16),
        );
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&self.to_string())) {
            h.insert(GRPC_MESSAGE.clone(), v);
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            h.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            h.insert(
                GRPC_RETRY_PUSHBACK_MS.clone(),
                HeaderValue::from(retry_after.saturating_mul(1000)),
            );
        }
        resp
    }

    /// The JSON error response. Rate-limit headers are added by the caller.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let body = serde_json::json!({ "error": self.to_string(), "code": self.code() });
        let mut resp = json_response(self.status(), &body);
        match self {
            ApiError::RateLimited { retry_after, .. } => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

/// `grpc-message` encoding (gRPC over HTTP/2, "Responses"): bytes outside
/// printable ASCII, and `%` itself, as `%XX` of the UTF-8 bytes.
pub fn percent_encode(message: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Unavailable(_) => {
                ApiError::Unavailable("The rate-limit store is unavailable.".into())
            }
            S::ClientExists => ApiError::Conflict("A client with this id already exists.".into()),
            S::NoSuchClient => ApiError::NotFound("No such client.".into()),
            S::NameTaken => {
                ApiError::NameTaken("The organisation already has a key with this name.".into())
            }
            S::Corrupt(_) => {
                ApiError::Internal("The store holds data this version cannot read.".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The mapping of SPEC.md's error table, pinned.
    #[tokio::test]
    async fn every_error_maps_to_its_status_and_code() {
        let s = String::new;
        let table: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest(s()), 400, "bad_request"),
            (ApiError::InvalidScope(s()), 400, "invalid_scope"),
            (ApiError::NameTaken(s()), 400, "name_taken"),
            (ApiError::Unauthorized(s()), 401, "unauthorized"),
            (ApiError::Forbidden(s()), 403, "forbidden"),
            (ApiError::NotFound(s()), 404, "not_found"),
            (
                ApiError::method_not_allowed("GET, HEAD"),
                405,
                "method_not_allowed",
            ),
            (ApiError::Conflict(s()), 409, "conflict"),
            (
                ApiError::UnsupportedMediaType(s()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::RequestTimeout(s()), 408, "request_timeout"),
            (ApiError::PayloadTooLarge(s()), 413, "payload_too_large"),
            (ApiError::OverLimit(s()), 429, "rate_limited"),
            (
                ApiError::RateLimited {
                    message: s(),
                    retry_after: 3,
                },
                429,
                "rate_limited",
            ),
            (ApiError::NotImplemented(s()), 501, "not_implemented"),
            (ApiError::BadGateway(s()), 502, "bad_gateway"),
            (ApiError::Unavailable(s()), 503, "unavailable"),
            (ApiError::GatewayTimeout(s()), 504, "gateway_timeout"),
            (ApiError::Internal(s()), 500, "internal"),
        ];
        for (err, status, code) in table {
            let resp = err.to_response();
            assert_eq!(resp.status().as_u16(), status, "{err:?}");
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["code"], code);
        }
    }

    /// Both wire forms of every refusal, pinned: the JSON form's status and
    /// code, the gRPC form's HTTP 200, content-type, status and message.
    #[tokio::test]
    async fn every_error_has_both_wire_forms() {
        let m = || "Nope: 100% \"wrong\" \u{e9}".to_string();
        // error, HTTP status, gRPC status
        let table: Vec<(ApiError, u16, u8)> = vec![
            (ApiError::BadRequest(m()), 400, 3),
            (ApiError::InvalidScope(m()), 400, 3),
            (ApiError::NameTaken(m()), 400, 3),
            (ApiError::Unauthorized(m()), 401, 16),
            (ApiError::Forbidden(m()), 403, 7),
            (ApiError::NotFound(m()), 404, 5),
            (
                ApiError::MethodNotAllowed {
                    message: m(),
                    allow: "GET",
                },
                405,
                12,
            ),
            (ApiError::UnsupportedMediaType(m()), 415, 3),
            (ApiError::Conflict(m()), 409, 6),
            (ApiError::RequestTimeout(m()), 408, 4),
            (ApiError::PayloadTooLarge(m()), 413, 8),
            (ApiError::OverLimit(m()), 429, 8),
            (
                ApiError::RateLimited {
                    message: m(),
                    retry_after: 3,
                },
                429,
                8,
            ),
            (ApiError::NotImplemented(m()), 501, 12),
            (ApiError::BadGateway(m()), 502, 14),
            (ApiError::Unavailable(m()), 503, 14),
            (ApiError::GatewayTimeout(m()), 504, 4),
            (ApiError::Internal(m()), 500, 13),
        ];
        for (err, status, grpc) in table {
            let json = err.respond(WireForm::Json);
            assert_eq!(json.status().as_u16(), status, "{err:?}");
            assert_eq!(json.headers()[CONTENT_TYPE], "application/json");
            assert!(json.headers().get(&GRPC_STATUS).is_none());

            let resp = err.respond(WireForm::Grpc);
            assert_eq!(resp.status(), StatusCode::OK, "{err:?}");
            let h = resp.headers();
            assert_eq!(h[CONTENT_TYPE], "application/grpc");
            assert_eq!(h[&GRPC_STATUS], grpc.to_string().as_str(), "{err:?}");
            assert_eq!(h[&GRPC_MESSAGE], "Nope: 100%25 \"wrong\" %C3%A9", "{err:?}");
            let pushback = h
                .get(&GRPC_RETRY_PUSHBACK_MS)
                .map(|v| v.to_str().unwrap().to_owned());
            // No pushback where waiting does not help (a route costing more than the limit).
            let want = matches!(err, ApiError::RateLimited { .. }).then(|| "3000".to_owned());
            assert_eq!(pushback, want, "{err:?}");
            // Trailers-only: the HEADERS frame ends the stream, no body.
            use http_body::Body as _;
            assert!(resp.body().is_end_stream(), "{err:?}");
            let body = resp.into_body().collect().await.unwrap();
            assert!(body.trailers().is_none());
            assert!(body.to_bytes().is_empty());
        }
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("plain text: ok."), "plain text: ok.");
        assert_eq!(percent_encode("a%b"), "a%25b");
        assert_eq!(percent_encode("line\nbreak"), "line%0Abreak");
        assert_eq!(percent_encode("\u{20ac}"), "%E2%82%AC");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let resp = ApiError::RateLimited {
            message: "Rate limit exceeded. Retry after 7 seconds.".into(),
            retry_after: 7,
        }
        .to_response();
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let resp = ApiError::method_not_allowed("GET, POST").to_response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[ALLOW], "GET, POST");
    }
}
