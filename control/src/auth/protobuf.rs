//! Protobuf bodies of the RBAC, review, ServiceAccount and TokenRequest kinds (what `kubectl create
//! role|rolebinding|serviceaccount|token` and `kubectl auth can-i|whoami` send), decoded by a field table
//! per message (numbers from Kubernetes' `generated.proto`).

use serde_json::{Map, Value};

use crate::api::protobuf::{Field, Result, entry, fields, object_meta, text};

/// How one field is turned into JSON.
enum Ty {
    Str,
    Strs,
    Int,
    Bool,
    StrMap,
    Meta,
    Msg(&'static [F]),
    Msgs(&'static [F]),
}

/// A field: number, JSON name, type.
struct F(u64, &'static str, Ty);

const POLICY_RULE: &[F] = &[
    F(1, "verbs", Ty::Strs),
    F(2, "apiGroups", Ty::Strs),
    F(3, "resources", Ty::Strs),
    F(4, "resourceNames", Ty::Strs),
    F(5, "nonResourceURLs", Ty::Strs),
];
const REQUIREMENT: &[F] = &[
    F(1, "key", Ty::Str),
    F(2, "operator", Ty::Str),
    F(3, "values", Ty::Strs),
];
const SELECTOR: &[F] = &[
    F(1, "matchLabels", Ty::StrMap),
    F(2, "matchExpressions", Ty::Msgs(REQUIREMENT)),
];
const AGGREGATION: &[F] = &[F(1, "clusterRoleSelectors", Ty::Msgs(SELECTOR))];
const SUBJECT: &[F] = &[
    F(1, "kind", Ty::Str),
    F(2, "apiGroup", Ty::Str),
    F(3, "name", Ty::Str),
    F(4, "namespace", Ty::Str),
];
const ROLE_REF: &[F] = &[
    F(1, "apiGroup", Ty::Str),
    F(2, "kind", Ty::Str),
    F(3, "name", Ty::Str),
];
const ROLE: &[F] = &[F(1, "metadata", Ty::Meta), F(2, "rules", Ty::Msgs(POLICY_RULE))];
const CLUSTER_ROLE: &[F] = &[
    F(1, "metadata", Ty::Meta),
    F(2, "rules", Ty::Msgs(POLICY_RULE)),
    F(3, "aggregationRule", Ty::Msg(AGGREGATION)),
];
const BINDING: &[F] = &[
    F(1, "metadata", Ty::Meta),
    F(2, "subjects", Ty::Msgs(SUBJECT)),
    F(3, "roleRef", Ty::Msg(ROLE_REF)),
];
const RESOURCE_ATTRIBUTES: &[F] = &[
    F(1, "namespace", Ty::Str),
    F(2, "verb", Ty::Str),
    F(3, "group", Ty::Str),
    F(4, "version", Ty::Str),
    F(5, "resource", Ty::Str),
    F(6, "subresource", Ty::Str),
    F(7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[F(1, "path", Ty::Str), F(2, "verb", Ty::Str)];
const SSAR_SPEC: &[F] = &[
    F(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    F(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SAR_SPEC: &[F] = &[
    F(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    F(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
    F(3, "user", Ty::Str),
    F(4, "groups", Ty::Strs),
    F(6, "uid", Ty::Str),
];
const RULES_SPEC: &[F] = &[F(1, "namespace", Ty::Str)];
const BOUND_OBJECT: &[F] = &[
    F(1, "kind", Ty::Str),
    F(2, "apiVersion", Ty::Str),
    F(3, "name", Ty::Str),
    F(4, "uid", Ty::Str),
];
const TOKEN_REQUEST_SPEC: &[F] = &[
    F(1, "audiences", Ty::Strs),
    F(3, "boundObjectRef", Ty::Msg(BOUND_OBJECT)),
    F(4, "expirationSeconds", Ty::Int),
];
const TOKEN_REVIEW_SPEC: &[F] = &[F(1, "token", Ty::Str), F(2, "audiences", Ty::Strs)];

const fn with_spec(spec: &'static [F]) -> [F; 2] {
    [F(1, "metadata", Ty::Meta), F(2, "spec", Ty::Msg(spec))]
}
const SSAR: [F; 2] = with_spec(SSAR_SPEC);
const SAR: [F; 2] = with_spec(SAR_SPEC);
const RULES_REVIEW: [F; 2] = with_spec(RULES_SPEC);
const TOKEN_REQUEST: [F; 2] = with_spec(TOKEN_REQUEST_SPEC);
const TOKEN_REVIEW: [F; 2] = with_spec(TOKEN_REVIEW_SPEC);
const METADATA_ONLY: &[F] = &[F(1, "metadata", Ty::Meta)];
const SERVICE_ACCOUNT: &[F] = &[
    F(1, "metadata", Ty::Meta),
    F(4, "automountServiceAccountToken", Ty::Bool),
];

fn message(bytes: &[u8], schema: &[F]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (n, field) in fields(bytes)? {
        let Some(F(_, name, ty)) = schema.iter().find(|f| f.0 == n) else {
            continue;
        };
        let name = (*name).to_owned();
        match (ty, field) {
            (Ty::Str, Field::Bytes(b)) if !b.is_empty() => drop(out.insert(name, text(b)?.into())),
            (Ty::Int, Field::Varint(v)) => drop(out.insert(name, (v.cast_signed()).into())),
            (Ty::Bool, Field::Varint(v)) => drop(out.insert(name, (v != 0).into())),
            (Ty::Meta, Field::Bytes(b)) => drop(out.insert(name, object_meta(b)?)),
            (Ty::Msg(inner), Field::Bytes(b)) => drop(out.insert(name, Value::Object(message(b, inner)?))),
            (Ty::Strs, Field::Bytes(b)) => push(&mut out, name, text(b)?.into()),
            (Ty::Msgs(inner), Field::Bytes(b)) => push(&mut out, name, Value::Object(message(b, inner)?)),
            (Ty::StrMap, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                let map = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Some(map) = map.as_object_mut() {
                    map.insert(k, text(v)?.into());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: String, value: Value) {
    if let Some(list) = out
        .entry(name)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
    {
        list.push(value);
    }
}

/// Decodes `raw` of `kind` into `obj`; `false` when the kind is not one of these.
pub fn decode(api_version: &str, kind: &str, raw: &[u8], obj: &mut Map<String, Value>) -> Result<bool> {
    let schema: &[F] = match (api_version, kind) {
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => &SSAR,
        ("authorization.k8s.io/v1", "SubjectAccessReview") => &SAR,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => &RULES_REVIEW,
        ("authentication.k8s.io/v1", "TokenRequest") => &TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "TokenReview") => &TOKEN_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => METADATA_ONLY,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => return Ok(false),
    };
    obj.extend(message(raw, schema)?);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Protobuf encoding helpers for the test: a length-delimited field and a varint field.
    fn bytes(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![
            u8::try_from(n << 3 | 2).unwrap(),
            u8::try_from(payload.len()).unwrap(),
        ];
        out.extend_from_slice(payload);
        out
    }

    fn varint(n: u64, v: u8) -> Vec<u8> {
        vec![u8::try_from(n << 3).unwrap(), v]
    }

    #[test]
    fn role_binding_and_access_review() {
        let subject = [bytes(1, b"User"), bytes(3, b"jane")].concat();
        let role_ref = [
            bytes(1, b"rbac.authorization.k8s.io"),
            bytes(2, b"ClusterRole"),
            bytes(3, b"view"),
        ]
        .concat();
        let raw = [
            bytes(1, &bytes(1, b"jane-view")),
            bytes(2, &subject),
            bytes(3, &role_ref),
        ]
        .concat();
        let mut obj = Map::new();
        assert!(decode("rbac.authorization.k8s.io/v1", "RoleBinding", &raw, &mut obj).unwrap());
        assert_eq!(
            Value::Object(obj),
            json!({"metadata": {"name": "jane-view"}, "subjects": [{"kind": "User", "name": "jane"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}})
        );
        let attrs = [
            bytes(1, b"default"),
            bytes(2, b"create"),
            bytes(3, b""),
            bytes(5, b"pods"),
        ]
        .concat();
        let raw = [bytes(1, b""), bytes(2, &bytes(1, &attrs))].concat();
        let mut obj = Map::new();
        assert!(
            decode(
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
                &raw,
                &mut obj
            )
            .unwrap()
        );
        assert_eq!(
            obj["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}})
        );
        let raw = [bytes(2, &[bytes(1, b"api"), varint(4, 100)].concat())].concat();
        let mut obj = Map::new();
        assert!(decode("authentication.k8s.io/v1", "TokenRequest", &raw, &mut obj).unwrap());
        assert_eq!(
            obj["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 100})
        );
        assert!(!decode("v1", "Pod", &[], &mut Map::new()).unwrap());
    }
}
