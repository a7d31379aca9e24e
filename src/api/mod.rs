//! The admin and organisation APIs' contract in types: validated field values
//! ([`fields`]), request and response bodies ([`bodies`]), and the one way a
//! JSON request body is read ([`read_json`]): `Content-Type`, size, syntax,
//! unknown fields and every field's rule, each refused with SPEC.md's JSON
//! error naming the field. The HTTP routing stays in `admin` and `proxy::org`.

pub mod bodies;
pub mod fields;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

pub use crate::usage::UsageDoc;
pub use bodies::*;
pub use fields::*;

use crate::error::ApiError;

/// Largest JSON body the management APIs read.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Whether an empty body reads as `{}` (every field optional) or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    IsEmptyObject,
    Refused,
}

/// Refuses a body declared as anything but JSON with 415. A missing
/// `Content-Type` is read as JSON (a hand-typed `curl -X POST -d` that sets
/// none still works); `application/json` may carry parameters (`charset`).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match media {
        Some(m) if m.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(
            "The body must be JSON: send Content-Type: application/json.".into(),
        )),
    }
}

/// Reads a request body of at most [`MAX_JSON_BODY`] bytes as a `T`, after
/// checking its `Content-Type`.
pub async fn read_json<T, B>(headers: &HeaderMap, body: B, empty: Empty) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_content_type(headers)?;
    let bytes = Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "The body must be JSON of at most {MAX_JSON_BODY} bytes."
            ))
        })?
        .to_bytes();
    if empty == Empty::IsEmptyObject && bytes.trim_ascii().is_empty() {
        return parse(b"{}");
    }
    parse(&bytes)
}

/// Parses `bytes` as a `T`, a JSON object; the error names the field that
/// failed and why.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs also read `[...]` (fields by position): only an
    // object is a body.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::BadRequest(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => "The body must be a JSON object.".into(),
                Err(e) => format!("The body is not valid JSON: {e}."),
            },
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let reason = without_position(inner);
        ApiError::BadRequest(match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                format!("\"{path}\": {reason}.")
            }
            serde_json::error::Category::Data => {
                format!("The body must be a JSON object with the documented fields: {reason}.")
            }
            _ => format!("The body is not valid JSON: {inner}."),
        })
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn err(r: Result<impl std::fmt::Debug, ApiError>) -> (String, &'static str) {
        let e = r.unwrap_err();
        (e.to_string(), e.code())
    }

    #[test]
    fn messages_name_the_field_and_the_reason() {
        let (msg, code) = err(parse::<PatchClient>(br#"{"name": "Acme\u000fCorp"}"#));
        assert_eq!(code, "bad_request");
        assert_eq!(
            msg,
            "\"name\": must not contain control characters (U+000F at character 5)."
        );
        let (msg, _) = err(parse::<CreateClient>(br#"{"id": "a", "per_minute": 0}"#));
        assert_eq!(msg, "\"per_minute\": must be at least 1.");
        let (msg, _) = err(parse::<CreateClient>(br#"{"id": "a", "extra": 1}"#));
        assert!(msg.contains("unknown field `extra`"), "{msg}");
        let (msg, _) = err(parse::<CreateKey>(br#"{"name": "a", "scopes": ["x", 1]}"#));
        assert!(msg.starts_with("\"scopes[1]\": invalid type"), "{msg}");
        let (msg, _) = err(parse::<CreateKey>(b"[]"));
        assert_eq!(msg, "The body must be a JSON object.");
        let (msg, _) = err(parse::<PatchClient>(b" [null, null]"));
        assert_eq!(msg, "The body must be a JSON object.");
        let (msg, _) = err(parse::<CreateKey>(b"not json"));
        assert!(msg.starts_with("The body is not valid JSON"), "{msg}");
        let (msg, _) = err(parse::<CreateKey>(br#"{"name": "a", "scopes": 1}"#));
        assert!(msg.starts_with("\"scopes\": invalid type"), "{msg}");
        let (msg, _) = err(parse::<CreateKey>(b"{"));
        assert!(msg.starts_with("The body is not valid JSON"), "{msg}");
        let (msg, _) = err(parse::<RotateKey>(b"{} x"));
        assert!(msg.starts_with("The body is not valid JSON"), "{msg}");
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok(), "missing reads as JSON");
        for ok in ["application/json", "Application/JSON; charset=utf-8"] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(bad));
            assert_eq!(
                check_content_type(&h).unwrap_err().code(),
                "unsupported_media_type",
                "{bad}"
            );
        }
    }
}
