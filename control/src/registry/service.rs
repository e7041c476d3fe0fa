//! Service strategy: defaulting, validation, ClusterIP and NodePort allocation.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::alloc::{AllocError, IpAllocator, PortAllocator};
use super::validation::{FieldError, dns1123_label, port_name};

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const AFFINITIES: &[&str] = &["None", "ClientIP"];
const DEFAULT_AFFINITY_TIMEOUT: i64 = 10800;

/// Addresses and ports a Service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub cluster_ips: Vec<Ipv4Addr>,
    pub node_ports: Vec<u16>,
    /// LoadBalancer ingress addresses (from the LB pool).
    pub lb_ips: Vec<Ipv4Addr>,
}

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

/// Fills Kubernetes' defaults into a Service (idempotent).
pub fn default(svc: &mut Value) {
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    if spec.get("type").is_none_or(Value::is_null) {
        spec["type"] = json!("ClusterIP");
    }
    if spec.get("sessionAffinity").is_none_or(Value::is_null) {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["sessionAffinity"] == "ClientIP"
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_TIMEOUT}});
    }
    let external_name = spec["type"] == "ExternalName";
    if !external_name {
        if spec.get("internalTrafficPolicy").is_none_or(Value::is_null) {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        if spec.get("ipFamilies").is_none_or(Value::is_null) {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"))
        && spec.get("externalTrafficPolicy").is_none_or(Value::is_null)
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("protocol").is_none_or(Value::is_null) {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none_or(Value::is_null)
                && let Some(p) = port.get("port").cloned()
            {
                port["targetPort"] = p;
            }
        }
    }
    if svc.get("status").is_none_or(Value::is_null) {
        svc["status"] = json!({"loadBalancer": {}});
    }
}

/// Validates a defaulted Service (everything but allocation).
pub fn validate(svc: &Value, node_port_range: (u16, u16)) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let ty = svc_type(svc);
    if !TYPES.contains(&ty) {
        errors.push(FieldError::not_supported("spec.type", format!("{ty:?}"), TYPES));
    }
    let affinity = svc
        .pointer("/spec/sessionAffinity")
        .and_then(Value::as_str)
        .unwrap_or("None");
    if !AFFINITIES.contains(&affinity) {
        errors.push(FieldError::not_supported(
            "spec.sessionAffinity",
            format!("{affinity:?}"),
            AFFINITIES,
        ));
    }
    if let Some(t) = svc
        .pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
        .and_then(Value::as_i64)
        && !(1..=86400).contains(&t)
    {
        errors.push(FieldError::invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            t,
            "must be greater than 0 and less than 86400",
        ));
    }
    let cluster_ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !cluster_ip.is_empty() && cluster_ip != "None" && cluster_ip.parse::<Ipv4Addr>().is_err() {
        errors.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            format!("{cluster_ip:?}"),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if ty == "ExternalName" {
        if svc
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            errors.push(FieldError::required("spec.externalName", ""));
        }
        return errors;
    }
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && cluster_ip != "None" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let (mut names, mut keys, mut node_ports) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (i, port) in ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errors.push(FieldError::required(at("name"), ""));
            }
        } else {
            // A Service port's name is a DNS-1123 label (`80-8080` is fine); only targetPort names are IANA names.
            if let Some(why) = dns1123_label(name) {
                errors.push(FieldError::invalid(at("name"), format!("{name:?}"), why));
            }
            if !names.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(at("name"), format!("{name:?}")));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            errors.push(FieldError::invalid(
                at("port"),
                number,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !PROTOCOLS.contains(&protocol) {
            errors.push(FieldError::not_supported(
                at("protocol"),
                format!("{protocol:?}"),
                PROTOCOLS,
            ));
        }
        if !keys.insert((number, protocol.to_owned())) {
            let value = format!("core.ServicePort{{Port:{number}, Protocol:{protocol:?}}}");
            errors.push(FieldError::duplicate(format!("spec.ports[{i}]"), value));
        }
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                let t = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&t) {
                    errors.push(FieldError::invalid(
                        at("targetPort"),
                        t,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            Some(Value::String(s)) => {
                if let Some(why) = port_name(s) {
                    errors.push(FieldError::invalid(at("targetPort"), format!("{s:?}"), why));
                }
            }
            _ => {}
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if !wants_node_ports(svc) {
                errors.push(FieldError::forbidden(
                    at("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if node_port < i64::from(node_port_range.0) || node_port > i64::from(node_port_range.1) {
                let (a, b) = node_port_range;
                errors.push(FieldError::invalid(
                    at("nodePort"),
                    node_port,
                    format!("provided port is not in the valid range. The range of valid ports is {a}-{b}"),
                ));
            } else if !node_ports.insert((node_port, protocol.to_owned())) {
                errors.push(FieldError::duplicate(at("nodePort"), node_port));
            }
        }
    }
    errors
}

/// What a Service currently holds (for release on delete and rebuild at start).
pub fn claims_of(svc: &Value) -> Claims {
    let cluster_ips = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|ips| ips.iter().filter_map(|ip| ip.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let node_ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort")?.as_u64().and_then(|n| u16::try_from(n).ok()))
                .filter(|n| *n != 0)
                .collect()
        })
        .unwrap_or_default();
    Claims {
        cluster_ips,
        node_ports,
        lb_ips: lb_ips(svc),
    }
}

/// The LoadBalancer ingress IPs written to a Service's status.
pub fn lb_ips(svc: &Value) -> Vec<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.get("ip")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Gives a LoadBalancer Service an address from the pool (keeping the one it has, honouring
/// `spec.loadBalancerIP`), or removes the address when the Service is no longer a LoadBalancer.
/// Returns the newly claimed addresses.
pub fn allocate_lb(
    svc: &mut Value,
    old: Option<&Value>,
    pool: &mut IpAllocator,
) -> Result<Vec<Ipv4Addr>, Vec<FieldError>> {
    let held = old.map(lb_ips).unwrap_or_default();
    if svc_type(svc) != "LoadBalancer" {
        if let Some(lb) = svc
            .pointer_mut("/status/loadBalancer")
            .and_then(Value::as_object_mut)
        {
            lb.remove("ingress");
        }
        return Ok(Vec::new());
    }
    let requested = svc
        .pointer("/spec/loadBalancerIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (ip, claimed) = match held.first() {
        Some(ip) if requested.is_empty() || requested == ip.to_string() => (*ip, Vec::new()),
        _ if !requested.is_empty() => {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                vec![FieldError::invalid(
                    "spec.loadBalancerIP",
                    format!("{requested:?}"),
                    "must be a valid IPv4 address",
                )]
            })?;
            pool.claim(ip).map_err(|e| {
                let why = match e {
                    AllocError::OutOfRange => format!("is not in the LoadBalancer pool {}", pool.cidr()),
                    _ => "is already allocated".to_owned(),
                };
                vec![FieldError::invalid(
                    "spec.loadBalancerIP",
                    format!("{requested:?}"),
                    why,
                )]
            })?;
            (ip, vec![ip])
        }
        _ => {
            let ip = pool.allocate().map_err(|_| {
                vec![FieldError::invalid(
                    "spec.type",
                    "\"LoadBalancer\"",
                    "the LoadBalancer address pool is exhausted",
                )]
            })?;
            (ip, vec![ip])
        }
    };
    if !svc.get("status").is_some_and(Value::is_object) {
        svc["status"] = json!({});
    }
    svc["status"]["loadBalancer"] = json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]});
    Ok(claimed)
}

