//! Server-side apply and field ownership: field sets, `managedFields`, the apply merge and conflicts.

pub mod decode;
pub mod fieldset;
pub mod last_applied;
pub mod managed;
pub mod merge;
pub mod request;
pub mod schema;

use serde_json::{Value, json};

use super::router::Ctx;
use super::status::ApiError;
use crate::registry::meta;
use fieldset::Scope;
use managed::{Conflict, Managers, Operation, Writer};

/// Longest manager name derived from a User-Agent (kube's limit).
const MAX_AGENT_MANAGER: usize = 128;

/// The manager of a write: `fieldManager`, else the User-Agent's product (`kubectl` of `kubectl/v1.35.0 ...`).
pub fn manager_name(ctx: &Ctx) -> String {
    if let Some(manager) = ctx.query.get("fieldManager") {
        return manager.to_owned();
    }
    let product = ctx.user_agent.split('/').next().unwrap_or("").trim();
    if product.is_empty() {
        return "unknown".into();
    }
    product.chars().take(MAX_AGENT_MANAGER).collect()
}

/// Which parts of the object a request to this URL writes.
pub fn scope(ctx: &Ctx) -> Scope {
    match ctx.path.subresource.as_deref() {
        Some("status") => Scope::StatusOnly,
        None | Some("scale")
            if ctx.kind.subresources.contains(&"status") && ctx.kind.plural != "namespaces" =>
        {
            Scope::NoStatus
        }
        _ => Scope::All,
    }
}

/// Whether the request is a server-side apply (handled by [`request::apply`], which records its own ownership).
pub fn is_apply(ctx: &Ctx) -> bool {
    ctx.content_type.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml"
        && matches!(ctx.path.subresource.as_deref(), None | Some("status"))
}

pub fn writer(ctx: &Ctx, operation: Operation) -> Writer {
    Writer {
        manager: manager_name(ctx),
        operation,
        api_version: ctx.kind.api_version(),
        subresource: ctx.path.subresource.clone(),
    }
}

/// The managers a write starts from: the ones the client sent when valid (`[{}]` resets them), else the stored ones.
fn base_managers(ctx: &Ctx, old: Option<&Value>, new: &Value) -> Managers {
    let sent = new.pointer("/metadata/managedFields");
    if sent
        .and_then(Value::as_array)
        .is_some_and(|l| l.len() == 1 && l[0] == json!({}))
    {
        return Managers::default();
    }
    if ctx.path.subresource.is_none()
        && let Ok(managers) = Managers::decode(new)
        && !managers.0.is_empty()
    {
        return managers;
    }
    old.and_then(|o| Managers::decode(o).ok()).unwrap_or_default()
}

/// Sets `metadata.managedFields` of `new`, omitted when empty.
pub fn set_managed(new: &mut Value, managers: &Managers) {
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let meta = new["metadata"].as_object_mut().expect("made an object above");
    if managers.0.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), managers.encode());
    }
}

/// Records an ordinary create (`old` = `None`), update or patch in `new`'s managedFields.
pub fn record_update(ctx: &Ctx, old: Option<&Value>, new: &mut Value) {
    let mut managers = base_managers(ctx, old, new);
    let empty = json!({});
    managers.record_update(
        old.unwrap_or(&empty),
        new,
        &writer(ctx, Operation::Update),
        scope(ctx),
        &meta::now(),
    );
    set_managed(new, &managers);
}

