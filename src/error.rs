//! The one error type of the request paths (public and admin), and the one
//! place it becomes an HTTP response: `{"error": "...", "code": "..."}`.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{full, ProxyBody};

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
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            ApiError::RateLimited { .. } => "rate_limited",
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