/// Allocates (or claims the requested) ClusterIP and NodePorts and writes them into the Service.
/// `old` is the stored Service on update: what it holds is carried over rather than allocated again.
/// On error nothing stays claimed. On success, returns what was newly claimed.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    ips: &mut IpAllocator,
    ports: &mut PortAllocator,
) -> Result<Claims, Vec<FieldError>> {
    let mut claimed = Claims::default();
    let result = allocate_inner(svc, old, ips, ports, &mut claimed);
    if result.is_err() {
        release(&claimed, ips, ports);
    }
    result.map(|()| claimed)
}

fn allocate_inner(
    svc: &mut Value,
    old: Option<&Value>,
    ips: &mut IpAllocator,
    ports: &mut PortAllocator,
    claimed: &mut Claims,
) -> Result<(), Vec<FieldError>> {
    let ty = svc_type(svc).to_owned();
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(old_ip) = &old_ip {
        if !requested.is_empty() && requested != *old_ip {
            return Err(vec![FieldError::invalid(
                "spec.clusterIPs[0]",
                format!("{requested:?}"),
                "may not change once set",
            )]);
        }
        svc["spec"]["clusterIP"] = json!(old_ip);
        svc["spec"]["clusterIPs"] = json!([old_ip]);
    } else if ty == "ExternalName" || requested == "None" {
        if requested == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        }
    } else if requested.is_empty() {
        let ip = ips.allocate().map_err(|_| {
            vec![FieldError::invalid(
                "spec.clusterIPs",
                "[]",
                "failed to allocate a ClusterIP: the range is full",
            )]
        })?;
        claimed.cluster_ips.push(ip);
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    } else {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            vec![FieldError::invalid(
                "spec.clusterIPs[0]",
                format!("{requested:?}"),
                "must be a valid IP address",
            )]
        })?;
        ips.claim(ip).map_err(|e| {
            let why = match e {
                AllocError::OutOfRange => format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    ips.cidr()
                ),
                _ => format!("failed to allocate IP {ip}: provided IP is already allocated"),
            };
            vec![FieldError::invalid("spec.clusterIPs", format!("[]string{{\"{ip}\"}}"), why)]
        })?;
        claimed.cluster_ips.push(ip);
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    }

    let held: Vec<(i64, String, u16)> = old
        .filter(|o| wants_node_ports(o))
        .and_then(|o| o.pointer("/spec/ports").and_then(Value::as_array))
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let n = u16::try_from(p.get("nodePort")?.as_u64()?).ok()?;
                    Some((
                        p.get("port")?.as_i64()?,
                        p.get("protocol")?.as_str()?.to_owned(),
                        n,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let want = wants_node_ports(svc);
    let Some(port_list) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, port) in port_list.iter_mut().enumerate() {
        if !want {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
            continue;
        }
        let requested = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(0);
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_owned();
        let already = held.iter().any(|(_, _, n)| *n == requested && requested != 0);
        let node_port = if already {
            requested
        } else if requested == 0 {
            match held
                .iter()
                .find(|(p, proto, _)| *p == number && *proto == protocol)
            {
                Some((_, _, n)) => *n,
                None => {
                    let n = ports.allocate().map_err(|_| {
                        vec![FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            0,
                            "failed to allocate a nodePort: the range is full",
                        )]
                    })?;
                    claimed.node_ports.push(n);
                    n
                }
            }
        } else {
            ports.claim(requested).map_err(|e| {
                let why = match e {
                    AllocError::OutOfRange => {
                        let (a, b) = ports.range();
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {a}-{b}"
                        )
                    }
                    _ => "provided port is already allocated".to_owned(),
                };
                vec![FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    requested,
                    why,
                )]
            })?;
            claimed.node_ports.push(requested);
            requested
        };
        port["nodePort"] = json!(node_port);
    }
    Ok(())
}

