//! The public listener's request path, top to bottom:
//! normalise → authenticate → (tollgate's own endpoints) → route scope →
//! admit (key, client, scope and limits in one store operation) → forward →
//! decorate. Every refusal becomes a response in one place, [`Refusal::into_response`].

pub mod forward;
pub mod limits;
mod org;
mod pool;
mod replay;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::app::{App, Live};
use crate::auth::{self, AuthError, Principal};
use crate::body::ProxyBody;
use crate::clock::iso8601;
use crate::config::RefundReason;
use crate::error::{json_response, ApiError, WireForm};
use crate::headers::decorate;
use crate::limits::policy::{Policy, PolicyOutcome};
use crate::limits::{LimitState, Verdict};
use crate::metrics::{AuthRejection, Outcome};
use crate::routes::{normalize, Requirement};
use crate::store::{AdmitRequest, Refund, StoreError, UsageRequest};
use crate::telemetry::AccessRecord;
use crate::usage::UsageDoc;
use forward::{ForwardContext, Peer};

/// tollgate's own usage endpoint on the public listener.
pub const USAGE_PATH: &str = "/api/v1/client/usage";
/// tollgate's own organisation key-management endpoints.
pub const ORG_KEYS_PATH: &str = "/api/v1/org/api-keys";

/// A request refused by tollgate, with the limit state to report if the key was valid.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    /// Boxed: a refusal travels in `Err`, which stays small.
    pub state: Option<Box<LimitState>>,
    pub outcome: Outcome,
    /// Close the connection after answering: the request's framing is suspect
    /// or its body was left unread.
    pub close: bool,
}

