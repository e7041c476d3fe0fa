//! Authorization attributes of a request (verb, group, resource, subresource, namespace, name or path) and
//! kube-apiserver's wording of a denial.

use axum::http::Method;
use serde_json::json;

use super::UserInfo;
use crate::api::path::{self, Route};
use crate::api::status::ApiError;

/// What a request wants to do, as kube-apiserver's authorizers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection (or impersonate, ...); for
    /// non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// Whether the request addresses an API resource (else a non-resource path like `/version`).
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests (and for lists across all namespaces).
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// A resource request (for tests and reviews).
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Self {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Self::default()
        }
    }

    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Self {
            verb: verb.into(),
            path: path.into(),
            ..Self::default()
        }
    }

    /// The attributes of an HTTP request (kube-apiserver's RequestInfo rules).
    pub fn from_request(method: &Method, uri_path: &str, query: Option<&str>) -> Self {
        let Route::Resource(r) = path::parse(uri_path) else {
            let verb = method.as_str().to_ascii_lowercase();
            return Self::non_resource(&verb, uri_path);
        };
        let mut watch = false;
        let mut field_name = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "watch" => watch = matches!(&*value, "true" | "1"),
                "fieldSelector" => field_name = selected_name(&value),
                _ => {}
            }
        }
        let named = r.name.is_some();
        // A WebSocket exec, attach or port-forward is a GET that starts something: kube-apiserver authorizes it as
        // create (AuthorizePodWebsocketUpgradeCreatePermission), like the SPDY POST.
        let streaming = r.plural == "pods"
            && r.group.is_empty()
            && matches!(r.subresource.as_deref(), Some("exec" | "attach" | "portforward"));
        let verb = match *method {
            Method::GET | Method::HEAD if streaming && named => "create",
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "",
        };
        let mut name = r.name.clone().unwrap_or_default();
        if matches!(verb, "list" | "watch") && name.is_empty() {
            name = field_name.unwrap_or_default();
        }
        // `namespaces/<x>` is in namespace x, so a RoleBinding there can grant reading it.
        let namespace = match (&r.namespace, r.plural.as_str(), &r.name) {
            (Some(ns), _, _) => ns.clone(),
            (None, "namespaces", Some(n)) if r.group.is_empty() => n.clone(),
            _ => String::new(),
        };
        Self {
            verb: verb.to_owned(),
            resource_request: true,
            path: uri_path.to_owned(),
            api_group: r.group,
            api_version: r.version,
            resource: r.plural,
            subresource: r.subresource.unwrap_or_default(),
            namespace,
            name,
        }
    }

    /// `pods` or `pods/log`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// kube-apiserver's sentence for a denial: `User "x" cannot list resource "pods" in API group "" in
    /// the namespace "default"`.
    pub fn denial(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = self.combined_resource();
        let (verb, group) = (&self.verb, &self.api_group);
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
            )
        } else {
            format!(
                "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {:?}",
                self.namespace
            )
        }
    }
}

/// The name a `metadata.name=<x>` field selector pins a list or watch to.
fn selected_name(selector: &str) -> Option<String> {
    let mut found = None;
    for term in selector.split(',') {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        if field.trim() == "metadata.name" && !field.ends_with('!') {
            found = Some(value.trim().to_owned());
        }
    }
    found
}

