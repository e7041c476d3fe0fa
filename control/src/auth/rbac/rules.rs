//! Whether one RBAC PolicyRule covers a request, and whether a binding's subject names a user.

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use crate::auth::{Attributes, UserInfo, tokens};

fn has(list: &Option<Vec<String>>, wanted: &str) -> bool {
    list.iter().flatten().any(|item| item == "*" || item == wanted)
}

/// `verbs` holds the verb or `*`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

/// `apiGroups` holds the group or `*`.
pub fn group_matches(rule: &PolicyRule, group: &str) -> bool {
    has(&rule.api_groups, group)
}

/// `resources` holds `*`, `resource`, `resource/subresource`, or `*/subresource` for a subresource request.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().flatten().any(|r| {
        r == "*" || r == combined || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// No `resourceNames` means every name; otherwise the request's name must be listed.
pub fn name_matches(rule: &PolicyRule, name: &str) -> bool {
    match &rule.resource_names {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => names.iter().any(|n| n == name),
    }
}

/// `nonResourceURLs` holds `*`, the path, or a prefix ending in `*`.
pub fn url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls
        .iter()
        .flatten()
        .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
}

/// Whether `rule` allows the request.
pub fn allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !verb_matches(rule, &attrs.verb) {
        return false;
    }
    if attrs.resource_request {
        group_matches(rule, &attrs.api_group)
            && resource_matches(rule, &attrs.combined_resource(), &attrs.subresource)
            && name_matches(rule, &attrs.name)
    } else {
        url_matches(rule, &attrs.path)
    }
}

/// Whether a binding subject names `user`; `binding_namespace` is the RoleBinding's namespace (empty for
/// ClusterRoleBindings), the default namespace of ServiceAccount subjects.
pub fn subject_matches(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && tokens::parse_username(&user.name) == Some((ns, subject.name.as_str()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let list = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        PolicyRule {
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            api_groups: list(groups),
            resources: list(resources),
            resource_names: if names.is_empty() { None } else { list(names) },
            non_resource_urls: None,
        }
    }

    fn req(verb: &str, group: &str, resource: &str, name: &str) -> Attributes {
        Attributes::resource(verb, group, resource, "default", name)
    }

    #[test]
    fn verbs_groups_and_resources() {
        let read = rule(&["get", "list", "watch"], &[""], &["pods"], &[]);
        assert!(allows(&read, &req("get", "", "pods", "p")));
        assert!(allows(&read, &req("watch", "", "pods", "")));
        assert!(!allows(&read, &req("create", "", "pods", "")));
        assert!(!allows(&read, &req("get", "apps", "pods", "p")));
        assert!(!allows(&read, &req("get", "", "services", "s")));
        let all = rule(&["*"], &["*"], &["*"], &[]);
        assert!(allows(&all, &req("deletecollection", "apps", "deployments", "")));
        assert!(allows(&all, &req("get", "", "pods/log", "p")));
    }

    #[test]
    fn subresources_need_their_own_grant() {
        let pods = rule(&["get"], &[""], &["pods"], &[]);
        assert!(!allows(&pods, &req("get", "", "pods/log", "p")));
        let logs = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(allows(&logs, &req("get", "", "pods/log", "p")));
        assert!(!allows(&logs, &req("get", "", "pods", "p")));
        let any_status = rule(&["patch"], &["*"], &["*/status"], &[]);
        assert!(allows(&any_status, &req("patch", "", "nodes/status", "n")));
        assert!(!allows(&any_status, &req("patch", "", "nodes", "n")));
        assert!(!allows(&any_status, &req("patch", "", "pods/log", "n")));
    }

    #[test]
    fn resource_names_limit_named_requests() {
        let one = rule(&["get", "update"], &[""], &["configmaps"], &["cfg"]);
        assert!(allows(&one, &req("get", "", "configmaps", "cfg")));
        assert!(!allows(&one, &req("get", "", "configmaps", "other")));
        // A list is not a request for one name.
        assert!(!allows(&one, &req("list", "", "configmaps", "")));
    }

    #[test]
    fn non_resource_urls() {
        let mut r = rule(&["get"], &[], &[], &[]);
        r.non_resource_urls = Some(vec!["/version".into(), "/apis/*".into()]);
        assert!(allows(&r, &Attributes::non_resource("get", "/version")));
        assert!(allows(&r, &Attributes::non_resource("get", "/apis/apps/v1")));
        assert!(!allows(&r, &Attributes::non_resource("get", "/api")));
        assert!(!allows(&r, &Attributes::non_resource("post", "/version")));
        // Resource rules never grant non-resource paths and the reverse.
        assert!(!allows(
            &rule(&["*"], &["*"], &["*"], &[]),
            &Attributes::non_resource("get", "/version")
        ));
        assert!(!allows(&r, &req("get", "", "pods", "p")));
    }

    #[test]
    fn subjects() {
        let subject = |kind: &str, name: &str, ns: Option<&str>| Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(Into::into),
            api_group: None,
        };
        let jane = UserInfo::authenticated("jane".into(), vec!["devs".into()]);
        assert!(subject_matches(&subject("User", "jane", None), &jane, ""));
        assert!(!subject_matches(&subject("User", "john", None), &jane, ""));
        assert!(subject_matches(&subject("Group", "devs", None), &jane, ""));
        assert!(subject_matches(
            &subject("Group", "system:authenticated", None),
            &jane,
            ""
        ));
        let sa = UserInfo::authenticated("system:serviceaccount:ns1:robot".into(), vec![]);
        assert!(subject_matches(
            &subject("ServiceAccount", "robot", Some("ns1")),
            &sa,
            ""
        ));
        assert!(subject_matches(
            &subject("ServiceAccount", "robot", None),
            &sa,
            "ns1"
        ));
        assert!(!subject_matches(
            &subject("ServiceAccount", "robot", None),
            &sa,
            "ns2"
        ));
        assert!(!subject_matches(
            &subject("ServiceAccount", "robot", None),
            &sa,
            ""
        ));
        assert!(!subject_matches(&subject("User", "robot", None), &sa, "ns1"));
    }
}
