//! The organisation key-management API on the public listener: the caller's
//! key decides the organisation; nothing in the request can name another.
//! A key id of another organisation answers exactly as a missing one (404).
//!
//! - `GET    /api/v1/org/api-keys`               `read:api_keys`
//! - `POST   /api/v1/org/api-keys`               `write:api_keys`
//! - `DELETE /api/v1/org/api-keys/{id}`          `write:api_keys`
//! - `POST   /api/v1/org/api-keys/{id}/rotate`   `write:api_keys`

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{checked_usage, Caller, Refusal};
use crate::api::{self, CreateKey, Empty, RotateKey};
use crate::app::{App, Live};
use crate::body::{empty, ProxyBody};
use crate::error::{json_response, ApiError};
use crate::headers::decorate;
use crate::metrics::Outcome;
use crate::model::{SCOPE_READ_KEYS, SCOPE_WRITE_KEYS};

/// What `rest` (the path after `/api/v1/org/api-keys`) names.
#[derive(Debug, PartialEq, Eq)]
enum Resource<'a> {
    Collection,
    Key(&'a str),
    Rotate(&'a str),
    Unknown,
}

fn resource(rest: &str) -> Resource<'_> {
    if rest.is_empty() {
        return Resource::Collection;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Resource::Unknown;
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [id] if !id.is_empty() => Resource::Key(id),
        [id, "rotate"] if !id.is_empty() => Resource::Rotate(id),
        _ => Resource::Unknown,
    }
}

pub(super) async fn handle(
    app: &App,
    live: &Live,
    caller: &Caller<'_>,
    req: Request<Incoming>,
    rest: &str,
) -> Result<(Response<ProxyBody>, Outcome), Refusal> {
    let p = caller.principal;
    let state = checked_usage(app, live, caller).await?;
    let fail = |e: ApiError| {
        let outcome = match e {
            ApiError::Forbidden(_) => Outcome::forbidden,
            ApiError::Unavailable(_) => Outcome::store_error,
            _ => Outcome::bad_request,
        };
        Refusal::new(e, outcome).with_state(Some(state))
    };
    let need = |scope: &str| {
        if p.has_scope(scope) {
            Ok(())
        } else {
            Err(fail(ApiError::Forbidden(format!(
                "This key lacks the scope \"{scope}\"."
            ))))
        }
    };
    let method = req.method().clone();
    let mut resp = match (method, resource(rest)) {
        (Method::GET | Method::HEAD, Resource::Collection) => {
            need(SCOPE_READ_KEYS)?;
            let list = app.keys.list(&p.client_id).await.map_err(fail)?;
            json_response(StatusCode::OK, &list)
        }
        (Method::POST, Resource::Collection) => {
            need(SCOPE_WRITE_KEYS)?;
            let (parts, body) = req.into_parts();
            let new: CreateKey = api::read_json(&parts.headers, body, Empty::Refused)
                .await
                .map_err(fail)?;
            let created = app
                .keys
                .create(&p.client_id, new, &live.config.auth.scopes, Some(p))
                .await
                .map_err(fail)?;
            json_response(StatusCode::CREATED, &created)
        }
        (Method::DELETE, Resource::Key(id)) => {
            need(SCOPE_WRITE_KEYS)?;
            app.keys
                .revoke(id, Some(&p.client_id))
                .await
                .map_err(fail)?;
            app.auth.forget(id);
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (Method::POST, Resource::Rotate(id)) => {
            need(SCOPE_WRITE_KEYS)?;
            let (parts, body) = req.into_parts();
            let rotate: RotateKey = api::read_json(&parts.headers, body, Empty::IsEmptyObject)
                .await
                .map_err(fail)?;
            let rotated = app
                .keys
                .rotate(id, Some(&p.client_id), rotate)
                .await
                .map_err(fail)?;
            json_response(StatusCode::CREATED, &rotated)
        }
        (_, Resource::Collection) => {
            return Err(fail(ApiError::method_not_allowed("GET, HEAD, POST")))
        }
        (_, Resource::Key(_)) => return Err(fail(ApiError::method_not_allowed("DELETE"))),
        (_, Resource::Rotate(_)) => return Err(fail(ApiError::method_not_allowed("POST"))),
        (_, Resource::Unknown) => return Err(fail(ApiError::NotFound("No such endpoint.".into()))),
    };
    decorate(resp.headers_mut(), &state, live.ietf());
    Ok((resp, Outcome::served))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources() {
        assert_eq!(resource(""), Resource::Collection);
        assert_eq!(resource("/key_x"), Resource::Key("key_x"));
        assert_eq!(resource("/key_x/rotate"), Resource::Rotate("key_x"));
        for unknown in ["/", "x", "/key_x/", "/key_x/other", "/a/b/c", "//rotate"] {
            assert_eq!(resource(unknown), Resource::Unknown, "{unknown}");
        }
    }
}
