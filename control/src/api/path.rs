//! Parsing of request paths into routes (discovery endpoints and resource URLs).

/// A request path addressing resources: `/api/v1/...` or `/apis/<group>/<version>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    Resources {
        group: String,
        version: String,
    },
    OpenApiV2,
    OpenApiV3,
    /// `/openapi/v3/<path>`, e.g. `api/v1` or `apis/apps/v1`
    OpenApiV3Doc(String),
    Resource(ResourcePath),
    NotFound,
}

/// Parses a URL path (without query) into a route.
pub fn parse(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3Doc(rest.join("/")),
        ["apis", group] => Route::Group((*group).to_owned()),
        ["api", version] => Route::Resources {
            group: String::new(),
            version: (*version).to_owned(),
        },
        ["apis", group, version] => Route::Resources {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        },
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::NotFound,
    }
}

/// Subresources of the Namespace object itself (which share the `namespaces/<x>/<y>` shape with scoped lists).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let build = |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(ResourcePath {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        })
    };
    match rest {
        ["namespaces", ns, sub] if NAMESPACE_SUBRESOURCES.contains(sub) => {
            build(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural] => build(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => build(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => build(Some(ns), plural, Some(name), Some(sub)),
        [plural] => build(None, plural, None, None),
        [plural, name] => build(None, plural, Some(name), None),
        [plural, name, sub] => build(None, plural, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse("/version"), Route::Version);
        assert_eq!(parse("/api"), Route::CoreVersions);
        assert_eq!(parse("/apis/"), Route::Groups);
        assert_eq!(
            parse("/api/v1"),
            Route::Resources {
                group: "".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            parse("/apis/apps/v1"),
            Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1"),
            Route::OpenApiV3Doc("apis/apps/v1".into())
        );
        assert_eq!(parse("/nope"), Route::NotFound);
    }

    #[test]
    fn resource_paths() {
        assert_eq!(parse("/api/v1/pods"), res("", "pods", None, None, None));
        assert_eq!(
            parse("/api/v1/namespaces/default/pods"),
            res("", "pods", Some("default"), None, None)
        );
        assert_eq!(
            parse("/api/v1/namespaces/d/pods/p/log"),
            res("", "pods", Some("d"), Some("p"), Some("log"))
        );
        assert_eq!(
            parse("/api/v1/namespaces"),
            res("", "namespaces", None, None, None)
        );
        assert_eq!(
            parse("/api/v1/namespaces/kube-system"),
            res("", "namespaces", None, Some("kube-system"), None)
        );
        assert_eq!(
            parse("/api/v1/namespaces/x/status"),
            res("", "namespaces", None, Some("x"), Some("status"))
        );
        assert_eq!(
            parse("/api/v1/nodes/n1/status"),
            res("", "nodes", None, Some("n1"), Some("status"))
        );
        assert_eq!(
            parse("/apis/apps/v1/namespaces/d/deployments/web/scale"),
            res("apps", "deployments", Some("d"), Some("web"), Some("scale"))
        );
        assert_eq!(parse("/api/v1/namespaces/d/pods/p/log/extra"), Route::NotFound);
    }
}
