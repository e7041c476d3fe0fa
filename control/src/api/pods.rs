//! Pod subresources: `binding` (the scheduler's assignment) and `log` (proxied to the node agent; `exec` is in
//! [`super::pod_exec`]).
//!
//! Log contract with the node agent (kubelet-compatible path): the apiserver resolves the pod's node, takes
//! its `skiff.dev/kubelet-address` annotation or else its first `InternalIP` address and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, and proxies
//! `GET https://<ip>:<port>/containerLogs/<namespace>/<pod>/<container>?<query>` where the query carries
//! the client's `follow`, `previous`, `sinceSeconds`, `sinceTime`, `timestamps`, `tailLines` and
//! `limitBytes` unchanged. The agent answers `text/plain` (streaming while `follow=true`), or a
//! Kubernetes `Status` JSON error with its HTTP code.
//!
//! Security, as kube-apiserver: the apiserver authenticates to the agent with its kubelet client
//! certificate (`pki/apiserver-kubelet-client.crt`, user `kube-apiserver-kubelet-client`), which the agent
//! checks against the cluster CA and authorizes with a SubjectAccessReview (`nodes/proxy`). The agent's
//! serving certificate (self-signed by default) is NOT verified unless skiff-control runs with
//! `--kubelet-certificate-authority FILE`; then it must chain to that CA and name the node's address.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::objects;
use super::router::{ApiState, Ctx, json_response};
use super::status::ApiError;
use super::write::{apply_update, load};
use crate::registry::kinds;

/// Query parameters forwarded to the node agent.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
];

/// How the apiserver dials node agents: TLS with its kubelet client certificate.
#[derive(Clone)]
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletClient")
    }
}

/// Accepts any serving certificate (kube-apiserver without `--kubelet-certificate-authority`); the handshake
/// signatures are still checked.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeletClient {
    /// A client presenting `identity` (PEM certificate and key, if any) that verifies agents' serving
    /// certificates against `serving_ca` (PEM) when given, and accepts any otherwise.
    pub fn new(identity: Option<(&str, &str)>, serving_ca: Option<&str>) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?;
        let builder = match serving_ca {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
                }
                if roots.is_empty() {
                    return Err("the kubelet certificate authority file holds no certificate".into());
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider))),
        };
        let config = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(&e))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| err(&e))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| err(&e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// A TLS connection to the agent at `ip:port`.
    pub async fn connect(
        &self,
        ip: &str,
        port: u16,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let name = ServerName::try_from(ip.to_owned()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| e.to_string())?;
        self.tls.connect(name, tcp).await.map_err(|e| e.to_string())
    }
}