/// Returns addresses and ports to their allocators.
pub fn release(claims: &Claims, ips: &mut IpAllocator, ports: &mut PortAllocator) {
    for ip in &claims.cluster_ips {
        ips.release(*ip);
    }
    for port in &claims.node_ports {
        ports.release(*port);
    }
}

/// What `old` held that `new` no longer holds (to release after a successful update).
pub fn dropped(old: &Value, new: &Value) -> Claims {
    let (o, n) = (claims_of(old), claims_of(new));
    Claims {
        cluster_ips: o
            .cluster_ips
            .into_iter()
            .filter(|ip| !n.cluster_ips.contains(ip))
            .collect(),
        node_ports: o
            .node_ports
            .into_iter()
            .filter(|p| !n.node_ports.contains(p))
            .collect(),
        lb_ips: o.lb_ips.into_iter().filter(|ip| !n.lb_ips.contains(ip)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancers_get_pool_addresses_in_status() {
        let mut pool = IpAllocator::new("192.168.50.0/28".parse().unwrap());
        let mut lb = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        let claimed = allocate_lb(&mut lb, None, &mut pool).unwrap();
        let ip = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(ip.starts_with("192.168.50."));
        assert_eq!(claimed, lb_ips(&lb));
        let mut again = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert!(
            allocate_lb(&mut again, Some(&lb), &mut pool).unwrap().is_empty(),
            "kept on update"
        );
        assert_eq!(again["status"]["loadBalancer"]["ingress"][0]["ip"], ip.as_str());
        let mut taken = svc(json!({"type": "LoadBalancer", "loadBalancerIP": ip}));
        assert!(allocate_lb(&mut taken, None, &mut pool).is_err());
        let mut outside = svc(json!({"type": "LoadBalancer", "loadBalancerIP": "10.0.0.1"}));
        assert!(
            allocate_lb(&mut outside, None, &mut pool).unwrap_err()[0]
                .to_string()
                .contains("not in the LoadBalancer pool")
        );
        let mut plain = lb.clone();
        plain["spec"]["type"] = json!("ClusterIP");
        allocate_lb(&mut plain, Some(&lb), &mut pool).unwrap();
        assert!(plain["status"]["loadBalancer"].get("ingress").is_none());
        assert_eq!(dropped(&lb, &plain).lb_ips.len(), 1);
    }

    fn allocators() -> (IpAllocator, PortAllocator) {
        (
            IpAllocator::new("10.96.0.0/16".parse().unwrap()),
            PortAllocator::new(30000, 32767),
        )
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn defaults_like_kubernetes() {
        let mut s = svc(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}));
        default(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(
            s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        let mut np = svc(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}));
        default(&mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn validation_names_fields() {
        let mut s = svc(
            json!({"ports": [{"port": 0}, {"port": 80, "name": "Bad_Name", "protocol": "ICMP"}], "type": "Weird"}),
        );
        default(&mut s);
        let fields: Vec<String> = validate(&s, (30000, 32767))
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert!(fields.contains(&"spec.type".to_owned()));
        assert!(fields.contains(&"spec.ports[0].name".to_owned()), "{fields:?}");
        assert!(fields.contains(&"spec.ports[0].port".to_owned()));
        assert!(fields.contains(&"spec.ports[1].name".to_owned()));
        assert!(fields.contains(&"spec.ports[1].protocol".to_owned()));
        let mut dup = svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}));
        default(&mut dup);
        let errs = validate(&dup, (30000, 32767));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.ports[1]");
        let mut headless = svc(json!({"clusterIP": "None"}));
        default(&mut headless);
        assert!(validate(&headless, (30000, 32767)).is_empty());
        let mut np = svc(json!({"ports": [{"port": 80, "nodePort": 80}]}));
        default(&mut np);
        assert_eq!(validate(&np, (30000, 32767))[0].field, "spec.ports[0].nodePort");
    }

    #[test]
    fn allocation_assigns_and_refuses_taken_values() {
        let (mut ips, mut ports) = allocators();
        let mut a = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        let claims = allocate(&mut a, None, &mut ips, &mut ports).unwrap();
        let ip = a["spec"]["clusterIP"].as_str().unwrap().to_owned();
        assert!(ip.starts_with("10.96."));
        assert_eq!(a["spec"]["clusterIPs"][0], ip.as_str());
        let node_port = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&node_port));
        assert_eq!(claims, claims_of(&a));

        let mut b = svc(json!({"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}));
        let err = allocate(&mut b, None, &mut ips, &mut ports).unwrap_err();
        assert!(
            err[0].to_string().contains("provided IP is already allocated"),
            "{}",
            err[0]
        );
        let mut c = svc(json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        let err = allocate(&mut c, None, &mut ips, &mut ports).unwrap_err();
        assert!(
            err[0]
                .to_string()
                .contains("The range of valid IPs is 10.96.0.0/16")
        );
        let mut d = svc(
            json!({"type": "NodePort", "ports": [{"port": 81, "protocol": "TCP", "nodePort": node_port}]}),
        );
        let err = allocate(&mut d, None, &mut ips, &mut ports).unwrap_err();
        assert_eq!(err[0].field, "spec.ports[0].nodePort");
        // The failed attempt released the ClusterIP it had taken: the range is untouched.
        let e_ip = allocate(&mut svc(json!({"ports": []})), None, &mut ips, &mut ports)
            .unwrap()
            .cluster_ips;
        assert_eq!(e_ip.len(), 1);
    }

    #[test]
    fn update_keeps_ip_and_node_ports() {
        let (mut ips, mut ports) = allocators();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        allocate(&mut old, None, &mut ips, &mut ports).unwrap();
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        let claimed = allocate(&mut new, Some(&old), &mut ips, &mut ports).unwrap();
        assert_eq!(claimed, Claims::default());
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(
            new["spec"]["ports"][0]["nodePort"],
            old["spec"]["ports"][0]["nodePort"]
        );
        let mut to_cluster_ip = svc(json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}));
        allocate(&mut to_cluster_ip, Some(&old), &mut ips, &mut ports).unwrap();
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(dropped(&old, &to_cluster_ip).node_ports.len(), 1);
        let mut changed = svc(json!({"clusterIP": "10.96.9.9", "ports": [{"port": 80}]}));
        assert!(allocate(&mut changed, Some(&old), &mut ips, &mut ports).is_err());
    }
}