/// The 403 Forbidden Status kube-apiserver answers when `user` may not do `attrs`.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> ApiError {
    let mut message = attrs.denial(&user.name);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    if !attrs.resource_request || attrs.resource.is_empty() {
        return ApiError::forbidden(format!("forbidden: {message}"));
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    let full = if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {message}")
    } else {
        format!("{qualified} {:?} is forbidden: {message}", attrs.name)
    };
    let mut error = ApiError::forbidden(full);
    error.details = Some(json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: Option<&str>) -> Attributes {
        Attributes::from_request(&method, path, query)
    }

    #[test]
    fn verbs_follow_kube_request_info() {
        let list = attrs(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!((list.verb.as_str(), list.namespace.as_str()), ("list", "default"));
        assert_eq!(
            attrs(Method::GET, "/api/v1/pods", Some("watch=true")).verb,
            "watch"
        );
        assert_eq!(attrs(Method::GET, "/api/v1/pods", Some("watch=1")).verb, "watch");
        assert_eq!(
            attrs(Method::GET, "/api/v1/namespaces/d/pods/p", None).verb,
            "get"
        );
        assert_eq!(
            attrs(Method::HEAD, "/api/v1/namespaces/d/pods/p", None).verb,
            "get"
        );
        assert_eq!(
            attrs(Method::POST, "/api/v1/namespaces/d/pods", None).verb,
            "create"
        );
        assert_eq!(
            attrs(Method::PUT, "/api/v1/namespaces/d/pods/p", None).verb,
            "update"
        );
        assert_eq!(
            attrs(Method::PATCH, "/api/v1/namespaces/d/pods/p", None).verb,
            "patch"
        );
        assert_eq!(
            attrs(Method::DELETE, "/api/v1/namespaces/d/pods/p", None).verb,
            "delete"
        );
        assert_eq!(
            attrs(Method::DELETE, "/api/v1/namespaces/d/pods", None).verb,
            "deletecollection"
        );
    }

    #[test]
    fn resources_subresources_names_and_namespaces() {
        let log = attrs(Method::GET, "/api/v1/namespaces/d/pods/p/log", None);
        assert_eq!(
            (log.resource.as_str(), log.subresource.as_str(), log.name.as_str()),
            ("pods", "log", "p")
        );
        assert_eq!(log.combined_resource(), "pods/log");
        for method in [Method::GET, Method::POST] {
            let exec = attrs(method, "/api/v1/namespaces/d/pods/p/exec", Some("command=ls"));
            assert_eq!(
                (exec.verb.as_str(), exec.combined_resource().as_str()),
                ("create", "pods/exec"),
                "a WebSocket exec (GET) is authorized as create, like SPDY's POST"
            );
        }
        let deploy = attrs(
            Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            None,
        );
        assert_eq!(
            (deploy.api_group.as_str(), deploy.api_version.as_str()),
            ("apps", "v1")
        );
        let ns = attrs(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (ns.namespace.as_str(), ns.name.as_str()),
            ("kube-system", "kube-system")
        );
        let node = attrs(Method::PATCH, "/api/v1/nodes/n1/status", None);
        assert_eq!(
            (node.namespace.as_str(), node.subresource.as_str()),
            ("", "status")
        );
        let pinned = attrs(
            Method::GET,
            "/api/v1/namespaces/d/configmaps",
            Some("watch=true&fieldSelector=metadata.name%3Dc1"),
        );
        assert_eq!((pinned.verb.as_str(), pinned.name.as_str()), ("watch", "c1"));
    }

    #[test]
    fn non_resource_paths() {
        let version = attrs(Method::GET, "/version", None);
        assert!(!version.resource_request);
        assert_eq!(
            (version.verb.as_str(), version.path.as_str()),
            ("get", "/version")
        );
        assert!(!attrs(Method::GET, "/apis/apps/v1", None).resource_request);
        assert_eq!(attrs(Method::POST, "/openapi/v2", None).verb, "post");
    }

    #[test]
    fn denial_messages_match_kube_apiserver() {
        let user = UserInfo::authenticated("jane".into(), vec![]);
        let list = attrs(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            forbidden(&user, &list, "").message,
            "pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let node = attrs(Method::PATCH, "/api/v1/nodes/n2/status", None);
        assert_eq!(
            forbidden(&user, &node, "").message,
            "nodes \"n2\" is forbidden: User \"jane\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope"
        );
        let deploy = attrs(Method::POST, "/apis/apps/v1/namespaces/d/deployments", None);
        assert!(
            forbidden(&user, &deploy, "RBAC: x")
                .message
                .starts_with("deployments.apps is forbidden: User \"jane\" cannot create")
        );
        let path = attrs(Method::GET, "/openapi/v2", None);
        assert_eq!(
            forbidden(&user, &path, "").message,
            "forbidden: User \"jane\" cannot get path \"/openapi/v2\""
        );
        assert_eq!(forbidden(&user, &path, "").code, 403);
    }
}