/// POST `pods/<name>/binding`: assigns an unscheduled pod to a node.
pub async fn bind(state: &Arc<ApiState>, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let binding = objects::parse_body(body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        let errors = [crate::registry::validation::FieldError::required(
            "target.name",
            "",
        )];
        return Err(ApiError::invalid(ctx.kind, ctx.name(), &errors));
    }
    let old_kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    let mut pod = objects::from_kv(&old_kv)?;
    if let Some(current) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        let mut e = ApiError::conflict(ctx.kind, ctx.name());
        e.message = format!(
            "Operation cannot be fulfilled on pods/binding {:?}: pod {} is already assigned to node {current:?}",
            ctx.name(),
            ctx.name()
        );
        return Err(e);
    }
    pod["spec"]["nodeName"] = json!(node);
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conditions.push(
        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": crate::registry::meta::now()}),
    );
    pod["status"]["conditions"] = json!(conditions);
    if let Some(m) = pod["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    // The binding writes spec and status together, so it bypasses the main resource's status rule.
    let ctx_status = Ctx {
        kind: ctx.kind,
        path: super::path::ResourcePath {
            subresource: Some("binding".into()),
            ..ctx.path.clone()
        },
        query: ctx.query.clone(),
        table: false,
        content_type: ctx.content_type.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    apply_update(state, &ctx_status, &old_kv, pod).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Annotation naming the address the agent's endpoint is reached at when that is not the node's address (a lab
/// on one machine: 127.0.0.1, as its node namespaces are not routed from the apiserver's).
pub const KUBELET_ADDRESS_ANNOTATION: &str = "skiff.dev/kubelet-address";

/// Where the node agent serving a pod's logs listens: the kubelet-address annotation, else the first InternalIP.
pub fn log_endpoint(node: &Value) -> Option<(String, u16)> {
    let annotated = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(KUBELET_ADDRESS_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok());
    let ip = match annotated {
        Some(a) => a.to_owned(),
        None => node
            .pointer("/status/addresses")
            .and_then(Value::as_array)?
            .iter()
            .find(|a| a["type"] == "InternalIP")?
            .get("address")?
            .as_str()?
            .to_owned(),
    };
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)?;
    Some((ip, u16::try_from(port).ok().filter(|p| *p != 0)?))
}

/// The container whose log is asked for: the named one, or the only one.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match requested {
        Some(name) if names.contains(&name) => Ok(name.to_owned()),
        Some(name) => Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok((*only).to_owned()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}

/// The pod a subresource request names, loaded.
pub async fn load_pod(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Value, ApiError> {
    let kv = load(state, ctx)
        .await?
        .ok_or_else(|| ApiError::not_found(ctx.kind, ctx.name()))?;
    objects::from_kv(&kv)
}

/// The agent of the node `pod` runs on: its name and endpoint (ip, port).
pub async fn pod_agent(state: &Arc<ApiState>, pod: &Value) -> Result<(String, String, u16), ApiError> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = kinds::find("", "v1", "nodes").expect("nodes are served");
    let node_kv = state
        .store
        .get(&nodes.key(None, node_name))
        .await
        .map_err(|e| ApiError::from_store(e, nodes, node_name))?;
    let node = objects::from_kv(&node_kv.ok_or_else(|| ApiError::not_found(nodes, node_name))?)?;
    let (ip, port) = log_endpoint(&node).ok_or_else(|| {
        ApiError::internal(format!(
            "node {node_name} publishes no InternalIP and kubelet port"
        ))
    })?;
    Ok((node_name.to_owned(), ip, port))
}

/// An HTTP/1.1 connection (upgrades allowed) to the agent of `node` at `ip:port`; 502 when it cannot be reached.
pub async fn dial_agent(
    state: &Arc<ApiState>,
    node: &str,
    ip: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, ApiError> {
    let unreachable = |e: &dyn std::fmt::Display| agent_unreachable(node, ip, port, e);
    let stream = tokio::time::timeout(Duration::from_secs(5), state.kubelet.connect(ip, port))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

/// 502: the agent of `node` could not be reached.
pub fn agent_unreachable(node: &str, ip: &str, port: u16, e: &dyn std::fmt::Display) -> ApiError {
    let mut err = ApiError::internal(format!(
        "error trying to reach the agent on {node} ({ip}:{port}): {e}"
    ));
    err.code = 502;
    err
}

/// GET `pods/<name>/log`: proxied to the node agent.
pub async fn log(state: &Arc<ApiState>, ctx: &Ctx) -> Result<Response, ApiError> {
    let pod = load_pod(state, ctx).await?;
    let container = pick_container(&pod, ctx.query.get("container"))?;
    let (node_name, ip, port) = pod_agent(state, &pod).await?;
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for param in LOG_PARAMS {
            if let Some(v) = ctx.query.get(param) {
                query.append_pair(param, v);
            }
        }
        query.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{container}?{}",
        ctx.namespace().unwrap_or("default"),
        ctx.name(),
        query
    );
    let mut sender = dial_agent(state, &node_name, &ip, port).await?;
    let request = hyper::Request::builder()
        .uri(path)
        .header(header::HOST, format!("{ip}:{port}"))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let upstream = sender
        .send_request(request)
        .await
        .map_err(|e| agent_unreachable(&node_name, &ip, port, &e))?;
    Ok(passthrough(upstream))
}

/// The agent's answer as the client's: status, content type and (streamed) body.
pub fn passthrough(upstream: hyper::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = upstream.into_parts();
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_node_status() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(log_endpoint(&node), Some(("10.0.0.5".to_owned(), 10250)));
        assert_eq!(log_endpoint(&json!({"status": {}})), None);
        let mut annotated = node.clone();
        annotated["metadata"] = json!({"annotations": {KUBELET_ADDRESS_ANNOTATION: "127.0.0.1"}});
        assert_eq!(log_endpoint(&annotated), Some(("127.0.0.1".to_owned(), 10250)));
        annotated["metadata"]["annotations"][KUBELET_ADDRESS_ANNOTATION] = json!("not-an-ip");
        assert_eq!(log_endpoint(&annotated), Some(("10.0.0.5".to_owned(), 10250)));
    }

    #[test]
    fn container_choice() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        assert!(pick_container(&one, Some("b")).is_err());
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = pick_container(&two, None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(pick_container(&two, Some("i")).unwrap(), "i");
    }
}
