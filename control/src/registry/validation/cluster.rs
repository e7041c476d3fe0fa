//! Cluster-level kinds: Namespace finalizers, Node pod CIDRs, Lease timings.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use serde_json::Value;

use super::field::FieldError;
use super::names::{qualified_name, quote};

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateNamespace`: spec.finalizers are qualified names, and standard ones unless they carry a domain.
pub fn namespace(object: &Value) -> Vec<FieldError> {
    let Ok(ns) = serde_json::from_value::<Namespace>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for finalizer in ns.spec.and_then(|s| s.finalizers).unwrap_or_default() {
        let why = qualified_name(&finalizer);
        let bad = !why.is_empty();
        for w in why {
            errors.push(FieldError::invalid("spec.finalizers", quote(&finalizer), w));
        }
        if !bad && !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer.as_str()) {
            errors.push(FieldError::invalid(
                "spec.finalizers",
                quote(&finalizer),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errors
}

/// An IPv4 or IPv6 network in CIDR notation (`10.244.1.0/24`, `fd00::/64`).
fn cidr_ok(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    !bits.starts_with('+') && bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// `ValidateNode`: pod CIDRs parse, at most one per IP family.
pub fn node(object: &Value) -> Vec<FieldError> {
    let Ok(node) = serde_json::from_value::<Node>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let spec = node.spec.unwrap_or_default();
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty())
        && !cidr_ok(cidr)
    {
        errors.push(FieldError::invalid(
            "spec.podCIDR",
            quote(cidr),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
    let cidrs = spec.pod_cidrs.unwrap_or_default();
    for (i, cidr) in cidrs.iter().enumerate() {
        if !cidr_ok(cidr) {
            errors.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(cidr),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    let v6 = cidrs.iter().filter(|c| c.contains(':')).count();
    if cidrs.len() > 2 || (cidrs.len() == 2 && v6 != 1) {
        errors.push(FieldError::invalid(
            "spec.podCIDRs",
            super::meta::json(&cidrs),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    errors
}

/// A Node's pod CIDRs are assigned once and then fixed.
pub fn node_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let cidrs = |v: &Value| v.pointer("/spec/podCIDRs").cloned().unwrap_or(Value::Null);
    let old_cidrs = cidrs(old);
    if old_cidrs.as_array().is_some_and(|a| !a.is_empty()) && cidrs(new) != old_cidrs {
        return vec![FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        )];
    }
    Vec::new()
}

/// `ValidateLeaseSpec`.
pub fn lease(object: &Value) -> Vec<FieldError> {
    let Ok(lease) = serde_json::from_value::<Lease>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let spec = lease.spec.unwrap_or_default();
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errors.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errors.push(FieldError::invalid(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::validation::shown;

    #[test]
    fn namespace_finalizers() {
        assert!(
            namespace(
                &json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes", "example.com/x"]}})
            )
            .is_empty()
        );
        assert_eq!(
            shown(&namespace(
                &json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["custom"]}})
            )),
            [
                "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }

    #[test]
    fn node_cidrs() {
        let ok = json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00::/64"]}});
        assert!(node(&ok).is_empty());
        let bad = json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.244.1.0/33", "10.0.0.0/8"]}});
        assert_eq!(
            shown(&node(&bad)),
            [
                "spec.podCIDRs[0]: Invalid value: \"10.244.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.podCIDRs: Invalid value: [\"10.244.1.0/33\",\"10.0.0.0/8\"]: may specify no more than one CIDR for each IP family",
            ]
        );
        let old = json!({"spec": {"podCIDRs": ["10.244.1.0/24"]}});
        assert!(node_update(&old, &old).is_empty());
        assert!(node_update(&old, &json!({"spec": {}})).is_empty());
        assert_eq!(
            node_update(&json!({"spec": {"podCIDRs": ["10.244.2.0/24"]}}), &old).len(),
            1
        );
    }

    #[test]
    fn lease_timings() {
        let l =
            json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        assert_eq!(
            shown(&lease(&l)),
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }
}
