//! A synchronous entry into request-body decoding, patching and validation, without a store (for the fuzz targets).
//!
//! [`decode_and_validate`] runs the steps the create, patch and apply handlers run on a body before they write:
//! decoding (JSON or YAML, duplicate fields), the patch of the given content type applied to a valid stored object,
//! type and schema checks, metadata rules, managedFields, defaulting, validation and allocation. Nothing here is
//! used by the server itself; it exists so that these steps can be driven with arbitrary bytes.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::apply::{self, decode, last_applied, managed::Managers, managed::Operation};
use super::objects::{self, check_type, normalize};
use super::path::ResourcePath;
use super::query::Query;
use super::router::Ctx;
use super::status::ApiError;
use super::write::{apply_patch, field_validation};
use crate::registry::kinds::{KINDS, Kind};
use crate::registry::{Registry, RegistryConfig, meta};

/// The name every object gets (the URL's name for patches and applies).
pub const NAME: &str = "fuzz";
/// The namespace of namespaced kinds.
pub const NAMESPACE: &str = "default";

/// Every served kind, in the table's order (a fuzz input picks one by index).
pub fn kinds() -> &'static [Kind] {
    KINDS
}

/// The content types [`decode_and_validate`] understands: a create body as JSON or YAML, and the four patch types.
pub const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Decodes `body` as a request of `content_type` for `kind` and runs every check before the store write.
/// JSON and YAML bodies are creates; patch types patch a valid object of `kind` named [`NAME`] (see
/// [`base_object`]); apply merges into it with field ownership (conflicts are errors, as they would be answered).
/// Returns the object that would be stored, or the error the client would get.
pub fn decode_and_validate(kind: &'static Kind, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let registry = Registry::new(RegistryConfig::default());
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "application/yaml" => {
            let decoded = if media == "application/json" {
                decode::json(body)
            } else {
                decode::yaml(body)
            }
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; parse error: {e}")))?;
            if !decoded.value.is_object() {
                return Err(ApiError::bad_request("the request body must be a JSON object"));
            }
            create(&registry, kind, decoded.value, &decoded.duplicates)
        }
        "application/apply-patch+yaml" => {
            let base = base_object(kind);
            server_side_apply(&registry, kind, &base, body)
        }
        _ => {
            let base = base_object(kind);
            let ctx = context(kind, media);
            apply::validate_patch_options(&ctx)?;
            let decoded = decode::json(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = base.clone();
            apply_patch(media, &mut doc, &decoded.value)?;
            check_type(kind, &mut doc)?;
            let (doc, unknown) = normalize(kind, doc)?;
            field_validation(&ctx, &unknown, &decoded.duplicates)?;
            check_name(&doc)?;
            update(&registry, &ctx, &base, doc)
        }
    }
}

/// A stored object of `kind` named [`NAME`] to patch: a minimal one through the create path (a Service gets a
/// port and a selector so it validates). Kinds whose minimal object does not validate use it unvalidated.
pub fn base_object(kind: &'static Kind) -> Value {
    let mut object = json!({"metadata": {"name": NAME, "labels": {"app": NAME}}});
    if kind.plural == "services" && kind.group.is_empty() {
        object["spec"] = json!({"ports": [{"name": "http", "port": 80}], "selector": {"app": NAME}});
    }
    let registry = Registry::new(RegistryConfig::default());
    create(&registry, kind, object.clone(), &[]).unwrap_or_else(|_| {
        let mut raw = object;
        let _ = check_type(kind, &mut raw);
        raw
    })
}

fn context(kind: &'static Kind, content_type: &str) -> Ctx {
    Ctx {
        kind,
        path: ResourcePath {
            group: kind.group.to_owned(),
            version: kind.version.to_owned(),
            plural: kind.plural.to_owned(),
            namespace: kind.namespaced.then(|| NAMESPACE.to_owned()),
            name: Some(NAME.to_owned()),
            subresource: None,
        },
        query: Query::parse(Some("fieldManager=fuzz&fieldValidation=Warn")),
        table: false,
        content_type: content_type.to_owned(),
        user_agent: "fuzz/v0".to_owned(),
    }
}

fn check_name(object: &Value) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != NAME {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({NAME})"
        )));
    }
    Ok(())
}

fn invalid(kind: &Kind, object: &Value, errors: &[crate::registry::validation::FieldError]) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError::invalid(kind, name, errors)
}

/// The create handler's steps after decoding.
fn create(
    registry: &Registry,
    kind: &'static Kind,
    mut object: Value,
    duplicates: &[String],
) -> Result<Value, ApiError> {
    let ctx = context(kind, "application/json");
    check_type(kind, &mut object)?;
    let (mut object, unknown) = normalize(kind, object)?;
    field_validation(&ctx, &unknown, duplicates)?;
    apply::record_update(&ctx, None, &mut object);
    meta::prepare_create(kind, &mut object, ctx.namespace(), &mut StdRng::seed_from_u64(0))
        .map_err(|e| invalid(kind, &object, &e))?;
    registry
        .admit_create(kind, &mut object)
        .map_err(|e| invalid(kind, &object, &e))?;
    Ok(object)
}