impl Refusal {
    fn new(error: ApiError, outcome: Outcome) -> Self {
        Refusal {
            error,
            state: None,
            outcome,
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    fn with_state(mut self, state: Option<LimitState>) -> Self {
        self.state = state.map(Box::new);
        self
    }

    /// The one place a refusal becomes a response, in the request's wire
    /// form (a JSON error, or a trailers-only gRPC response whose metadata
    /// carries the rate-limit headers).
    pub fn into_response(self, ietf: bool, form: WireForm) -> Response<ProxyBody> {
        let mut resp = self.error.respond(form);
        if let Some(st) = &self.state {
            decorate(resp.headers_mut(), st, ietf);
        }
        // HTTP/2 has no `Connection` header; gRPC is always HTTP/2.
        if self.close && form == WireForm::Json {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected(reason) => unauthorized(reason),
            AuthError::Throttled { retry_after } => Refusal::new(
                ApiError::RateLimited {
                    message: format!(
                        "Too many failed authentication attempts. Retry after {retry_after} seconds."
                    ),
                    retry_after,
                },
                Outcome::auth_throttled,
            ),
            AuthError::Store(e) => store_failure(e),
        }
    }
}

fn unauthorized(reason: AuthRejection) -> Refusal {
    let msg = match reason {
        AuthRejection::missing => {
            "An API key is required: send it in X-API-Key or Authorization: Bearer."
        }
        AuthRejection::ambiguous => {
            "Send one API key, in X-API-Key or Authorization: Bearer, not two."
        }
        _ => "The API key is invalid, expired or revoked.",
    };
    Refusal::new(ApiError::Unauthorized(msg.into()), Outcome::unauthorized)
}

fn store_failure(e: crate::store::StoreError) -> Refusal {
    tracing::warn!(error = %e, "store call failed");
    Refusal::new(ApiError::from(e), Outcome::store_error)
}

/// What the access log records about a request.
#[derive(Debug, Default)]
struct Trace {
    client_id: Option<Arc<str>>,
    key_id: Option<Arc<str>>,
    upstream_status: Option<u16>,
    /// Monthly `used` and `limit` as the store reported them.
    quota: Option<(u64, u64)>,
    /// Forwarded under shadow mode: the refusal it would have got.
    shadow: Option<&'static str>,
}

/// Serves one public request from `peer`; never fails.
pub async fn handle(app: Arc<App>, mut req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
    mark_credentials_sensitive(req.headers_mut());
    let started = Instant::now();
    let _in_flight = app.metrics.in_flight();
    // One config snapshot for the whole request, even if a reload lands meanwhile.
    let live = app.live();
    let method = req.method().clone();
    // The request's own bytes (a reference count, not a copy): the path to
    // route and to log, still at hand once `req` has moved upstream.
    let uri = req.uri().clone();
    let form = crate::grpc::wire_form(&req);
    let mut trace = Trace::default();
    let (resp, outcome) = match serve(&app, &live, req, &uri, form, peer, &mut trace).await {
        Ok(done) => done,
        Err(refusal) => {
            let outcome = refusal.outcome;
            if let Some(st) = &refusal.state {
                trace.quota = Some((st.monthly_used, st.monthly));
            }
            (refusal.into_response(live.ietf(), form), outcome)
        }
    };
    let elapsed = started.elapsed();
    app.metrics.request(outcome, elapsed);
    if let Some(client) = &trace.client_id {
        app.metrics
            .client_request(&live.config.metrics, client, outcome, trace.quota);
    }
    AccessRecord {
        at: SystemTime::now(),
        method: &method,
        path: uri.path(),
        status: resp.status().as_u16(),
        client_id: trace.client_id.as_deref(),
        key_id: trace.key_id.as_deref(),
        upstream_status: trace.upstream_status,
        decision: outcome,
        shadow: trace.shadow,
        duration: elapsed,
    }
    .emit();
    resp
}

/// Marks credential header values sensitive, so that no `Debug` output (and
/// no HPACK table, should they be forwarded) ever carries them.
pub fn mark_credentials_sensitive(headers: &mut http::HeaderMap) {
    // One pass over the few headers a request has, rather than two lookups.
    for (name, value) in headers.iter_mut() {
        if name == crate::headers::X_API_KEY || name == http::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
    }
}

async fn serve(
    app: &App,
    live: &Live,
    req: Request<Incoming>,
    uri: &http::Uri,
    form: WireForm,
    peer: Peer,
    trace: &mut Trace,
) -> Result<(Response<ProxyBody>, Outcome), Refusal> {
    // 0. Which address failed attempts are charged to.
    let client_ip = app.peers.client_ip(peer.addr.ip(), req.headers());

    // 1. One normalised path: what routes match and what the upstream receives.
    let path = normalize(uri.path()).map_err(|_| {
        Refusal::new(
            ApiError::BadRequest("The request path is malformed or ambiguous.".into()),
            Outcome::bad_request,
        )
    })?;
    // 1b. Framing limits (CONNECT, upgrades, declared size): before anything is
    // counted, and the connection is not trusted with another request.
    limits::check_head(&live.config.server, &req)
        .map_err(|e| Refusal::new(e, Outcome::bad_request).closing())?;
    // gRPC over HTTP/1.1 cannot work: refused before anything is counted.
    crate::grpc::check_version(&req).map_err(|e| Refusal::new(e, Outcome::bad_request))?;

    // 2. Authenticate: the credential must verify before anything else happens.
    let credential = auth::extract(req.headers()).map_err(|reason| {
        app.metrics.auth_rejected(reason);
        unauthorized(reason)
    })?;
    let principal = app.auth.authenticate(&credential, client_ip).await?;
    trace.client_id = Some(principal.client_id.clone());
    trace.key_id = Some(principal.key_id.clone());

    // 3. tollgate's own endpoints, never forwarded.
    let caller = Caller {
        principal: &principal,
        ip: client_ip,
    };
    if path == USAGE_PATH {
        return usage(app, live, &caller, req.method()).await;
    }
    if path == ORG_KEYS_PATH
        || path.starts_with(ORG_KEYS_PATH) && path[ORG_KEYS_PATH.len()..].starts_with('/')
    {
        return org::handle(app, live, &caller, req, &path[ORG_KEYS_PATH.len()..]).await;
    }

    // 4. The route: the scope it needs, its cost and shadow setting.
    let (scope, route) = match live.routes.requirement(req.method(), &path) {
        Requirement::Route { scope, index } => (scope, Some(index)),
        Requirement::ValidKey => (None, None),
    };

    // 5. Admission: key and client status, scope, both limits (at the
    // route's cost, shadowed or not), in one atomic store call.
    let admitted = admit(app, live, &caller, scope, live.policy(route)).await?;
    let state = admitted.state;
    trace.quota = Some((state.monthly_used, state.monthly));
    if let Some(reason) = admitted.policy.shadow.and_then(shadow_reason) {
        app.metrics.shadow_refusal(reason);
        trace.shadow = Some(reason);
    }

    // 6. Forward, streaming both ways.
    let ctx = ForwardContext {
        principal: &principal,
        credential: credential.source,
        peer: &peer,
        path: &path,
        grpc: form == WireForm::Grpc,
    };
    let (mut resp, upstream_elapsed) =
        live.upstream.forward(req, ctx).await.map_err(|e| match e {
            // The client's body failed (too large, stalled, malformed), not the upstream.
            ApiError::PayloadTooLarge(_)
            | ApiError::RequestTimeout(_)
            | ApiError::BadRequest(_) => Refusal::new(e, Outcome::bad_request)
                .with_state(Some(state))
                .closing(),
            _ => {
                if matches!(e, ApiError::BadGateway(_) | ApiError::GatewayTimeout(_)) {
                    // The upstream never answered.
                    refund(
                        app,
                        live,
                        &principal.client_id,
                        &admitted,
                        RefundReason::Unreachable,
                    );
                }
                Refusal::new(e, Outcome::upstream_error).with_state(Some(state))
            }
        })?;
    app.metrics.upstream(upstream_elapsed);
    trace.upstream_status = Some(resp.status().as_u16());
    if resp.status().is_server_error() {
        refund(
            app,
            live,
            &principal.client_id,
            &admitted,
            RefundReason::ServerError,
        );
    }

    // 7. Decorate.
    decorate(resp.headers_mut(), &state, live.ietf());
    Ok((resp, Outcome::forwarded))
}

/// A verified caller and the address its failures are charged to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub principal: &'a Principal,
    pub ip: IpAddr,
}

/// An admitted (and counted) request: the limit state after it, and what
/// the policies did (its cost, a shadowed refusal).
#[derive(Debug, Clone, Copy)]
struct Admitted {
    state: LimitState,
    policy: PolicyOutcome,
    /// Counted by the store (not by the degraded-mode local limiter).
    in_store: bool,
}

/// The metric label and access-log suffix of a shadowed refusal.
fn shadow_reason(v: Verdict) -> Option<&'static str> {
    match v {
        Verdict::RateLimited => Some("rate_limited"),
        Verdict::QuotaExhausted => Some("quota_exceeded"),
        _ => None,
    }
}

