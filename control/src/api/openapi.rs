//! OpenAPI documents: v2 as gnostic protobuf (what kubectl validates with) or JSON, and v3 per group-version.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::discovery::KUBE_VERSION;
use super::router::json_response;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;

use crate::registry::kinds::{KINDS, Kind, group_versions};

/// The media type kubectl reads (note the dot before `v1.0`).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn put_len_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    let mut len = bytes.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// A minimal valid gnostic `openapi_v2.Document`: swagger (1) = "2.0", info (2) = {title (1), version (2)}.
pub fn v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    put_len_delimited(&mut info, 1, b"Kubernetes");
    put_len_delimited(
        &mut info,
        2,
        format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1).as_bytes(),
    );
    let mut doc = Vec::new();
    put_len_delimited(&mut doc, 1, b"2.0");
    put_len_delimited(&mut doc, 2, &info);
    doc
}

fn v2_json() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": {},
        "definitions": {},
    })
}

/// `/openapi/v2`: protobuf when asked for it, JSON otherwise.
pub fn v2(accept: Option<&str>) -> Response {
    if accept.is_some_and(|a| a.contains("protobuf")) {
        let mut response = (StatusCode::OK, v2_protobuf()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(V2_PROTOBUF));
        return response;
    }
    json_response(StatusCode::OK, &v2_json())
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Per group-version OpenAPI v3 documents, generated once from the k8s-openapi schemas.
fn v3_documents() -> &'static HashMap<String, (Value, u64)> {
    static DOCS: OnceLock<HashMap<String, (Value, u64)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = build_v3(g, v);
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                doc.to_string().hash(&mut hasher);
                (gv_path(g, v), (doc, hasher.finish()))
            })
            .collect()
    })
}

fn build_v3(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    for kind in &kinds {
        (kind.schema)(&mut generator);
    }
    let mut schemas = generator.take_definitions(true);
    for kind in &kinds {
        if let Some(definition) = schemas.get_mut((kind.schema_name)().as_ref()) {
            definition["x-kubernetes-group-version-kind"] =
                json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
        }
    }
    let mut paths = serde_json::Map::new();
    for kind in &kinds {
        add_paths(&mut paths, kind);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Operations for a kind's collection and item paths, tagged with the kind (kubectl explain finds the
/// schema through them) and advertising server-side `fieldValidation` on writes.
///
/// PATCH operations deliberately declare no request content types: kubectl then computes strategic
/// merge patches from its compiled-in types (with the right merge keys) instead of from these schemas,
/// which lack `x-kubernetes-patch-merge-key`; declaring them made `kubectl apply` of an unchanged
/// manifest report "configured".
fn add_paths(paths: &mut serde_json::Map<String, Value>, kind: &Kind) {
    let root = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let base = if kind.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{root}/{}", kind.plural)
    };
    let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    let reference = json!({"$ref": format!("#/components/schemas/{}", (kind.schema_name)())});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
    let field_validation = json!({
        "name": "fieldValidation",
        "in": "query",
        "description": "fieldValidation instructs the server on how to handle objects in the request containing \
            unknown or duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.",
        "schema": {"type": "string", "uniqueItems": true},
    });
    let op = |action: &str, writes: bool| {
        let mut op = json!({
            "operationId": format!("{action}{}", kind.kind),
            "responses": ok.clone(),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk.clone(),
        });
        if writes {
            op["parameters"] = json!([field_validation.clone()]);
        }
        op
    };
    paths.insert(
        base.clone(),
        json!({"get": op("list", false), "post": op("post", true)}),
    );
    paths.insert(
        format!("{base}/{{name}}"),
        json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false)}),
    );
}

/// `/openapi/v3`: the index of per group-version documents.
pub fn v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, (_, hash)) in v3_documents() {
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash:016X}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>`: the document for one group-version.
pub fn v3_doc(path: &str) -> Option<Value> {
    v3_documents().get(path).map(|(doc, _)| doc.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_document_bytes() {
        let doc = v2_protobuf();
        assert_eq!(&doc[..5], b"\x0a\x032.0");
        assert_eq!(doc[5], 0x12);
        assert_eq!(usize::from(doc[6]), doc.len() - 7);
        assert_eq!(&doc[7..9], b"\x0a\x0a");
        assert_eq!(&doc[9..19], b"Kubernetes");
    }

    #[test]
    fn v3_index_lists_every_group_version() {
        let root = v3_root();
        assert!(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1")
        );
        assert!(root["paths"].get("apis/apps/v1").is_some());
        assert!(v3_doc("apis/apps/v1").is_some());
        assert!(v3_doc("apis/nope/v1").is_none());
        let core = v3_doc("api/v1").unwrap();
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod["properties"]["spec"].is_object());
        assert!(
            core["components"]["schemas"]
                .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
                .is_some()
        );
    }
}
