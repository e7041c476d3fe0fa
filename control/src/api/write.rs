//! Writes: create, update (incl. status), patch (merge, JSON, strategic, apply), delete, deletecollection.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::apply;
use super::deletion::{self, DeleteOptions, Outcome};
use super::objects::{self, check_type, normalize, parse_body};
use super::read::{Filter, list_page};
use super::router::{ApiState, Ctx, json_response};
use super::status::ApiError;
use crate::controllers::namespace;
use crate::registry::kinds::{self, Kind};
use crate::registry::meta;
use crate::store::{KeyValue, Revision};

/// How many times a patch is re-applied when a concurrent write wins the race.
const PATCH_ATTEMPTS: usize = 5;

/// Applies `fieldValidation` to unknown and duplicate fields: an error under Strict, warnings otherwise.
pub(crate) fn field_validation(
    ctx: &Ctx,
    unknown: &[String],
    duplicates: &[String],
) -> Result<Vec<String>, ApiError> {
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .chain(duplicates.iter().map(|f| format!("duplicate field {f:?}")))
        .collect();
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    match ctx.query.get("fieldValidation") {
        Some("Strict") => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        Some("Ignore") => Ok(Vec::new()),
        _ => Ok(messages),
    }
}

pub(crate) fn respond(code: StatusCode, object: &Value, warnings: &[String]) -> Response {
    let mut response = json_response(code, object);
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

fn invalid(kind: &Kind, object: &Value, errors: &[crate::registry::validation::FieldError]) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError::invalid(kind, name, errors)
}

async fn ensure_namespace(state: &Arc<ApiState>, ctx: &Ctx) -> Result<(), ApiError> {
    let Some(ns) = ctx.namespace() else { return Ok(()) };
    let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are served");
    let found = state
        .store
        .get(&namespaces.key(None, ns))
        .await
        .map_err(|e| ApiError::from_store(e, namespaces, ns))?;
    let kv = found.ok_or_else(|| ApiError::not_found(namespaces, ns))?;
    if objects::from_kv(&kv)?
        .pointer("/metadata/deletionTimestamp")
        .is_some()
    {
        return Err(ApiError::forbidden(format!(
            "{} {:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            ctx.kind.plural,
            ctx.name()
        )));
    }
    Ok(())
}
/// POST to a collection.
pub async fn create(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let decoded = decode_body(body)?;
    create_object(state, ctx, decoded.value, &decoded.duplicates, true).await
}

/// A JSON object body and its duplicate fields.
fn decode_body(body: &[u8]) -> Result<apply::decode::Decoded, ApiError> {
    let decoded = apply::decode::json(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !decoded.value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(decoded)
}

/// Creates `object`; `record` adds the writer's Update entry to managedFields (apply brings its own).
pub(crate) async fn create_object(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    mut object: Value,
    duplicates: &[String],
    record: bool,
) -> Result<Response, ApiError> {
    let kind = ctx.kind;
    check_type(kind, &mut object)?;
    if let (Some(url_ns), Some(body_ns)) = (
        ctx.namespace(),
        object.pointer("/metadata/namespace").and_then(Value::as_str),
    ) && url_ns != body_ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let (mut object, unknown) = normalize(kind, object)?;
    let warnings = field_validation(ctx, &unknown, duplicates)?;
    if record {
        apply::record_update(ctx, None, &mut object);
    }
    ensure_namespace(state, ctx).await?;
    meta::prepare_create(
        kind,
        &mut object,
        ctx.namespace(),
        &mut <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng(),
    )
    .map_err(|e| invalid(kind, &object, &e))?;
    let claims = state
        .registry
        .admit_create(kind, &mut object)
        .map_err(|e| invalid(kind, &object, &e))?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    if ctx.query.dry_run() {
        state.registry.release(&claims);
        return Ok(respond(StatusCode::CREATED, &object, &warnings));
    }
    let key = kind.key(ctx.namespace(), &name);
    match state
        .store
        .create(&key, objects::to_store_as(kind, &object))
        .await
    {
        Ok(kv) => Ok(respond(
            StatusCode::CREATED,
            &objects::from_kv_as(kind, &kv)?,
            &warnings,
        )),
        Err(e) => {
            state.registry.release(&claims);
            Err(ApiError::from_store(e, kind, &name))
        }
    }
}

/// The object to store for an update: the main resource keeps the stored status, `/status` keeps the rest.
fn merge_subresource(ctx: &Ctx, old: &Value, mut new: Value) -> Value {
    match ctx.path.subresource.as_deref() {
        Some("status") => {
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            merged
        }
        Some("binding") => new,
        _ if ctx.kind.subresources.contains(&"status") && ctx.kind.plural != "namespaces" => {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new
        }
        _ => new,
    }
}

pub async fn load(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Option<KeyValue>, ApiError> {
    let key = ctx.kind.key(ctx.namespace(), ctx.name());
    state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, ctx.kind, ctx.name()))
}