/// kube's PatchOptions validation: apply needs a `fieldManager`, only apply takes `force`, managers are short.
pub fn validate_patch_options(ctx: &Ctx) -> Result<(), ApiError> {
    let manager = ctx.query.get("fieldManager").unwrap_or("");
    let mut causes = Vec::new();
    if is_apply(ctx) && manager.is_empty() {
        causes.push((
            "FieldValueRequired",
            "Required value: is required for apply patch",
            "fieldManager",
        ));
    }
    if !is_apply(ctx) && ctx.query.get("force").is_some() {
        causes.push((
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
            "force",
        ));
    }
    if manager.len() > MAX_AGENT_MANAGER {
        causes.push((
            "FieldValueTooLong",
            "Too long: may not be more than 128 bytes",
            "fieldManager",
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = causes.iter().map(|(_, m, f)| format!("{f}: {m}")).collect();
    let message = match list.as_slice() {
        [one] => format!("PatchOptions.meta.k8s.io \"\" is invalid: {one}"),
        many => format!("PatchOptions.meta.k8s.io \"\" is invalid: [{}]", many.join(", ")),
    };
    let causes: Vec<Value> = causes
        .iter()
        .map(|(reason, m, f)| json!({"reason": reason, "message": m, "field": f}))
        .collect();
    Err(ApiError {
        code: 422,
        reason: "Invalid",
        message,
        details: Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": causes})),
    })
}

/// The 409 kube answers to a conflicting apply, one `FieldManagerConflict` cause per field.
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager),
                "field": fieldset::display(&c.path),
            })
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message: managed::conflict_message(conflicts),
        details: Some(json!({"causes": causes})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::path::{self, Route};
    use crate::api::query::Query;
    use crate::registry::kinds;

    fn ctx(url: &str, query: &str, user_agent: &str) -> Ctx {
        let Route::Resource(path) = path::parse(url) else {
            panic!("{url} is not a resource path")
        };
        Ctx {
            kind: kinds::find(&path.group, &path.version, &path.plural).expect("served kind"),
            path,
            query: Query::parse(Some(query)),
            table: false,
            content_type: "application/apply-patch+yaml".into(),
            user_agent: user_agent.into(),
        }
    }

    #[test]
    fn managers_come_from_the_query_or_the_user_agent() {
        let url = "/apis/apps/v1/namespaces/default/deployments/web";
        let agent = "kubectl/v1.35.0 (linux/amd64) kubernetes/abcdef";
        assert_eq!(
            manager_name(&ctx(url, "fieldManager=kubectl-edit", agent)),
            "kubectl-edit"
        );
        assert_eq!(manager_name(&ctx(url, "", agent)), "kubectl");
        assert_eq!(manager_name(&ctx(url, "", "")), "unknown");
        let long = "x".repeat(300);
        assert_eq!(manager_name(&ctx(url, "", &long)).len(), MAX_AGENT_MANAGER);
    }

    #[test]
    fn scopes_follow_the_subresource() {
        let deploy = "/apis/apps/v1/namespaces/default/deployments/web";
        assert_eq!(scope(&ctx(deploy, "", "")), Scope::NoStatus);
        assert_eq!(
            scope(&ctx(&format!("{deploy}/status"), "", "")),
            Scope::StatusOnly
        );
        assert_eq!(scope(&ctx(&format!("{deploy}/scale"), "", "")), Scope::NoStatus);
        assert_eq!(
            scope(&ctx("/api/v1/namespaces/default/configmaps/c", "", "")),
            Scope::All
        );
        assert!(is_apply(&ctx(deploy, "", "")));
        assert!(!is_apply(&ctx(&format!("{deploy}/scale"), "", "")));
    }

    #[test]
    fn patch_options_are_validated_like_kube() {
        let url = "/api/v1/namespaces/default/configmaps/c";
        let err = validate_patch_options(&ctx(url, "", "kubectl/v1")).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert_eq!(
            err.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        assert!(validate_patch_options(&ctx(url, "fieldManager=me&force=true", "")).is_ok());
        let mut merge = ctx(url, "force=true", "");
        merge.content_type = "application/merge-patch+json".into();
        assert!(
            validate_patch_options(&merge)
                .unwrap_err()
                .message
                .contains("force: Forbidden")
        );
    }

    #[test]
    fn conflicts_become_kube_status_causes() {
        let conflicts = vec![Conflict {
            manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
            path: vec![
                fieldset::Element::Field("spec".into()),
                fieldset::Element::Field("replicas".into()),
            ],
        }];
        let err = conflict_error(&conflicts);
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let cause = &err.details.unwrap()["causes"][0];
        assert_eq!(cause["reason"], "FieldManagerConflict");
        assert_eq!(cause["field"], ".spec.replicas");
    }
}