/// Policies: queues the refund of an admitted request whose outcome
/// `[limits] refund_on` names; the store call runs off the request path.
fn refund(app: &App, live: &Live, client_id: &str, admitted: &Admitted, reason: RefundReason) {
    if !admitted.in_store || !live.config.limits.refunds(reason) {
        return;
    }
    let refund = Refund {
        client_id: client_id.to_owned(),
        units: admitted.policy.cost,
        at_ms: admitted.state.now_ms,
    };
    app.refunds.submit(refund, reason.as_str());
}

/// Runs the admission check; `Ok` only for an admitted (and counted) request.
async fn admit(
    app: &App,
    live: &Live,
    c: &Caller<'_>,
    scope: Option<&str>,
    policy: Policy,
) -> Result<Admitted, Refusal> {
    let p = c.principal;
    let req = AdmitRequest {
        client_id: &p.client_id,
        key_id: &p.key_id,
        gen: p.gen,
        scope,
        defaults: live.defaults(),
        policy,
    };
    let started = Instant::now();
    let mut in_store = true;
    let result = app.store.admit(&req).await;
    app.metrics.store_call(started.elapsed(), result.is_ok());
    let decision = match (result, &app.degraded) {
        (Ok(d), Some(degraded)) => {
            degraded.observe(&p.client_id, &d, &app.metrics);
            d
        }
        (Ok(d), None) => d,
        // failure_mode = "open": only a key this process verified gets here.
        (Err(StoreError::Unavailable(_)), Some(degraded)) => {
            let now_ms = app.clock.now_ms();
            let cost = req.policy.cost;
            let d = degraded.admit(p, scope, (live.defaults(), cost), now_ms, &app.metrics);
            // Counted here, not in the store: nothing there to refund.
            in_store = false;
            d
        }
        (Err(e), _) => return Err(store_failure(e)),
    };
    if decision.policy.plan_unknown {
        app.metrics.plan_unknown();
        live.note_unknown_plan(&p.client_id);
    }
    let state = verdict_to_result(
        app,
        c,
        decision.verdict,
        decision.state,
        scope,
        decision.policy,
    )?;
    Ok(Admitted {
        state,
        policy: decision.policy,
        in_store,
    })
}