/// The update steps every patch and apply ends with.
fn update(registry: &Registry, ctx: &Ctx, old: &Value, mut new: Value) -> Result<Value, ApiError> {
    let applied_managers = new.pointer("/metadata/managedFields").cloned();
    meta::prepare_update(ctx.kind, old, &mut new);
    match applied_managers {
        Some(managers) if apply::is_apply(ctx) => new["metadata"]["managedFields"] = managers,
        _ => apply::record_update(ctx, Some(old), &mut new),
    }
    registry
        .admit_update(ctx.kind, old, &mut new)
        .map_err(|e| invalid(ctx.kind, &new, &e))?;
    Ok(new)
}

/// The server-side apply handler's steps for an existing object.
fn server_side_apply(
    registry: &Registry,
    kind: &'static Kind,
    live: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let ctx = context(kind, "application/apply-patch+yaml");
    apply::validate_patch_options(&ctx)?;
    let decoded =
        decode::yaml(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let (config, _requested, _warnings) = apply::request::prepare_config(&ctx, decoded)?;
    let applier = apply::writer(&ctx, Operation::Apply);
    let mut managers = Managers::decode(live).unwrap_or_default();
    let mut merged = managers
        .apply(live, &config, &applier, apply::scope(&ctx), false, &meta::now())
        .map_err(|c| apply::conflict_error(&c))?;
    last_applied::sync(&applier.manager, live, &mut merged, &config);
    apply::set_managed(&mut merged, &managers);
    check_type(kind, &mut merged)?;
    let (doc, _) = normalize(kind, merged)?;
    update(registry, &ctx, live, doc)
}

/// Whether an object the server would store reads back from its stored bytes and decodes as its kind again (every
/// stored object must, or it could never be read).
pub fn decodes_as_kind(kind: &'static Kind, object: &Value) -> bool {
    let Ok(mut object) = objects::from_store(&objects::to_store(object), 1) else {
        return false;
    };
    check_type(kind, &mut object).is_ok() && normalize(kind, object).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;

    fn kind(group: &str, plural: &str) -> &'static Kind {
        find(group, "v1", plural).expect("served kind")
    }

    #[test]
    fn a_valid_create_is_stored_with_metadata_and_defaults() {
        let svc = kind("", "services");
        let body = br#"{"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}"#;
        let out = decode_and_validate(svc, "application/json", body).unwrap();
        assert_eq!(out["metadata"]["namespace"], NAMESPACE);
        assert!(out["metadata"]["uid"].is_string());
        assert!(out["spec"]["clusterIP"].as_str().unwrap().starts_with("10.96."));
        assert!(decodes_as_kind(svc, &out));
        let yaml = b"metadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
        assert!(decode_and_validate(svc, "application/yaml", yaml).is_ok());
    }

    #[test]
    fn bad_bodies_are_client_errors() {
        let cm = kind("", "configmaps");
        for (ct, body) in [
            ("application/json", &b"{"[..]),
            ("application/json", b"[1]"),
            ("application/json", br#"{"metadata": {}}"#),
            ("application/yaml", b"a: [b"),
            (
                "application/json-patch+json",
                br#"[{"op": "remove", "path": "/nope"}]"#,
            ),
            (
                "application/merge-patch+json",
                br#"{"metadata": {"name": "other"}}"#,
            ),
            ("application/strategic-merge-patch+json", br#"{"data": {"k": 1}}"#),
            ("text/plain", b"{}"),
        ] {
            let err = decode_and_validate(cm, ct, body).unwrap_err();
            assert!((400..500).contains(&err.code), "{ct} {body:?}: {err:?}");
        }
    }

    #[test]
    fn every_patch_type_applies_to_the_base_object() {
        let svc = kind("", "services");
        let base = base_object(svc);
        assert_eq!(base["spec"]["ports"][0]["port"], 80);
        let cases: [(&str, &[u8]); 4] = [
            (
                "application/merge-patch+json",
                br#"{"metadata": {"labels": {"x": "1"}}}"#,
            ),
            (
                "application/json-patch+json",
                br#"[{"op": "add", "path": "/metadata/labels/x", "value": "1"}]"#,
            ),
            (
                "application/strategic-merge-patch+json",
                br#"{"metadata": {"labels": {"x": "1"}}}"#,
            ),
            (
                "application/apply-patch+yaml",
                b"apiVersion: v1\nkind: Service\nmetadata:\n  name: fuzz\n  labels:\n    x: \"1\"\n",
            ),
        ];
        for (ct, body) in cases {
            let out = decode_and_validate(svc, ct, body).unwrap_or_else(|e| panic!("{ct}: {e:?}"));
            assert_eq!(out["metadata"]["labels"]["x"], "1", "{ct}");
            assert_eq!(out["metadata"]["uid"], base["metadata"]["uid"], "{ct}");
        }
    }
}
