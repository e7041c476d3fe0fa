//! Pure request mapping of the kubelet endpoint: the authorization attributes of a request (kubelet's
//! `nodes/<subresource>` mapping) and the bearer token it carries.

/// What a request asks of this node, as a SubjectAccessReview sees it: `<verb> nodes/<subresource> <node>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: String,
    pub subresource: &'static str,
    pub node: String,
    pub path: String,
}

/// The verb of an HTTP method, as kubelet maps it (anything else is not authorized).
pub fn verb(method: &str) -> Option<&'static str> {
    Some(match method {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => return None,
    })
}

/// Whether `path` is `prefix` or below it (`/stats` covers `/stats/summary`, not `/statsx`).
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// kubelet's subresource of a path: stats, metrics, log and spec have their own, everything else
/// (`/containerLogs`, `/exec`, `/run`, `/pods`, ...) is `proxy`.
pub fn subresource(path: &str) -> &'static str {
    [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
    ]
    .into_iter()
    .find(|(prefix, _)| under(path, prefix))
    .map_or("proxy", |(_, sub)| sub)
}

/// The attributes of `method path` on `node`; `None` for a method kubelet does not authorize.
pub fn attributes(method: &str, path: &str, node: &str) -> Option<Attributes> {
    Some(Attributes {
        verb: verb(method)?.to_owned(),
        subresource: subresource(path),
        node: node.to_owned(),
        path: path.to_owned(),
    })
}

/// The token of an `Authorization: Bearer <token>` header value (`None` for other schemes or none).
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Paths served without authentication (kubelet's read-only health check).
pub fn is_open(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && path == "/healthz"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources_like_kubelet() {
        assert_eq!(subresource("/containerLogs/default/p/c"), "proxy");
        assert_eq!(subresource("/exec/default/p/c"), "proxy");
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/stats"), "stats");
        assert_eq!(subresource("/statsx"), "proxy");
        assert_eq!(subresource("/metrics/cadvisor"), "metrics");
        assert_eq!(subresource("/logs/syslog"), "log");
        assert_eq!(subresource("/spec/"), "spec");
        let a = attributes("GET", "/containerLogs/d/p/c", "n1").unwrap();
        assert_eq!(
            (a.verb.as_str(), a.subresource, a.node.as_str()),
            ("get", "proxy", "n1")
        );
        assert_eq!(attributes("POST", "/exec/d/p/c", "n1").unwrap().verb, "create");
        assert_eq!(attributes("DELETE", "/pods", "n1").unwrap().verb, "delete");
        assert!(attributes("TRACE", "/", "n1").is_none());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn only_healthz_is_open() {
        assert!(is_open("GET", "/healthz"));
        assert!(!is_open("POST", "/healthz"));
        assert!(!is_open("GET", "/containerLogs/a/b/c"));
        assert!(!is_open("GET", "/healthz/x"));
    }
}
