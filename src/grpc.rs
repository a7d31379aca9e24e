//! What tollgate must know about a gRPC call (SPEC.md "Protocols"): whether
//! a request is one, the refusal of gRPC over HTTP/1.1, and the call's
//! deadline from `grpc-timeout`. Pure functions of the request head; the
//! refusal's wire form is [`crate::error::ApiError::respond`]'s, the
//! forwarding is [`crate::proxy::forward`]'s.
//!
//! `application/grpc-web*` is not gRPC here: gRPC-Web is plain HTTP/1.1 or
//! HTTP/2 with the status in the body, forwarded like any other request.

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, Method, Request, Version};

use crate::error::{ApiError, WireForm};

/// `grpc-timeout`: the call's deadline, relative to its start.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let prefix = b"application/grpc";
    ct.len() >= prefix.len()
        && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(ct.get(prefix.len()), None | Some(b'+' | b';'))
}

/// The form a refusal of `req` takes: gRPC for a gRPC call over HTTP/2.
/// HTTP/1 requests cost one comparison.
pub fn wire_form<B>(req: &Request<B>) -> WireForm {
    if req.version() == Version::HTTP_2 && is_grpc(req.headers()) {
        WireForm::Grpc
    } else {
        WireForm::Json
    }
}

/// Refuses a gRPC call made over HTTP/1.x: gRPC needs HTTP/2 (its status
/// travels in trailers), and an HTTP/1.1 client cannot read the answer.
pub fn check_version<B>(req: &Request<B>) -> Result<(), ApiError> {
    if req.version() < Version::HTTP_2 && req.method() == Method::POST && is_grpc(req.headers()) {
        return Err(ApiError::BadRequest(
            "gRPC needs HTTP/2: this request has content-type application/grpc over HTTP/1.1."
                .into(),
        ));
    }
    Ok(())
}

/// The call's `grpc-timeout` (`1` to `8` digits and a unit `H M S m u n`);
/// `None` when absent or malformed (a malformed one is ignored, as gRPC
/// servers do).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn grpc_content_types() {
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("Application/GRPC", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            assert_eq!(is_grpc(&headers(&[("content-type", ct)])), want, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn wire_form_and_version() {
        let req = |version, ct: &str| {
            Request::builder()
                .method("POST")
                .version(version)
                .header("content-type", ct)
                .body(())
                .unwrap()
        };
        assert_eq!(
            wire_form(&req(Version::HTTP_2, "application/grpc")),
            WireForm::Grpc
        );
        assert_eq!(
            wire_form(&req(Version::HTTP_2, "application/json")),
            WireForm::Json
        );
        assert_eq!(
            wire_form(&req(Version::HTTP_11, "application/grpc")),
            WireForm::Json
        );
        assert!(check_version(&req(Version::HTTP_11, "application/grpc")).is_err());
        assert!(check_version(&req(Version::HTTP_2, "application/grpc")).is_ok());
        assert!(check_version(&req(Version::HTTP_11, "application/grpc-web")).is_ok());
    }

    #[test]
    fn grpc_timeouts() {
        for (v, want) in [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
        ] {
            assert_eq!(timeout(&headers(&[("grpc-timeout", v)])), want, "{v}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }
}