fn requested_revision(object: &Value) -> Result<Option<Revision>, ApiError> {
    match object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Stores `new` over `old_kv` after metadata rules and admission; deletes when the last finalizer went away.
pub async fn apply_update(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    old_kv: &KeyValue,
    mut new: Value,
) -> Result<Value, ApiError> {
    let kind = ctx.kind;
    let old = objects::from_kv_as(kind, old_kv)?;
    if let Some(rv) = requested_revision(&new)?
        && rv != old_kv.mod_revision
    {
        return Err(ApiError::conflict(kind, ctx.name()));
    }
    let applied_managers = new.pointer("/metadata/managedFields").cloned();
    new = merge_subresource(ctx, &old, new);
    meta::prepare_update(kind, &old, &mut new);
    match applied_managers {
        // An apply computed its managedFields already (also for /status, whose merge keeps the old metadata).
        Some(managers) if apply::is_apply(ctx) => new["metadata"]["managedFields"] = managers,
        _ => apply::record_update(ctx, Some(&old), &mut new),
    }
    deletion::carry_grace(&old, &mut new);
    let claims = state
        .registry
        .admit_update(kind, &old, &mut new)
        .map_err(|e| invalid(kind, &new, &e))?;
    if ctx.query.dry_run() {
        state.registry.release(&claims);
        new["metadata"]["resourceVersion"] = json!(old_kv.mod_revision.to_string());
        return Ok(new);
    }
    // Namespaces are removed by their finalizer task once empty; others once grace and finalizers are over.
    let namespace = kind.plural == "namespaces" && kind.group.is_empty();
    if !namespace && deletion::remove_on_update(&new) {
        state.registry.release(&claims);
        let event = state
            .store
            .delete(&old_kv.key, Some(old_kv.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, kind, ctx.name()))?;
        state.registry.deleted(kind, &old);
        return objects::from_store_as(kind, &objects::to_store_as(kind, &new), event.revision);
    }
    match state
        .store
        .update(
            &old_kv.key,
            objects::to_store_as(kind, &new),
            Some(old_kv.mod_revision),
        )
        .await
    {
        Ok(kv) => {
            state.registry.updated(kind, &old, &new);
            objects::from_kv_as(kind, &kv)
        }
        Err(e) => {
            state.registry.release(&claims);
            Err(ApiError::from_store(e, kind, ctx.name()))
        }
    }
}

fn check_name(ctx: &Ctx, object: &Value) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != ctx.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            ctx.name()
        )));
    }
    Ok(())
}

/// PUT of an object or its status.
pub async fn update(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let decoded = decode_body(body)?;
    let mut object = decoded.value;
    check_type(ctx.kind, &mut object)?;
    let (object, unknown) = normalize(ctx.kind, object)?;
    let warnings = field_validation(ctx, &unknown, &decoded.duplicates)?;
    check_name(ctx, &object)?;
    let old_kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    let updated = apply_update(state, ctx, &old_kv, object).await?;
    Ok(respond(StatusCode::OK, &updated, &warnings))
}

