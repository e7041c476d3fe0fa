//! The `scale` subresource (autoscaling/v1 `Scale`) of Deployments and ReplicaSets, as `kubectl scale` uses it.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::objects;
use super::router::{ApiState, Ctx, json_response};
use super::status::ApiError;
use super::table::label_selector;
use super::write::{apply_update, load};

/// The `Scale` view of a scalable object.
pub fn to_scale(object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut metadata = json!({});
    for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = meta.get(field) {
            metadata[field] = v.clone();
        }
    }
    let selector = label_selector(object, "/spec/selector");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": if selector == "<none>" { String::new() } else { selector },
        },
    })
}

/// GET of `.../scale`.
pub async fn get(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Response, ApiError> {
    let kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    Ok(json_response(StatusCode::OK, &to_scale(&objects::from_kv(&kv)?)))
}

/// PUT (a whole `Scale`) or PATCH (a patch of the `Scale`, already applied by the caller) of `.../scale`.
pub async fn set(state: &Arc<ApiState>, ctx: &Ctx, scale: &Value) -> Result<Response, ApiError> {
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().filter(|r| *r >= 0).ok_or_else(|| {
            let errors = [crate::registry::validation::FieldError::invalid(
                "spec.replicas",
                v,
                "must be greater than or equal to 0",
            )];
            ApiError::invalid(ctx.kind, ctx.name(), &errors)
        })?,
    };
    let old_kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    let mut object = objects::from_kv(&old_kv)?;
    object["spec"]["replicas"] = json!(replicas);
    match scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        Some(rv) if !rv.is_empty() => object["metadata"]["resourceVersion"] = json!(rv),
        _ => {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    let updated = apply_update(state, ctx, &old_kv, object).await?;
    Ok(json_response(StatusCode::OK, &to_scale(&updated)))
}

/// The current `Scale`, for applying a PATCH to it.
pub async fn current(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Value, ApiError> {
    let kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    Ok(to_scale(&objects::from_kv(&kv)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view() {
        let d = json!({"metadata": {"name": "web", "namespace": "d", "resourceVersion": "5", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = to_scale(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        assert!(s["metadata"].get("labels").is_none());
    }
}
