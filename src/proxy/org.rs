//! The organisation key-management API on the public listener: the caller's
//! key decides the organisation; nothing in the request can name another.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{checked_usage, Refusal};
use crate::app::{App, Live};
use crate::auth::Principal;
use crate::body::{empty, ProxyBody};
use crate::error::{json_response, ApiError};
use crate::headers::decorate;
use crate::keymgmt::{read_json, NewKey};
use crate::metrics::Outcome;
use crate::model::{SCOPE_READ_KEYS, SCOPE_WRITE_KEYS};

/// `rest` is the path after `/api/v1/org/api-keys`: empty or `/{id}`.
pub(super) async fn handle(
    app: &App,
    live: &Live,
    p: &Principal,
    req: Request<Incoming>,
    rest: &str,
) -> Result<(Response<ProxyBody>, Outcome), Refusal> {
    let state = checked_usage(app, live, p).await?;
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
    let mut resp = match (method, rest) {
        (Method::GET | Method::HEAD, "") => {
            need(SCOPE_READ_KEYS)?;
            let list = app.keys.list(&p.client_id).await.map_err(fail)?;
            json_response(StatusCode::OK, &list)
        }
        (Method::POST, "") => {
            need(SCOPE_WRITE_KEYS)?;
            let body = read_json(req.into_body()).await.map_err(fail)?;
            let new = NewKey::from_json(&body, &live.config.auth.scopes).map_err(fail)?;
            let created = app
                .keys
                .create(&p.client_id, new, Some(p))
                .await
                .map_err(fail)?;
            json_response(StatusCode::CREATED, &created)
        }
        (Method::DELETE, id) if id.len() > 1 && !id[1..].contains('/') => {
            need(SCOPE_WRITE_KEYS)?;
            app.keys
                .revoke(&id[1..], Some(&p.client_id))
                .await
                .map_err(fail)?;
            if *id.get(1..).unwrap_or_default() == *p.key_id {
                app.auth.forget(&p.key_id);
            }
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (_, "") => return Err(fail(ApiError::MethodNotAllowed("Use GET or POST.".into()))),
        (_, id) if id.len() > 1 && !id[1..].contains('/') => {
            return Err(fail(ApiError::MethodNotAllowed("Use DELETE.".into())))
        }
        _ => return Err(fail(ApiError::NotFound("No such endpoint.".into()))),
    };
    decorate(resp.headers_mut(), &state, live.ietf());
    Ok((resp, Outcome::served))
}
