//! The server-side apply request: `PATCH` with `application/apply-patch+yaml`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::fieldset::Scope;
use super::managed::{Managers, Operation};
use super::{conflict_error, decode, last_applied, scope, set_managed, writer};
use crate::api::objects::{self, check_type, normalize};
use crate::api::router::{ApiState, Ctx};
use crate::api::status::ApiError;
use crate::api::write::{apply_update, create_object, field_validation, load, respond};
use crate::registry::meta;

/// How many times an apply is retried when a concurrent write wins the race.
const ATTEMPTS: usize = 5;

/// Merges the applied configuration into the object (creating it when missing) and records ownership.
pub async fn apply(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    super::validate_patch_options(ctx)?;
    let decoded =
        decode::yaml(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let (config, requested, warnings) = prepare_config(ctx, decoded)?;
    let applier = writer(ctx, Operation::Apply);
    let force = ctx.query.flag("force");
    let scope = scope(ctx);
    for attempt in 1..=ATTEMPTS {
        let Some(live_kv) = load(state, ctx).await? else {
            if ctx.path.subresource.is_some() {
                return Err(ApiError::not_found(ctx.kind, ctx.name()));
            }
            let mut managers = Managers::default();
            let mut object = managers
                .apply(&json!({}), &config, &applier, scope, true, &meta::now())
                .map_err(|c| conflict_error(&c))?;
            set_managed(&mut object, &managers);
            match create_object(state, ctx, object, &[], false).await {
                // Created concurrently: apply to what is there now.
                Err(e) if e.reason == "AlreadyExists" && attempt < ATTEMPTS => continue,
                result => return result.map(|r| with_warnings(r, &warnings)),
            }
        };
        let live = objects::from_kv_as(ctx.kind, &live_kv)?;
        let stored = Managers::decode(&live).unwrap_or_default();
        let mut managers = stored.clone();
        let now = meta::now();
        let mut merged = match managers.apply(&live, &config, &applier, scope, force, &now) {
            Ok(merged) => merged,
            Err(conflicts) => {
                let left = last_applied::remaining_conflicts(&applier.manager, &live, conflicts, scope);
                if !left.is_empty() {
                    return Err(conflict_error(&left));
                }
                managers = stored;
                managers
                    .apply(&live, &config, &applier, scope, true, &now)
                    .map_err(|c| conflict_error(&c))?
            }
        };
        last_applied::sync(&applier.manager, &live, &mut merged, &config);
        set_managed(&mut merged, &managers);
        if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            match &requested {
                Some(rv) => m.insert("resourceVersion".into(), json!(rv)),
                None => m.remove("resourceVersion"),
            };
        }
        check_type(ctx.kind, &mut merged)?;
        let (doc, _) = normalize(ctx.kind, merged)?;
        if without_version(&doc) == without_version(&live) {
            return Ok(respond(StatusCode::OK, &live, &warnings));
        }
        match apply_update(state, ctx, &live_kv, doc).await {
            Err(e) if e.reason == "Conflict" && requested.is_none() && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
            Ok(updated) => return Ok(respond(StatusCode::OK, &updated, &warnings)),
        }
    }
    Err(ApiError::conflict(ctx.kind, ctx.name()))
}

/// Checks the applied configuration and trims it to the fields this URL may write.
/// Returns the configuration, its resourceVersion precondition and the fieldValidation warnings.
pub(crate) fn prepare_config(
    ctx: &Ctx,
    decoded: decode::Decoded,
) -> Result<(Value, Option<String>, Vec<String>), ApiError> {
    let mut config = decoded.value;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    check_type(ctx.kind, &mut config)?;
    if !config.get("metadata").is_some_and(Value::is_object) {
        config["metadata"] = json!({});
    }
    let meta = config["metadata"].as_object_mut().expect("made an object above");
    if meta.get("managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    match meta.get("name").and_then(Value::as_str) {
        Some(name) if name != ctx.name() => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                ctx.name()
            )));
        }
        _ => {
            meta.insert("name".into(), json!(ctx.name()));
        }
    }
    let requested = meta
        .remove("resourceVersion")
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|v| !v.is_empty());
    let (typed, unknown) = normalize(ctx.kind, config.clone())?;
    let warnings = field_validation(ctx, &unknown, &decoded.duplicates)?;
    let mut config = known_only(&config, &typed);
    if let Some(root) = config.as_object_mut() {
        match scope(ctx) {
            Scope::NoStatus => {
                root.remove("status");
            }
            Scope::StatusOnly => {
                root.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
            }
            Scope::All => {}
        }
    }
    Ok((config, requested, warnings))
}

/// `raw` without the fields the typed decoding dropped (unknown fields); unlike `typed`, no defaults are added.
fn known_only(raw: &Value, typed: &Value) -> Value {
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => Value::Object(
            r.iter()
                .filter_map(|(k, v)| match t.get(k) {
                    Some(tv) => Some((k.clone(), known_only(v, tv))),
                    None if v.is_null() => Some((k.clone(), Value::Null)),
                    None => None,
                })
                .collect::<Map<String, Value>>(),
        ),
        (Value::Array(r), Value::Array(t)) if r.len() == t.len() => {
            Value::Array(r.iter().zip(t).map(|(rv, tv)| known_only(rv, tv)).collect())
        }
        _ => raw.clone(),
    }
}

fn without_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    object
}

fn with_warnings(response: Response, warnings: &[String]) -> Response {
    let mut response = response;
    for warning in warnings {
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 - {warning:?}")) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_trimmed_without_adding_defaults() {
        let raw = json!({"spec": {"replicas": 2, "bogus": 1, "ports": [{"port": 80, "x": 1}]}});
        let typed =
            json!({"spec": {"replicas": 2, "selector": {}, "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert_eq!(
            known_only(&raw, &typed),
            json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}})
        );
    }
}