/// Applies a patch of the given content type to `doc`.
pub fn apply_patch(content_type: &str, doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => objects::merge_patch(doc, patch),
        "application/json-patch+json" => objects::json_patch(doc, patch)?,
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            super::strategic::apply(doc, patch);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(())
}

/// PATCH of an object or its status.
pub async fn patch(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    if apply::is_apply(ctx) {
        return apply::request::apply(state, ctx, body).await;
    }
    apply::validate_patch_options(ctx)?;
    let decoded =
        apply::decode::json(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let patch = decoded.value;
    for attempt in 1..=PATCH_ATTEMPTS {
        let Some(old_kv) = load(state, ctx).await? else {
            return Err(ApiError::not_found(ctx.kind, ctx.name()));
        };
        let mut doc = objects::from_kv_as(ctx.kind, &old_kv)?;
        apply_patch(&ctx.content_type, &mut doc, &patch)?;
        let pinned = requested_revision(&doc)?
            .filter(|rv| *rv != old_kv.mod_revision)
            .is_some()
            || patch.pointer("/metadata/resourceVersion").is_some();
        if !pinned && let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        check_type(ctx.kind, &mut doc)?;
        let (doc, unknown) = normalize(ctx.kind, doc)?;
        let warnings = field_validation(ctx, &unknown, &decoded.duplicates)?;
        check_name(ctx, &doc)?;
        match apply_update(state, ctx, &old_kv, doc).await {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < PATCH_ATTEMPTS => continue,
            Err(e) => return Err(e),
            Ok(updated) => return Ok(respond(StatusCode::OK, &updated, &warnings)),
        }
    }
    Err(ApiError::conflict(ctx.kind, ctx.name()))
}

/// The DeleteOptions of a request: its body (may be empty) and query parameters.
fn delete_options(ctx: &Ctx, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    DeleteOptions::parse(&body, |k| ctx.query.get(k)).map_err(|e| {
        let mut err = ApiError::invalid(ctx.kind, ctx.name(), &e);
        err.message = format!("DeleteOptions is invalid: {}", err.message);
        err
    })
}

fn precondition_failed(ctx: &Ctx, what: &str, wanted: &str, actual: &str) -> ApiError {
    let mut e = ApiError::conflict(ctx.kind, ctx.name());
    e.message = format!(
        "Operation cannot be fulfilled on {} {:?}: Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}",
        ctx.kind.plural,
        ctx.name()
    );
    e
}

fn check_preconditions(
    ctx: &Ctx,
    options: &DeleteOptions,
    kv: &KeyValue,
    object: &Value,
) -> Result<(), ApiError> {
    if let Some(uid) = &options.precondition_uid {
        let actual = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != actual {
            return Err(precondition_failed(ctx, "UID", uid, actual));
        }
    }
    if let Some(rv) = &options.precondition_resource_version
        && *rv != kv.mod_revision.to_string()
    {
        return Err(precondition_failed(
            ctx,
            "ResourceVersion",
            rv,
            &kv.mod_revision.to_string(),
        ));
    }
    Ok(())
}

/// Deletes or marks one stored object as the rules in [`deletion`] decide. Returns the object as the client
/// sees it afterwards and whether it is gone from storage.
pub async fn delete_stored(
    state: &ApiState,
    kind: &'static Kind,
    kv: &KeyValue,
    options: &DeleteOptions,
) -> Result<(Value, bool), ApiError> {
    let object = objects::from_kv_as(kind, kv)?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let is_pod = kind.plural == "pods" && kind.group.is_empty();
    match deletion::decide(&object, is_pod, options, meta::unix_now()) {
        _ if options.dry_run => Ok((object, false)),
        Outcome::Pending => Ok((object, false)),
        Outcome::Mark(marked) => {
            let kv = state
                .store
                .update(
                    &kv.key,
                    objects::to_store_as(kind, &marked),
                    Some(kv.mod_revision),
                )
                .await
                .map_err(|e| ApiError::from_store(e, kind, name))?;
            Ok((objects::from_kv_as(kind, &kv)?, false))
        }
        Outcome::Remove => {
            let event = state
                .store
                .delete(&kv.key, Some(kv.mod_revision))
                .await
                .map_err(|e| ApiError::from_store(e, kind, name))?;
            state.registry.deleted(kind, &object);
            Ok((
                objects::from_store_as(kind, &event.kv.value, event.revision)?,
                true,
            ))
        }
    }
}

/// DELETE of one object: removed now, or marked with deletionTimestamp while its grace period or finalizers last.
pub async fn delete(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let options = delete_options(ctx, body)?;
    for attempt in 1..=PATCH_ATTEMPTS {
        let old_kv = load(state, ctx)
            .await?
            .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
        let old = objects::from_kv_as(ctx.kind, &old_kv)?;
        check_preconditions(ctx, &options, &old_kv, &old)?;
        if ctx.kind.plural == "namespaces" && ctx.kind.group.is_empty() {
            if options.dry_run {
                return Ok(json_response(StatusCode::OK, &old));
            }
            return delete_namespace(state, ctx, &old_kv, old).await;
        }
        match delete_stored(state, ctx.kind, &old_kv, &options).await {
            // A concurrent write (a status update, a finalizer removed) won: decide again on the new state.
            Err(e) if e.reason == "Conflict" && attempt < PATCH_ATTEMPTS => continue,
            Err(e) => return Err(e),
            Ok((object, gone)) => {
                // Like kube-apiserver: 202 only when the client asked for cascading with orphanDependents=false.
                let code = if !gone && options.orphan_dependents == Some(false) {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                return Ok(json_response(code, &object));
            }
        }
    }
    Err(ApiError::conflict(ctx.kind, ctx.name()))
}

/// Namespaces go Terminating; a background task empties and then removes them.
async fn delete_namespace(
    state: &Arc<ApiState>,
    ctx: &Ctx,
    old_kv: &KeyValue,
    old: Value,
) -> Result<Response, ApiError> {
    let name = ctx.name().to_owned();
    if namespace::IMMORTAL.contains(&name.as_str()) {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        )));
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(json_response(StatusCode::OK, &old));
    }
    let mut marked = old;
    marked["metadata"]["deletionTimestamp"] = json!(meta::now());
    marked["status"]["phase"] = json!("Terminating");
    let kv = state
        .store
        .update(&old_kv.key, objects::to_store(&marked), Some(old_kv.mod_revision))
        .await
        .map_err(|e| ApiError::from_store(e, ctx.kind, &name))?;
    state.spawn(namespace::finalize(Arc::clone(state), name));
    Ok(json_response(StatusCode::OK, &objects::from_kv(&kv)?))
}

/// DELETE of a collection (with label/field selectors): each object as a single DELETE with the same options.
pub async fn delete_collection(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    if !ctx.kind.verbs.contains(&"deletecollection") {
        return Err(ApiError::method_not_allowed("deletecollection"));
    }
    let options = delete_options(ctx, body)?;
    let filter = Filter::from_ctx(ctx)?;
    let page = list_page(state, ctx, &filter).await?;
    let mut deleted = Vec::new();
    for object in page.items {
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key = ctx.kind.key(ns, name);
        // Objects that changed or went away since the list are skipped, as kube-apiserver does.
        let Ok(Some(kv)) = state.store.get(&key).await else {
            continue;
        };
        if let Ok((object, _)) = delete_stored(state, ctx.kind, &kv, &options).await {
            deleted.push(object);
        }
    }
    let list = json!({
        "kind": format!("{}List", ctx.kind.kind),
        "apiVersion": ctx.kind.api_version(),
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &list))
}
