//! Reads: get one object, and list with selectors, limit/continue and resourceVersion semantics.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::objects;
use super::query::{decode_continue, encode_continue};
use super::router::{ApiState, Ctx, json_response};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::table;
use crate::registry::kinds::Kind;
use crate::store::{self, ListOptions};

/// Label and field selectors of a request.
pub struct Filter {
    label: LabelSelector,
    field: FieldSelector,
    /// Set for a view kind: its field selectors also see the stored kind's fields (`involvedObject.*`).
    view: Option<&'static Kind>,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx) -> Result<Self, ApiError> {
        let label = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let field = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""), ctx.kind.plural)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let view = ctx.kind.is_view().then_some(ctx.kind);
        Ok(Self { label, field, view })
    }

    pub fn matches(&self, object: &Value) -> bool {
        if !self.label.matches(object) {
            return false;
        }
        match self.view {
            Some(kind) if self.field != FieldSelector::default() => {
                self.field.matches(&with_stored_fields(kind, object))
            }
            _ => self.field.matches(object),
        }
    }
}

/// A view object with the fields of its stored shape added (the view's own fields win).
fn with_stored_fields(kind: &Kind, object: &Value) -> Value {
    let mut both = kind.to_storage(object.clone());
    if let (Value::Object(both), Value::Object(view)) = (&mut both, object) {
        for (key, value) in view {
            both.insert(key.clone(), value.clone());
        }
    }
    both
}

/// GET of one object (or its status subresource, which reads the same).
pub async fn get(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Response, ApiError> {
    let key = ctx.kind.key(ctx.namespace(), ctx.name());
    let kv = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, ctx.kind, ctx.name()))?;
    let kv = kv.ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    let object = objects::from_kv_as(ctx.kind, &kv)?;
    if ctx.table {
        let rv = kv.mod_revision.to_string();
        return Ok(json_response(
            StatusCode::OK,
            &table::render(ctx.kind, &[object], &rv, None, &ctx.query),
        ));
    }
    Ok(json_response(StatusCode::OK, &object))
}

/// A page of a list: matching objects, the snapshot revision and the continue token.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: u64,
    pub continue_token: Option<String>,
}

/// Lists objects for the request, honouring selectors, limit, continue and resourceVersion(Match).
pub async fn list_page(state: &Arc<ApiState>, ctx: &Ctx, filter: &Filter) -> Result<Page, ApiError> {
    let prefix = ctx.kind.list_prefix(ctx.namespace());
    let limit = ctx
        .query
        .number("limit")?
        .map_or(0, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let (mut revision, mut cursor) = match ctx.query.get("continue") {
        Some(token) => {
            let (rev, key) = decode_continue(token)?;
            if !key.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "the continue token does not belong to this list",
                ));
            }
            (Some(rev), Some(key))
        }
        None => {
            let rv = ctx.query.resource_version()?;
            match ctx.query.get("resourceVersionMatch") {
                Some("Exact") => (
                    Some(rv.ok_or_else(|| {
                        ApiError::bad_request("resourceVersionMatch=Exact requires a resourceVersion")
                    })?),
                    None,
                ),
                Some("NotOlderThan") | None => (None, None),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown resourceVersionMatch {other:?}"
                    )));
                }
            }
        }
    };
    let chunk = if limit == 0 { 0 } else { limit.max(100) };
    let mut items = Vec::new();
    loop {
        let opts = ListOptions {
            revision,
            start_after: cursor.clone(),
            limit: chunk,
        };
        let page = state.store.list(&prefix, opts).await.map_err(|e| match e {
            store::Error::Compacted { .. } if ctx.query.get("continue").is_some() => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a \
                 new list without the continue parameter.",
            ),
            other => ApiError::from_store(other, ctx.kind, ""),
        })?;
        revision = Some(page.revision);
        let count = page.items.len();
        for (i, kv) in page.items.into_iter().enumerate() {
            cursor = Some(kv.key.clone());
            let object = objects::from_kv_as(ctx.kind, &kv)?;
            if filter.matches(&object) {
                items.push(object);
                if limit != 0 && items.len() == limit {
                    let more = i + 1 < count || page.more;
                    let token = more.then(|| encode_continue(page.revision, &kv.key));
                    return Ok(Page {
                        items,
                        revision: page.revision,
                        continue_token: token,
                    });
                }
            }
        }
        if !page.more {
            return Ok(Page {
                items,
                revision: page.revision,
                continue_token: None,
            });
        }
    }
}

/// GET of a collection.
pub async fn list(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Response, ApiError> {
    let filter = Filter::from_ctx(ctx)?;
    let page = list_page(state, ctx, &filter).await?;
    let rv = page.revision.to_string();
    if ctx.table {
        let table = table::render(
            ctx.kind,
            &page.items,
            &rv,
            page.continue_token.as_deref(),
            &ctx.query,
        );
        return Ok(json_response(StatusCode::OK, &table));
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    let list = json!({
        "kind": format!("{}List", ctx.kind.kind),
        "apiVersion": ctx.kind.api_version(),
        "metadata": metadata,
        "items": page.items,
    });
    Ok(json_response(StatusCode::OK, &list))
}
