//! Discovery documents: /version, /api, /apis, per group-version resource lists, and health endpoints.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::openapi;
use super::path::Route;
use super::router::json_response;
use super::status::ApiError;
use crate::registry::kinds::{KINDS, Kind, group_versions};

/// The Kubernetes version this server presents itself as.
pub const KUBE_VERSION: (&str, &str) = ("1", "35");

/// Serves a GET of a non-resource route.
pub fn serve(route: &Route, accept: Option<&str>) -> Result<Response, ApiError> {
    match route {
        Route::Version => Ok(json_response(StatusCode::OK, &version())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions if wants_aggregated(accept) => Ok(aggregated_response(true)),
        Route::Groups if wants_aggregated(accept) => Ok(aggregated_response(false)),
        Route::CoreVersions => Ok(json_response(StatusCode::OK, &core_versions())),
        Route::Groups => Ok(json_response(StatusCode::OK, &group_list())),
        Route::Group(group) => group_doc(group)
            .map(|g| json_response(StatusCode::OK, &g))
            .ok_or_else(ApiError::no_route),
        Route::Resources { group, version } => resource_list(group, version)
            .map(|r| json_response(StatusCode::OK, &r))
            .ok_or_else(ApiError::no_route),
        Route::OpenApiV2 => Ok(openapi::v2(accept)),
        Route::OpenApiV3 => Ok(json_response(StatusCode::OK, &openapi::v3_root())),
        Route::OpenApiV3Doc(path) => openapi::v3_doc(path)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(ApiError::no_route),
        Route::Resource(_) | Route::NotFound => Err(ApiError::no_route()),
    }
}

/// The media type of aggregated discovery (apidiscovery.k8s.io/v2).
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client prefers aggregated discovery (kubectl and client-go list it first).
fn wants_aggregated(accept: Option<&str>) -> bool {
    accept.and_then(|a| a.split(',').next()).is_some_and(|first| {
        first.contains("as=APIGroupDiscoveryList")
            && first.contains("g=apidiscovery.k8s.io")
            && first.contains("v=v2")
    })
}

fn aggregated_response(core: bool) -> Response {
    let mut response = json_response(StatusCode::OK, &aggregated(core));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(AGGREGATED),
    );
    response
}

/// `APIGroupDiscoveryList` for the core group (`/api`) or the named groups (`/apis`).
pub fn aggregated(core: bool) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if g.is_empty() == core && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let versions: Vec<Value> = group_versions()
                .into_iter()
                .filter(|(g, _)| *g == group)
                .map(|(g, v)| {
                    let resources: Vec<Value> = KINDS
                        .iter()
                        .filter(|k| k.group == g && k.version == v)
                        .map(|k| {
                            let subresources: Vec<Value> = k
                                .subresources
                                .iter()
                                .map(|sub| {
                                    let doc = subresource(k, sub);
                                    let kind = json!({
                                        "group": doc.get("group").cloned().unwrap_or(json!(k.group)),
                                        "version": doc.get("version").cloned().unwrap_or(json!(k.version)),
                                        "kind": doc["kind"],
                                    });
                                    json!({"subresource": sub, "responseKind": kind, "verbs": doc["verbs"]})
                                })
                                .collect();
                            let mut doc = json!({
                                "resource": k.plural,
                                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                                "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": k.singular,
                                "verbs": k.verbs,
                            });
                            if !k.short_names.is_empty() {
                                doc["shortNames"] = json!(k.short_names);
                            }
                            if !k.categories.is_empty() {
                                doc["categories"] = json!(k.categories);
                            }
                            if !subresources.is_empty() {
                                doc["subresources"] = json!(subresources);
                            }
                            doc
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn version() -> Value {
    let (major, minor) = KUBE_VERSION;
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("v{major}.{minor}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_doc(group: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group && !g.is_empty())
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": preferred}),
    )
}

fn group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().filter_map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn subresource(kind: &Kind, sub: &str) -> Value {
    let (sub_kind, group, version, verbs): (&str, Option<&str>, Option<&str>, &[&str]) = match sub {
        "scale" => (
            "Scale",
            Some("autoscaling"),
            Some("v1"),
            &["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, None, &["create"]),
        "token" => (
            "TokenRequest",
            Some("authentication.k8s.io"),
            Some("v1"),
            &["create"],
        ),
        "log" => ("Pod", None, None, &["get"]),
        "exec" => ("PodExecOptions", None, None, &["create", "get"]),
        "finalize" => (kind.kind, None, None, &["update"]),
        _ => (kind.kind, None, None, &["get", "patch", "update"]),
    };
    let mut doc = json!({
        "name": format!("{}/{sub}", kind.plural),
        "singularName": "",
        "namespaced": kind.namespaced,
        "kind": sub_kind,
        "verbs": verbs,
    });
    if let (Some(g), Some(v)) = (group, version) {
        doc["group"] = json!(g);
        doc["version"] = json!(v);
    }
    doc
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for kind in kinds {
        let mut doc = json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": kind.verbs,
        });
        if !kind.short_names.is_empty() {
            doc["shortNames"] = json!(kind.short_names);
        }
        if !kind.categories.is_empty() {
            doc["categories"] = json!(kind.categories);
        }
        resources.push(doc);
        resources.extend(kind.subresources.iter().map(|sub| subresource(kind, sub)));
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_pods_with_subresources() {
        let list = resource_list("", "v1").unwrap();
        let resources = list["resources"].as_array().unwrap();
        let pods = resources.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["namespaced"], true);
        assert!(resources.iter().any(|r| r["name"] == "pods/status"));
        assert!(
            resources
                .iter()
                .any(|r| r["name"] == "pods/log" && r["verbs"] == json!(["get"]))
        );
        let nodes = resources.iter().find(|r| r["name"] == "nodes").unwrap();
        assert_eq!(nodes["namespaced"], false);
        assert!(resource_list("nope", "v1").is_none());
    }

    #[test]
    fn aggregated_discovery() {
        assert!(wants_aggregated(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_aggregated(Some("application/json")));
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let v1 = &core["items"][0]["versions"][0];
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert!(
            pods["subresources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["subresource"] == "log")
        );
        let groups = aggregated(false);
        let names: Vec<&str> = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "discovery.k8s.io",
                "coordination.k8s.io",
                "events.k8s.io",
                "rbac.authorization.k8s.io",
                "authorization.k8s.io",
                "authentication.k8s.io"
            ]
        );
        let deploy = &groups["items"][0]["versions"][0]["resources"][0];
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
    }

    #[test]
    fn groups_and_scale() {
        let groups = group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "discovery.k8s.io",
                "coordination.k8s.io",
                "events.k8s.io",
                "rbac.authorization.k8s.io",
                "authorization.k8s.io",
                "authentication.k8s.io"
            ]
        );
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }
}
