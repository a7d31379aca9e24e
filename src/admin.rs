//! The admin listener: unauthenticated `/healthz`, `/readyz` and `/metrics`,
//! and the `/admin/v1` API behind the bearer token. Never mounted on the
//! public listener.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::api::{
    self, ClientBody, ClientList, CreateClient, CreateKey, Empty, PatchClient, RotateKey, Status,
};
use crate::app::App;
use crate::body::{empty, full, ProxyBody};
use crate::error::{json_response, ApiError};
use crate::model::{valid_client_id, Client};
use crate::store::UsageRequest;
use crate::usage::UsageDoc;

/// The OpenAPI document of both listeners (openapi.yaml at the repository
/// root), embedded at build time.
const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

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

/// `Ok` when `method` is one of `allow` (HEAD is listed wherever GET is);
/// else the 405 that names them.
fn allowed(method: &Method, allow: &'static str) -> Result<(), ApiError> {
    if allow.split(", ").any(|a| a == method.as_str()) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allow))
    }
}

const GET: &str = "GET, HEAD";

async fn route(app: &App, req: Request<Incoming>) -> Result<Response<ProxyBody>, ApiError> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match segs.as_slice() {
        ["healthz"] => {
            allowed(&method, GET)?;
            Ok(status_body("ok"))
        }
        ["readyz"] => {
            allowed(&method, GET)?;
            match app.store.ping().await {
                Ok(()) => Ok(status_body("ready")),
                // failure_mode = "open": a degraded pod still serves known keys,
                // so it stays in the load balancer; the body says it is degraded.
                Err(e) if app.degraded.is_some() => {
                    tracing::warn!(error = %e, "readiness: store unreachable, serving degraded");
                    Ok(status_body("degraded"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "readiness: store unreachable");
                    Err(ApiError::Unavailable("The store is unreachable.".into()))
                }
            }
        }
        ["metrics"] => {
            allowed(&method, GET)?;
            let mut r = Response::new(full(app.metrics.encode()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Ok(r)
        }
        ["admin", "v1", rest @ ..] => {
            authorize(app, &req)?;
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            admin_api(app, req, &method, &rest).await
        }
        _ => Err(ApiError::NotFound("No such endpoint.".into())),
    }
}

fn status_body(status: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &Status {
            status: status.into(),
        },
    )
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
    let view = |c: &Client| ClientBody::new(c, live.defaults(), &live.plans);
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    // Each resource: the methods it serves, then the method's work.
    match segs {
        ["openapi.json"] => {
            allowed(method, GET)?;
            openapi_json()
        }
        ["clients"] => {
            allowed(method, "GET, HEAD, POST")?;
            if method == Method::POST {
                let req: CreateClient = api::read_json(headers, body, Empty::Refused).await?;
                known_plan(&live, req.plan_name())?;
                let client = req.into_client(app.clock.now_ms().div_euclid(1000));
                app.store.create_client(&client).await?;
                Ok(json_response(StatusCode::CREATED, &view(&client)))
            } else {
                let clients = app.store.list_clients().await?;
                Ok(json_response(
                    StatusCode::OK,
                    &ClientList {
                        clients: clients.iter().map(view).collect(),
                    },
                ))
            }
        }
        ["clients", id] => {
            allowed(method, "GET, HEAD, PATCH")?;
            if method == Method::PATCH {
                if !valid_client_id(id) {
                    return Err(no_client());
                }
                let patch: PatchClient = api::read_json(headers, body, Empty::Refused).await?;
                known_plan(&live, patch.plan_name())?;
                match app.store.update_client(id, &patch.into()).await? {
                    Some(c) => Ok(json_response(StatusCode::OK, &view(&c))),
                    None => Err(no_client()),
                }
            } else {
                let c = existing_client(app, id).await?;
                Ok(json_response(StatusCode::OK, &view(&c)))
            }
        }
        ["clients", id, "keys"] => {
            allowed(method, "GET, HEAD, POST")?;
            existing_client(app, id).await?;
            if method == Method::POST {
                let new: CreateKey = api::read_json(headers, body, Empty::Refused).await?;
                let created = app
                    .keys
                    .create(id, new, &live.config.auth.scopes, None)
                    .await?;
                Ok(json_response(StatusCode::CREATED, &created))
            } else {
                Ok(json_response(StatusCode::OK, &app.keys.list(id).await?))
            }
        }
        ["clients", id, "usage"] => {
            allowed(method, GET)?;
            existing_client(app, id).await?;
            let decision = app
                .store
                .usage(&UsageRequest {
                    client_id: id,
                    key: None,
                    defaults: live.defaults(),
                    policy: live.policy(None),
                })
                .await?;
            let state = decision.state.ok_or_else(no_client)?;
            Ok(json_response(StatusCode::OK, &UsageDoc::from(&state)))
        }
        ["keys", key_id] => {
            allowed(method, "DELETE")?;
            app.keys.revoke(key_id, None).await?;
            app.auth.forget(key_id);
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        ["keys", key_id, "rotate"] => {
            allowed(method, "POST")?;
            let req: RotateKey = api::read_json(headers, body, Empty::IsEmptyObject).await?;
            let rotated = app.keys.rotate(key_id, None, req).await?;
            Ok(json_response(StatusCode::CREATED, &rotated))
        }
        _ => Err(ApiError::NotFound("No such endpoint.".into())),
    }
}

/// `openapi.yaml` as JSON, converted once.
fn openapi_json() -> Result<Response<ProxyBody>, ApiError> {
    static JSON: std::sync::OnceLock<Result<bytes::Bytes, String>> = std::sync::OnceLock::new();
    let json = JSON.get_or_init(|| {
        serde_norway::from_str::<serde_json::Value>(OPENAPI_YAML)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string()))
            .map(bytes::Bytes::from)
    });
    match json {
        Ok(bytes) => {
            let mut r = Response::new(full(bytes.clone()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        Err(e) => Err(ApiError::Internal(format!(
            "The embedded OpenAPI document does not parse: {e}."
        ))),
    }
}

/// Policies: a plan a client is put on must be one the config defines.
fn known_plan(live: &crate::app::Live, plan: Option<&str>) -> Result<(), ApiError> {
    let Some(plan) = plan else { return Ok(()) };
    if live.plans.get(plan).is_some() {
        return Ok(());
    }
    let names: Vec<String> = live.plans.names().map(|n| format!("{n:?}")).collect();
    let known = if names.is_empty() {
        "the config defines no plans".to_owned()
    } else {
        format!("the plans are {}", names.join(", "))
    };
    Err(ApiError::BadRequest(format!(
        "\"plan\": unknown plan {plan:?}; {known}."
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_allowed_per_resource() {
        assert!(allowed(&Method::HEAD, GET).is_ok());
        assert!(allowed(&Method::GET, "GET, HEAD, POST").is_ok());
        assert!(allowed(&Method::PATCH, "GET, HEAD, PATCH").is_ok());
        let e = allowed(&Method::PUT, "GET, HEAD, PATCH").unwrap_err();
        assert_eq!(
            e,
            ApiError::MethodNotAllowed {
                message: "Method not allowed: this endpoint allows GET, HEAD, PATCH.".into(),
                allow: "GET, HEAD, PATCH"
            }
        );
        assert!(allowed(&Method::HEAD, "DELETE").is_err());
    }

    /// The embedded document parses and describes the admin API it is served by.
    #[test]
    fn the_openapi_document_is_valid_json() {
        let resp = openapi_json().unwrap();
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_norway::from_str(OPENAPI_YAML).unwrap();
        assert_eq!(v["openapi"].as_str().map(|s| &s[..3]), Some("3.1"));
        assert!(v["paths"]["/admin/v1/openapi.json"]["get"].is_object());
    }
}
