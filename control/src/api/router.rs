//! Request dispatch: the shared server state and the one handler that routes every request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::path::{self, ResourcePath, Route};
use super::query::{Query, wants_table};
use super::status::ApiError;
use super::{discovery, objects, pod_exec, pods, protobuf, read, scale, watch, write};
use crate::auth::rbac::escalation;
use crate::auth::{
    Attributes, Authenticator, Authorizer, PeerUser, UserInfo, attributes, impersonate, noderestriction,
    reviews,
};
use crate::registry::Registry;
use crate::registry::kinds::{self, Kind};
use crate::store::Store;

/// Limits and timings of the API server.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// Largest accepted request body (kube-apiserver uses 3 MiB).
    pub max_body: usize,
    /// Interval between watch bookmarks (when the client allows them).
    pub bookmark_interval: Duration,
    /// Watch duration when the client gives no timeoutSeconds.
    pub default_watch_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            max_body: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub options: ApiOptions,
    pub authn: Authenticator,
    pub authz: Box<dyn Authorizer>,
    /// Background work started by requests (namespace finalization); aborted when the server stops.
    pub background: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    /// How `pods/log` and `pods/exec` reach node agents.
    pub kubelet: super::pods::KubeletClient,
}

impl ApiState {
    /// Runs `task` in the background for as long as the server runs.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self
            .background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

/// A resource request after routing: the kind, the URL parts, the query and the headers that matter.
pub struct Ctx {
    pub kind: &'static Kind,
    pub path: ResourcePath,
    pub query: Query,
    pub table: bool,
    pub content_type: String,
    /// The client's User-Agent (names the field manager when the request gives none).
    pub user_agent: String,
}

impl Ctx {
    pub fn namespace(&self) -> Option<&str> {
        self.path.namespace.as_deref().filter(|_| self.kind.namespaced)
    }

    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
}

/// Builds the axum router serving the whole API.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// A JSON response with the given status.
pub fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values always serialise");
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn dispatch(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // Taken out for exec, whose connection the handler upgrades after answering 101.
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let user = match check_access(&state, &parts) {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    let response = match route(
        &state,
        &user,
        parts.method,
        &parts.uri,
        &parts.headers,
        body,
        upgrade,
    )
    .await
    {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    tracing::debug!(%method, %uri, status = response.status().as_u16(), elapsed = ?started.elapsed(), "request");
    response
}

/// Bodies of create and update must be JSON (protobuf and CBOR clients fall back to JSON on 415).
fn require_json(ctx: &Ctx) -> Result<(), ApiError> {
    let media = ctx.content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "" | "*/*" => Ok(()),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Authenticates (401), applies impersonation and authorizes (403) a request; health probes are open to
/// everyone. Returns the user the request acts as.
fn check_access(state: &ApiState, parts: &axum::http::request::Parts) -> Result<UserInfo, ApiError> {
    if path::parse(parts.uri.path()) == Route::Health {
        return Ok(UserInfo::anonymous());
    }
    let peer = parts.extensions.get::<PeerUser>();
    let user = state
        .authn
        .authenticate(&parts.headers, peer)
        .ok_or_else(ApiError::unauthorized)?;
    let user = impersonate::apply(user, &parts.headers, &*state.authz)?;
    let attrs = Attributes::from_request(&parts.method, parts.uri.path(), parts.uri.query());
    state
        .authz
        .authorize(&user, &attrs)
        .map_err(|reason| attributes::forbidden(&user, &attrs, &reason))?;
    Ok(user)
}

/// 403 for an RBAC write that would grant more than the writer holds.
fn escalation_error(kind: &Kind, object: &Value, why: &str) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ApiError::forbidden(format!(
        "{}.{} {name:?} is forbidden: {why}",
        kind.plural, kind.group
    ))
}

/// A create or update body as JSON: JSON as is, Kubernetes protobuf converted (kubectl's generators send it).
fn json_body(ctx: &Ctx, body: Bytes) -> Result<Bytes, ApiError> {
    let media = ctx.content_type.split(';').next().unwrap_or("").trim();
    if media != protobuf::MEDIA_TYPE {
        require_json(ctx)?;
        return Ok(body);
    }
    let value = protobuf::to_json(&body).map_err(|e| match e {
        protobuf::Error::UnsupportedKind(_) => ApiError::unsupported_media_type(&format!("{media} ({e})")),
        other => ApiError::bad_request(format!("error decoding the protobuf body: {other}")),
    })?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

async fn route(
    state: &Arc<ApiState>,
    user: &UserInfo,
    method: Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let route = path::parse(uri.path());
    let resource = match route {
        Route::Resource(resource) => resource,
        other if method == Method::GET => return discovery::serve(&other, accept),
        Route::NotFound => return Err(ApiError::no_route()),
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    let kind =
        kinds::find(&resource.group, &resource.version, &resource.plural).ok_or_else(ApiError::no_route)?;
    let ctx = Ctx {
        kind,
        query: Query::parse(uri.query()),
        table: wants_table(accept),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        path: resource,
    };
    if let Some(sub) = ctx.path.subresource.as_deref()
        && !kind.subresources.contains(&sub)
    {
        return Err(ApiError::no_route());
    }
    let named = ctx.path.name.is_some();
    let sub = ctx.path.subresource.clone();
    noderestriction::admit(state, user, &method, uri).await?;
    if kind.group == "rbac.authorization.k8s.io" && ctx.path.subresource.is_none() {
        let named = ctx.path.name.is_some();
        let scope = ctx.namespace().unwrap_or("").to_owned();
        match (&method, named) {
            (&Method::POST, false) | (&Method::PUT, true) => {
                let body = json_body(&ctx, read_body(body, state.options.max_body).await?)?;
                let object = objects::parse_body(&body)?;
                escalation::check(&*state.authz, user, kind.plural, &scope, &object)
                    .map_err(|why| escalation_error(kind, &object, &why))?;
                return if method == Method::POST {
                    write::create(state, &ctx, &body).await
                } else {
                    write::update(state, &ctx, &body).await
                };
            }
            (&Method::PATCH, true) => {
                let (verb, plural) = if kind.plural.ends_with("bindings") {
                    (
                        "bind",
                        if kind.plural == "rolebindings" {
                            "roles"
                        } else {
                            "clusterroles"
                        },
                    )
                } else {
                    ("escalate", kind.plural)
                };
                let may = Attributes::resource(verb, kind.group, plural, &scope, "");
                if state.authz.authorize(user, &may).is_err() {
                    let why = format!(
                        "patching RBAC objects needs the {verb} verb on {plural}; replace the whole object instead (kubectl replace)"
                    );
                    let object = serde_json::json!({"metadata": {"name": ctx.name()}});
                    return Err(escalation_error(kind, &object, &why));
                }
            }
            _ => {}
        }
    }
    if reviews::is_review(kind) {
        if method != Method::POST || named {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        let body = json_body(&ctx, read_body(body, state.options.max_body).await?)?;
        return reviews::create(state, &ctx, user, &body);
    }
    match (method, named, sub.as_deref()) {
        (Method::POST, true, Some("token")) if kind.plural == "serviceaccounts" => {
            let body = json_body(&ctx, read_body(body, state.options.max_body).await?)?;
            reviews::token_request(state, &ctx, &body).await
        }
        (Method::GET, false, None) if ctx.query.flag("watch") => watch::serve(state, &ctx).await,
        (Method::GET, false, None) => read::list(state, &ctx).await,
        (Method::GET, true, None | Some("status")) => read::get(state, &ctx).await,
        (Method::GET, true, Some("scale")) => scale::get(state, &ctx).await,
        (Method::GET, true, Some("log")) => pods::log(state, &ctx).await,
        (Method::GET | Method::POST, true, Some("exec")) => {
            pod_exec::exec(state, &ctx, uri.query(), headers, upgrade).await
        }
        (Method::POST, true, Some("binding")) => {
            let body = read_body(body, state.options.max_body).await?;
            pods::bind(state, &ctx, &body).await
        }
        (Method::PUT, true, Some("scale")) => {
            require_json(&ctx)?;
            let body = read_body(body, state.options.max_body).await?;
            scale::set(state, &ctx, &objects::parse_body(&body)?).await
        }
        (Method::PATCH, true, Some("scale")) => {
            let body = read_body(body, state.options.max_body).await?;
            let patch: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut current = scale::current(state, &ctx).await?;
            write::apply_patch(&ctx.content_type, &mut current, &patch)?;
            scale::set(state, &ctx, &current).await
        }
        (Method::POST, false, None) => {
            let body = json_body(&ctx, read_body(body, state.options.max_body).await?)?;
            write::create(state, &ctx, &body).await
        }
        (Method::PUT, true, None | Some("status")) => {
            let body = json_body(&ctx, read_body(body, state.options.max_body).await?)?;
            write::update(state, &ctx, &body).await
        }
        (Method::PATCH, true, None | Some("status")) => {
            let body = read_body(body, state.options.max_body).await?;
            write::patch(state, &ctx, &body).await
        }
        (Method::DELETE, true, None) => {
            let body = read_body(body, state.options.max_body).await?;
            write::delete(state, &ctx, &body).await
        }
        (Method::DELETE, false, None) => {
            let body = read_body(body, state.options.max_body).await?;
            write::delete_collection(state, &ctx, &body).await
        }
        (method, _, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}
