//! The admin listener: unauthenticated `/healthz`, `/readyz` and `/metrics`,
//! and the `/admin/v1` API behind the bearer token. Never mounted on the
//! public listener.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{empty, full, ProxyBody};
use crate::clock::Clock;
use crate::error::{json_response, ApiError};
use crate::keymgmt::{grace_from_json, read_json, read_optional_json, NewKey};
use crate::model::{valid_client_id, Client, ClientList, ClientPatch, ClientStatus, ClientView};
use crate::store::UsageRequest;
use crate::usage::UsageDoc;

/// Serves one admin-listener request; never fails.
pub async fn handle(app: Arc<App>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    crate::proxy::mark_credentials_sensitive(req.headers_mut());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match route(&app, req).await {
        Ok(r) => r,
        Err(e) => e.to_response(),
    };
    tracing::debug!(target: "tollgate::admin", method = %method, path = %path, status = resp.status().as_u16(), "admin request");
    resp
}

async fn route(app: &App, req: Request<Incoming>) -> Result<Response<ProxyBody>, ApiError> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        (&Method::GET, ["readyz"]) => match app.store.ping().await {
            Ok(()) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ready"}),
            )),
            // failure_mode = "open": a degraded pod still serves known keys,
            // so it stays in the load balancer; the body says it is degraded.
            Err(e) if app.degraded.is_some() => {
                tracing::warn!(error = %e, "readiness: store unreachable, serving degraded");
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": "degraded"}),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "readiness: store unreachable");
                Err(ApiError::Unavailable("The store is unreachable.".into()))
            }
        },
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(full(app.metrics.encode()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Ok(r)
        }
        (_, ["admin", "v1", rest @ ..]) => {
            authorize(app, &req)?;
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            admin_api(app, req, &method, &rest).await
        }
        _ => Err(ApiError::NotFound("No such endpoint.".into())),
    }
}

/// Checks `Authorization: Bearer <token>` in constant time.
fn authorize(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = app.admin_token.as_deref() else {
        return Err(ApiError::Unauthorized(format!(
            "The admin API is disabled: set ${} on the server.",
            app.boot.admin_token_env
        )));
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..]));
    match presented {
        Some(p) if bool::from(p.ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(ApiError::Unauthorized(
            "A valid admin token is required.".into(),
        )),
    }
}

async fn admin_api(
    app: &App,
    req: Request<Incoming>,
    method: &Method,
    segs: &[&str],
) -> Result<Response<ProxyBody>, ApiError> {
    let live = app.live();
    let (d_pm, d_mo) = (live.config.limits.per_minute, live.config.limits.monthly);
    let view = |c: &Client| ClientView::new(c, d_pm, d_mo);
    match (method, segs) {
        (&Method::POST, ["clients"]) => {
            let body = read_json(req.into_body()).await?;
            let client = new_client(&body, app.clock.as_ref())?;
            app.store.create_client(&client).await?;
            Ok(json_response(StatusCode::CREATED, &view(&client)))
        }
        (&Method::GET, ["clients"]) => {
            let clients = app.store.list_clients().await?;
            Ok(json_response(
                StatusCode::OK,
                &ClientList {
                    clients: clients.iter().map(view).collect(),
                },
            ))
        }
        (&Method::GET, ["clients", id]) => {
            let c = existing_client(app, id).await?;
            Ok(json_response(StatusCode::OK, &view(&c)))
        }
        (&Method::PATCH, ["clients", id]) => {
            let body = read_json(req.into_body()).await?;
            let patch = client_patch(&body)?;
            match app.store.update_client(id, &patch).await? {
                Some(c) => Ok(json_response(StatusCode::OK, &view(&c))),
                None => Err(no_client()),
            }
        }
        (&Method::POST, ["clients", id, "keys"]) => {
            existing_client(app, id).await?;
            let body = read_json(req.into_body()).await?;
            let new = NewKey::from_json(&body, &live.config.auth.scopes)?;
            let created = app.keys.create(id, new, None).await?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::GET, ["clients", id, "keys"]) => {
            existing_client(app, id).await?;
            Ok(json_response(StatusCode::OK, &app.keys.list(id).await?))
        }
        (&Method::GET, ["clients", id, "usage"]) => {
            existing_client(app, id).await?;
            let decision = app
                .store
                .usage(&UsageRequest {
                    client_id: id,
                    key: None,
                    defaults: live.defaults(),
                })
                .await?;
            let state = decision.state.ok_or_else(no_client)?;
            Ok(json_response(StatusCode::OK, &UsageDoc::from(&state)))
        }
        (&Method::DELETE, ["keys", key_id]) => {
            app.keys.revoke(key_id, None).await?;
            app.auth.forget(key_id);
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        (&Method::POST, ["keys", key_id, "rotate"]) => {
            let body = read_optional_json(req.into_body()).await?;
            reject_unknown(&body, &["grace_seconds"])?;
            let grace = grace_from_json(&body)?;
            let rotated = app.keys.rotate(key_id, None, grace).await?;
            Ok(json_response(StatusCode::CREATED, &rotated))
        }
        (
            _,
            ["clients"]
            | ["clients", _]
            | ["clients", _, "keys" | "usage"]
            | ["keys", _]
            | ["keys", _, "rotate"],
        ) => Err(ApiError::MethodNotAllowed(
            "Method not allowed on this resource.".into(),
        )),
        _ => Err(ApiError::NotFound("No such endpoint.".into())),
    }
}

fn no_client() -> ApiError {
    ApiError::NotFound("No such client.".into())
}

async fn existing_client(app: &App, id: &str) -> Result<Client, ApiError> {
    if !valid_client_id(id) {
        return Err(no_client());
    }
    app.store.get_client(id).await?.ok_or_else(no_client)
}

/// A positive integer field, or absent.
fn limit_field(body: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(ApiError::BadRequest(format!(
                "\"{key}\" must be a positive integer."
            ))),
        },
    }
}

