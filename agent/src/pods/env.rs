//! Container environment: literal values, `fieldRef`s, and `$(VAR)` expansion as Kubernetes does it.
use k8s_openapi::api::core::v1::EnvVar;

use super::plan::FieldValues;

/// Expands `$(VAR)` references to earlier variables; `$$` escapes; unknown references stay as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a container's env list in order (later entries see earlier ones in `$(VAR)`).
pub fn resolve_env(vars: &[EnvVar], f: &FieldValues<'_>) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(vars.len());
    for v in vars {
        let value = match (&v.value, &v.value_from) {
            (Some(val), _) => expand(val, &env),
            (None, None) => String::new(),
            (None, Some(from)) => {
                if let Some(fr) = &from.field_ref {
                    field(&fr.field_path, f)
                        .ok_or_else(|| format!("env {}: unsupported fieldRef {:?}", v.name, fr.field_path))?
                } else {
                    return Err(format!(
                        "env {}: only value and fieldRef are supported (no configMapKeyRef, secretKeyRef or \
                         resourceFieldRef)",
                        v.name
                    ));
                }
            }
        };
        env.retain(|(k, _)| k != &v.name);
        env.push((v.name.clone(), value));
    }
    Ok(env)
}

fn field(path: &str, f: &FieldValues<'_>) -> Option<String> {
    Some(match path {
        "metadata.name" => f.name.to_string(),
        "metadata.namespace" => f.namespace.to_string(),
        "metadata.uid" => f.uid.to_string(),
        "spec.nodeName" => f.node_name.to_string(),
        "spec.serviceAccountName" => f.service_account.to_string(),
        "status.podIP" => f.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        "status.podIPs" => f.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_known_references_only() {
        let e = env(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)-$(B)", &e), "x1-two");
        assert_eq!(expand("$(C) $$(A) $5", &e), "$(C) $(A) $5");
        assert_eq!(expand("$(A", &e), "$(A");
    }
}
