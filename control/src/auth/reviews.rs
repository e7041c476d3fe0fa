//! Create-only review endpoints (Self/SubjectAccessReview, SelfSubjectRulesReview, TokenReview,
//! SelfSubjectReview) and the `serviceaccounts/<name>/token` TokenRequest subresource.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::tokens::{DEFAULT_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, ObjectRef, TokenSpec};
use super::{Attributes, UserInfo};
use crate::api::objects::parse_body;
use crate::api::router::{ApiState, Ctx, json_response};
use crate::api::status::ApiError;
use crate::registry::kinds::{self, Kind};
use crate::registry::meta;

/// Whether `kind` is a review answered by [`create`] rather than stored.
pub fn is_review(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.plural),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews" | "subjectaccessreviews" | "selfsubjectrulesreviews"
        ) | ("authentication.k8s.io", "tokenreviews" | "selfsubjectreviews")
    )
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The attributes a review's `spec` asks about.
fn review_attributes(spec: &Value) -> Result<Attributes, ApiError> {
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let mut attrs = Attributes::resource(
            &text(r, "/verb"),
            &text(r, "/group"),
            &text(r, "/resource"),
            &text(r, "/namespace"),
            &text(r, "/name"),
        );
        attrs.subresource = text(r, "/subresource");
        attrs.api_version = text(r, "/version");
        return Ok(attrs);
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes::non_resource(&text(n, "/verb"), &text(n, "/path")));
    }
    Err(ApiError::bad_request(
        "spec.resourceAttributes or spec.nonResourceAttributes is required",
    ))
}

fn access_status(state: &ApiState, user: &UserInfo, attrs: &Attributes) -> Value {
    match state.authz.authorize(user, attrs) {
        Ok(()) => json!({"allowed": true}),
        Err(reason) if reason.is_empty() => json!({"allowed": false}),
        Err(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    info
}

fn rules_status(state: &ApiState, user: &UserInfo, namespace: &str) -> Value {
    let Some(rules) = state.authz.rules_for(user, namespace) else {
        return json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
            "evaluationError": "the authorizer does not list rules"});
    };
    let (resource, non_resource): (Vec<_>, Vec<_>) = rules
        .into_iter()
        .partition(|r| r.non_resource_urls.as_ref().is_none_or(Vec::is_empty));
    let resource: Vec<Value> = resource
        .iter()
        .map(|r| {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if let Some(names) = &r.resource_names {
                v["resourceNames"] = json!(names);
            }
            v
        })
        .collect();
    let non_resource: Vec<Value> = non_resource
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
}

/// Answers a review: the request object with its `status` filled in (nothing is stored).
pub fn create(state: &ApiState, ctx: &Ctx, user: &UserInfo, body: &[u8]) -> Result<Response, ApiError> {
    let mut review = parse_body(body)?;
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let status = match ctx.kind.plural {
        "selfsubjectaccessreviews" => access_status(state, user, &review_attributes(&spec)?),
        "subjectaccessreviews" => {
            let name = text(&spec, "/user");
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            if name.is_empty() && groups.is_empty() {
                return Err(ApiError::bad_request("spec.user or spec.groups is required"));
            }
            let subject = UserInfo {
                name,
                uid: text(&spec, "/uid"),
                groups,
            };
            access_status(state, &subject, &review_attributes(&spec)?)
        }
        "selfsubjectrulesreviews" => rules_status(state, user, &text(&spec, "/namespace")),
        "tokenreviews" => {
            let audiences: Vec<String> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            match state.authn.authenticate_token(&text(&spec, "/token"), &audiences) {
                Some(who) => {
                    let audiences = if audiences.is_empty() {
                        vec![super::tokens::ISSUER.to_owned()]
                    } else {
                        audiences
                    };
                    json!({"authenticated": true, "user": user_info(&who), "audiences": audiences})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        "selfsubjectreviews" => json!({"userInfo": user_info(user)}),
        _ => return Err(ApiError::no_route()),
    };
    if let Some(spec) = review.get_mut("spec").and_then(Value::as_object_mut) {
        // Never echo a reviewed token back.
        spec.remove("token");
    }
    review["apiVersion"] = json!(ctx.kind.api_version());
    review["kind"] = json!(ctx.kind.kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    Ok(json_response(StatusCode::CREATED, &review))
}

/// `POST serviceaccounts/<name>/token`: a signed token for an existing ServiceAccount.
pub async fn token_request(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let Some(sa_tokens) = state.authn.service_accounts() else {
        return Err(ApiError::method_not_allowed(
            "ServiceAccount tokens need the server's TLS mode (a signing key)",
        ));
    };
    let namespace = ctx.namespace().unwrap_or("default").to_owned();
    let name = ctx.name().to_owned();
    let kind = kinds::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    let kv = state
        .store
        .get(&kind.key(Some(&namespace), &name))
        .await
        .map_err(|e| ApiError::from_store(e, kind, &name))?
        .ok_or_else(|| ApiError::not_found(kind, &name))?;
    let account: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut request = parse_body(body)?;
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let token_kind = Kind {
        kind: "TokenRequest",
        ..*kind
    };
    if seconds < MIN_EXPIRATION_SECONDS {
        return Err(ApiError::invalid(
            &token_kind,
            &name,
            &[crate::registry::validation::FieldError::invalid(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let pod = spec
        .get("boundObjectRef")
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
        .map(|r| ObjectRef {
            name: text(r, "/name"),
            uid: text(r, "/uid"),
        });
    let uid = text(&account, "/metadata/uid");
    let now = meta::unix_now();
    let (token, exp) = sa_tokens
        .issuer
        .issue(
            &TokenSpec {
                namespace: &namespace,
                name: &name,
                uid: &uid,
                audiences: audiences.clone(),
                expiration_seconds: seconds,
                pod,
            },
            now,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = k8s_openapi::jiff::Timestamp::from_second(exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let audiences = if audiences.is_empty() {
        vec![super::tokens::ISSUER.to_owned()]
    } else {
        audiences
    };
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": meta::now()});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(StatusCode::CREATED, &request))
}