fn name_field(body: &serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= 256 && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::BadRequest(
            "\"name\" must be a string of 1 to 256 characters.".into(),
        )),
    }
}

fn reject_unknown(body: &serde_json::Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "Unknown field \"{}\".",
            k.chars().take(64).collect::<String>()
        ))),
        None => Ok(()),
    }
}

fn new_client(
    body: &serde_json::Map<String, Value>,
    clock: &dyn Clock,
) -> Result<Client, ApiError> {
    reject_unknown(body, &["id", "name", "per_minute", "monthly"])?;
    let id = match body.get("id") {
        Some(Value::String(id)) if valid_client_id(id) => id.clone(),
        _ => {
            return Err(ApiError::BadRequest(
                "\"id\" is required and must match [a-z0-9][a-z0-9_-]{0,63}.".into(),
            ))
        }
    };
    Ok(Client {
        name: name_field(body)?.unwrap_or_else(|| id.clone()),
        id,
        status: ClientStatus::Active,
        per_minute: limit_field(body, "per_minute")?,
        monthly: limit_field(body, "monthly")?,
        created_at: clock.now_ms().div_euclid(1000),
    })
}

fn client_patch(body: &serde_json::Map<String, Value>) -> Result<ClientPatch, ApiError> {
    reject_unknown(body, &["status", "name", "per_minute", "monthly"])?;
    let status = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ClientStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest("\"status\" must be \"active\" or \"suspended\".".into())
        })?),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "\"status\" must be \"active\" or \"suspended\".".into(),
            ))
        }
    };
    Ok(ClientPatch {
        name: name_field(body)?,
        status,
        per_minute: limit_field(body, "per_minute")?,
        monthly: limit_field(body, "monthly")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::json;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn client_bodies() {
        let clock = ManualClock::new(1_770_717_660_000);
        let c = new_client(&obj(json!({"id": "acme", "per_minute": 7})), clock.as_ref()).unwrap();
        assert_eq!(
            (c.name.as_str(), c.per_minute, c.monthly),
            ("acme", Some(7), None)
        );
        assert_eq!(c.created_at, 1_770_717_660);
        for bad in [
            json!({}),
            json!({"id": "Acme"}),
            json!({"id": "a", "per_minute": 0}),
            json!({"id": "a", "monthly": -1}),
            json!({"id": "a", "monthly": "5"}),
            json!({"id": "a", "extra": 1}),
        ] {
            assert_eq!(
                new_client(&obj(bad.clone()), clock.as_ref())
                    .unwrap_err()
                    .code(),
                "bad_request",
                "{bad}"
            );
        }
        let p = client_patch(&obj(json!({"status": "suspended"}))).unwrap();
        assert_eq!(p.status, Some(ClientStatus::Suspended));
        assert!(client_patch(&obj(json!({"status": "gone"}))).is_err());
    }
}
