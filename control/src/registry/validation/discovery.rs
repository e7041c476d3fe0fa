//! discovery.k8s.io/v1 EndpointSlice: address type, addresses valid for it, ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::field::FieldError;
use super::names::{dns1123_label, dns1123_subdomain, port_number, qualified_name, quote};

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 100;

/// `IsFullyQualifiedDomainName`.
fn fqdn(address: &str, path: &str) -> Option<FieldError> {
    if address.is_empty() {
        return Some(FieldError::required(path, ""));
    }
    let name = address.strip_suffix('.').unwrap_or(address);
    if let Some(why) = dns1123_subdomain(name) {
        return Some(FieldError::invalid(path, quote(name), why));
    }
    if name.split('.').count() < 2 {
        return Some(FieldError::invalid(
            path,
            quote(name),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    name.split('.')
        .find_map(|label| dns1123_label(label).map(|why| FieldError::invalid(path, quote(label), why)))
}

fn address(address_type: &str, address: &str, path: &str) -> Option<FieldError> {
    match address_type {
        "IPv4" => address
            .parse::<Ipv4Addr>()
            .is_err()
            .then(|| FieldError::invalid(path, quote(address), "must be a valid IPv4 address")),
        "IPv6" => address
            .parse::<Ipv6Addr>()
            .is_err()
            .then(|| FieldError::invalid(path, quote(address), "must be a valid IPv6 address")),
        "FQDN" => fqdn(address, path),
        _ => None,
    }
}

/// `ValidateEndpointSlice` (kube also refuses loopback and link-local addresses; this cluster's own apiserver
/// endpoint is a loopback address in the lab, so those are accepted here).
pub fn endpoint_slice(object: &Value) -> Vec<FieldError> {
    let Ok(slice) = serde_json::from_value::<EndpointSlice>(object.clone()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let address_type = slice.address_type.as_str();
    if slice.endpoints.len() > MAX_ENDPOINTS {
        errors.push(FieldError::too_many(
            "endpoints",
            slice.endpoints.len(),
            MAX_ENDPOINTS,
        ));
    } else {
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            let addresses_at = format!("{at}.addresses");
            if endpoint.addresses.is_empty() {
                errors.push(FieldError::required(
                    &addresses_at,
                    "must contain at least 1 address",
                ));
            } else if endpoint.addresses.len() > MAX_ADDRESSES {
                errors.push(FieldError::too_many(
                    &addresses_at,
                    endpoint.addresses.len(),
                    MAX_ADDRESSES,
                ));
            }
            for (j, a) in endpoint.addresses.iter().enumerate() {
                errors.extend(address(address_type, a, &format!("{addresses_at}[{j}]")));
            }
            if let Some(node) = endpoint.node_name.as_deref()
                && let Some(why) = dns1123_subdomain(node)
            {
                errors.push(FieldError::invalid(format!("{at}.nodeName"), quote(node), why));
            }
            if let Some(host) = endpoint.hostname.as_deref().filter(|h| !h.is_empty())
                && let Some(why) = dns1123_label(host)
            {
                errors.push(FieldError::invalid(format!("{at}.hostname"), quote(host), why));
            }
        }
    }
    if address_type.is_empty() {
        errors.push(FieldError::required("addressType", ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errors.push(FieldError::not_supported(
            "addressType",
            quote(address_type),
            ADDRESS_TYPES,
        ));
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        errors.push(FieldError::too_many("ports", ports.len(), MAX_PORTS));
        return errors;
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("ports[{i}]");
        let name = port.name.as_deref().unwrap_or_default();
        if !name.is_empty()
            && let Some(why) = dns1123_label(name)
        {
            errors.push(FieldError::invalid(format!("{at}.name"), quote(name), why));
        }
        if !names.insert(name.to_owned()) {
            errors.push(FieldError::duplicate(format!("{at}.name"), quote(name)));
        }
        // A missing protocol is TCP after kube's defaulting.
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !PROTOCOLS.contains(&protocol) {
            errors.push(FieldError::not_supported(
                format!("{at}.protocol"),
                quote(protocol),
                PROTOCOLS,
            ));
        }
        if let Some(number) = port.port
            && let Some(why) = port_number(number.into())
        {
            errors.push(FieldError::invalid(format!("{at}.port"), number, why));
        }
        if let Some(app) = port.app_protocol.as_deref() {
            for why in qualified_name(app) {
                errors.push(FieldError::invalid(format!("{at}.appProtocol"), quote(app), why));
            }
        }
    }
    errors
}

/// An EndpointSlice's addressType cannot change.
pub fn endpoint_slice_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (new.get("addressType"), old.get("addressType"));
    if n == o {
        return Vec::new();
    }
    let shown = n.and_then(Value::as_str).unwrap_or_default();
    vec![FieldError::invalid(
        "addressType",
        quote(shown),
        "field is immutable",
    )]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::validation::shown;

    #[test]
    fn valid_slices_pass() {
        let s = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "node-1", "conditions": {"ready": true}},
                          {"addresses": ["127.0.0.1"]}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "", "port": 53, "protocol": "UDP"}]});
        assert_eq!(shown(&endpoint_slice(&s)), Vec::<String>::new());
        let s = json!({"metadata": {"name": "s"}, "addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com."]}]});
        assert_eq!(shown(&endpoint_slice(&s)), Vec::<String>::new());
    }

    #[test]
    fn addresses_must_fit_the_type() {
        let s = json!({"metadata": {"name": "s"}, "addressType": "IPv6",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": []}]});
        assert_eq!(
            shown(&endpoint_slice(&s)),
            [
                "endpoints[0].addresses[0]: Invalid value: \"10.0.0.1\": must be a valid IPv6 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address",
            ]
        );
        let s = json!({"metadata": {"name": "s"}, "addressType": "FQDN", "endpoints": [{"addresses": ["localhost"]}]});
        assert_eq!(
            shown(&endpoint_slice(&s)),
            [
                "endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"
            ]
        );
        let s = json!({"metadata": {"name": "s"}, "addressType": "IP", "endpoints": []});
        assert_eq!(
            shown(&endpoint_slice(&s)),
            ["addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
        );
    }

    #[test]
    fn ports_and_immutable_type() {
        let s = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [],
            "ports": [{"name": "Web", "port": 0}, {"port": 80, "protocol": "ICMP"}, {"port": 81}]});
        let errors = shown(&endpoint_slice(&s));
        assert!(errors[0].starts_with("ports[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"));
        assert_eq!(
            errors[1],
            "ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            errors[2],
            "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(errors[3], "ports[2].name: Duplicate value: \"\"");
        let old = json!({"addressType": "IPv4"});
        assert_eq!(
            shown(&endpoint_slice_update(&json!({"addressType": "IPv6"}), &old)),
            ["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }
}