/// Maps a store verdict to "go on" or the refusal SPEC.md prescribes.
fn verdict_to_result(
    app: &App,
    c: &Caller<'_>,
    verdict: Verdict,
    state: Option<LimitState>,
    scope: Option<&str>,
    policy: PolicyOutcome,
) -> Result<LimitState, Refusal> {
    let cost = policy.cost;
    let refuse =
        |error: ApiError, outcome: Outcome| Err(Refusal::new(error, outcome).with_state(state));
    match (verdict, state) {
        (Verdict::Admitted, Some(st)) => Ok(st),
        (Verdict::Admitted, None) => refuse(
            ApiError::Internal("The store returned no limit state.".into()),
            Outcome::store_error,
        ),
        (Verdict::KeyInvalid | Verdict::ClientMissing, _) => {
            let p = c.principal;
            app.auth.forget_generation(&p.key_id, p.gen, c.ip);
            app.metrics.auth_rejected(AuthRejection::invalid_key);
            Err(unauthorized(AuthRejection::invalid_key))
        }
        (Verdict::ClientSuspended, _) => refuse(
            ApiError::Forbidden("The client is suspended.".into()),
            Outcome::forbidden,
        ),
        (Verdict::ScopeDenied, _) => refuse(
            ApiError::Forbidden(format!(
                "This key lacks the scope \"{}\" that this route needs.",
                scope.unwrap_or_default()
            )),
            Outcome::forbidden,
        ),
        (Verdict::RateLimited, Some(st)) if cost > st.per_minute => refuse(
            ApiError::OverLimit(format!(
                "This route costs {cost} units per request, more than the per-minute limit \
                 of {} units allows; it can never be admitted on this limit.",
                st.per_minute
            )),
            Outcome::rate_limited,
        ),
        (Verdict::QuotaExhausted, Some(st)) if cost > st.monthly => refuse(
            ApiError::OverLimit(format!(
                "This route costs {cost} units per request, more than the monthly quota \
                 of {} units allows; it can never be admitted on this quota.",
                st.monthly
            )),
            Outcome::quota_exceeded,
        ),
        (Verdict::RateLimited, st) => {
            let retry_after = st.and_then(|s| s.retry_after_secs(verdict)).unwrap_or(1);
            let mut message = format!("Rate limit exceeded. Retry after {retry_after} seconds.");
            if let (Some(s), true) = (st, cost > 1) {
                message.push_str(&format!(
                    " This route costs {cost} units; {} of {} units remain in the window.",
                    s.remaining, s.per_minute
                ));
            }
            refuse(
                ApiError::RateLimited {
                    message,
                    retry_after,
                },
                Outcome::rate_limited,
            )
        }
        (Verdict::QuotaExhausted, st) => {
            let reset = iso8601(st.map_or(0, |s| s.period.end_ms.div_euclid(1000)));
            let retry_after = st.and_then(|s| s.retry_after_secs(verdict)).unwrap_or(1);
            let mut message = String::from("Monthly quota exhausted.");
            if let (Some(s), true) = (st, cost > 1) {
                message.push_str(&format!(
                    " This route costs {cost} units; {} of {} units remain this month.",
                    s.monthly_remaining(),
                    s.monthly
                ));
            }
            message.push_str(&format!(" It resets at {reset}."));
            refuse(
                ApiError::RateLimited {
                    message,
                    retry_after,
                },
                Outcome::quota_exceeded,
            )
        }
    }
}

/// Reads the caller's limit state without counting; checks the key as admission does.
async fn checked_usage(app: &App, live: &Live, c: &Caller<'_>) -> Result<LimitState, Refusal> {
    let p = c.principal;
    let req = UsageRequest {
        client_id: &p.client_id,
        key: Some((&p.key_id, p.gen)),
        defaults: live.defaults(),
        policy: live.policy(None),
    };
    let started = Instant::now();
    let result = app.store.usage(&req).await;
    app.metrics.store_call(started.elapsed(), result.is_ok());
    let decision = result.map_err(store_failure)?;
    verdict_to_result(
        app,
        c,
        decision.verdict,
        decision.state,
        None,
        decision.policy,
    )
}

/// `GET /api/v1/client/usage`: answered even when the limits are exhausted.
async fn usage(
    app: &App,
    live: &Live,
    c: &Caller<'_>,
    method: &Method,
) -> Result<(Response<ProxyBody>, Outcome), Refusal> {
    let state = checked_usage(app, live, c).await?;
    if method != Method::GET && method != Method::HEAD {
        return Err(Refusal::new(
            ApiError::method_not_allowed("GET, HEAD"),
            Outcome::bad_request,
        )
        .with_state(Some(state)));
    }
    let mut resp = json_response(http::StatusCode::OK, &UsageDoc::from(&state));
    decorate(resp.headers_mut(), &state, live.ietf());
    Ok((resp, Outcome::served))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_value_is_marked_sensitive() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "a"),
            ("x-api-key", "b"),
            ("authorization", "Bearer c"),
            ("authorization", "Basic d"),
            ("x-other", "e"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        mark_credentials_sensitive(&mut h);
        for (name, value) in &h {
            assert_eq!(value.is_sensitive(), name != "x-other", "{name}");
        }
        assert!(!format!("{h:?}").contains("Bearer c"));
    }
}
