//! OpenAPI documents: v2 as gnostic protobuf (what kubectl validates with) or JSON, and v3 per group-version.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::discovery::KUBE_VERSION;
use super::router::json_response;
use crate::registry::kinds::group_versions;

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

/// `/openapi/v3`: the index of per group-version documents.
pub fn v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let path = gv_path(g, v);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=skiff0")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>`: a document for one group-version.
pub fn v3_doc(path: &str) -> Option<Value> {
    group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path)?;
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": {},
        "components": {"schemas": {}},
    }))
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
    }
}
