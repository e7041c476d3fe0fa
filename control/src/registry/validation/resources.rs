//! Resource quantities and container resource requirements (requests may not exceed limits).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::field::FieldError;
use super::names::quote;
use crate::quantity::value as parse_quantity;

const STANDARD: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// Requests of these may be below their limit; other (extended) resources must request exactly their limit.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn quantities(
    map: Option<&BTreeMap<String, Quantity>>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, quantity) in map.into_iter().flatten() {
        let at = format!("{path}[{name}]");
        if !name.contains('/') && !STANDARD.contains(&name.as_str()) && !name.starts_with("hugepages-") {
            errors.push(FieldError::invalid(
                &at,
                quote(name),
                "must be a standard resource for containers",
            ));
        }
        match parse_quantity(&quantity.0) {
            None => errors.push(FieldError::invalid(
                &at,
                quote(&quantity.0),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
            Some(v) if v < 0.0 => errors.push(FieldError::invalid(
                &at,
                quote(&quantity.0),
                "must be greater than or equal to 0",
            )),
            Some(v) => {
                out.insert(name.clone(), v);
            }
        }
    }
    out
}

/// `ValidateResourceRequirements` for one container at `path` (`spec.containers[0].resources`).
pub fn requirements(resources: Option<&ResourceRequirements>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(resources) = resources else {
        return errors;
    };
    let limits = quantities(resources.limits.as_ref(), &format!("{path}.limits"), &mut errors);
    let requests = quantities(
        resources.requests.as_ref(),
        &format!("{path}.requests"),
        &mut errors,
    );
    for (name, request) in &requests {
        let Some(limit) = limits.get(name) else { continue };
        let shown = |map: Option<&BTreeMap<String, Quantity>>| {
            map.and_then(|m| m.get(name))
                .map(|q| q.0.clone())
                .unwrap_or_default()
        };
        let (request_text, limit_text) = (
            shown(resources.requests.as_ref()),
            shown(resources.limits.as_ref()),
        );
        let at = format!("{path}.requests");
        if !overcommit_allowed(name) && request != limit {
            errors.push(FieldError::invalid(
                at,
                quote(&request_text),
                format!("must be equal to {name} limit of {limit_text}"),
            ));
        } else if request > limit {
            errors.push(FieldError::invalid(
                at,
                quote(&request_text),
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_may_not_exceed_limits() {
        let r: ResourceRequirements = serde_json::from_value(json!({
            "limits": {"cpu": "1", "memory": "128Mi", "example.com/gpu": "2"},
            "requests": {"cpu": "1500m", "memory": "64Mi", "example.com/gpu": "1"}
        }))
        .unwrap();
        let shown: Vec<String> = requirements(Some(&r), "spec.containers[0].resources")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "spec.containers[0].resources.requests: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1",
                "spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to example.com/gpu limit of 2",
            ]
        );
        let r: ResourceRequirements =
            serde_json::from_value(json!({"limits": {"cpu": "-1", "gpu": "1"}})).unwrap();
        let shown: Vec<String> = requirements(Some(&r), "r")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "r.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "r.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            ]
        );
    }
}
