//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into JSON objects.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` envelope {typeMeta{apiVersion, kind}, raw}; `raw`
//! is the object's own message. kubectl's generator subcommands (`create namespace|configmap|secret|deployment`) send
//! these; the kinds they produce are decoded here field by field (field numbers from Kubernetes'
//! `generated.proto`), other kinds are refused so the caller can answer 415.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("protobuf body does not start with the k8s magic")]
    NoMagic,
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies of kind {0} are not supported; send JSON")]
    UnsupportedKind(String),
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// One field of a protobuf message: its number and either a varint or a length-delimited payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Splits a message into its fields, in wire order.
pub(crate) fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        let field = match tag & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| Error::Malformed("length"))?;
                if len > buf.len() {
                    return Err(Error::Malformed("length beyond the end"));
                }
                let (data, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(data)
            }
            1 => {
                buf = buf.get(8..).ok_or(Error::Malformed("fixed64"))?;
                continue;
            }
            5 => {
                buf = buf.get(4..).ok_or(Error::Malformed("fixed32"))?;
                continue;
            }
            _ => return Err(Error::Malformed("wire type")),
        };
        out.push((tag >> 3, field));
    }
    Ok(out)
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or(Error::Malformed("truncated varint"))?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Malformed("varint too long"))
}

pub(crate) fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed("string is not UTF-8"))
}

/// A `map<string, V>` entry {key = 1, value = 2}.
pub(crate) fn entry(bytes: &[u8]) -> Result<(String, &[u8])> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) => value = b,
            _ => {}
        }
    }
    Ok((key, value))
}

fn string_map(map: &mut BTreeMap<String, String>, bytes: &[u8]) -> Result<()> {
    let (k, v) = entry(bytes)?;
    map.insert(k, text(v)?);
    Ok(())
}

fn bytes_map(map: &mut BTreeMap<String, String>, bytes: &[u8]) -> Result<()> {
    let (k, v) = entry(bytes)?;
    map.insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    Ok(())
}

/// ObjectMeta: the fields clients set on creation (name, generateName, namespace, labels, annotations,
/// finalizers). Server-owned fields are ignored, as the server sets them anyway.
pub(crate) fn object_meta(bytes: &[u8]) -> Result<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => drop(meta.insert("name".into(), text(b)?.into())),
            2 => drop(meta.insert("generateName".into(), text(b)?.into())),
            3 => drop(meta.insert("namespace".into(), text(b)?.into())),
            6 => drop(meta.insert("resourceVersion".into(), text(b)?.into())),
            11 => string_map(&mut labels, b)?,
            12 => string_map(&mut annotations, b)?,
            14 => finalizers.push(Value::String(text(b)?)),
            _ => {}
        }
    }
    meta.retain(|_, v| v.as_str() != Some(""));
    if !labels.is_empty() {
        meta.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), json!(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), finalizers.into());
    }
    Ok(Value::Object(meta))
}

fn namespace(raw: &[u8], obj: &mut Map<String, Value>) -> Result<()> {
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => drop(obj.insert("metadata".into(), object_meta(b)?)),
            (2, Field::Bytes(b)) => {
                let mut finalizers = Vec::new();
                for (n, f) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        finalizers.push(Value::String(text(s)?));
                    }
                }
                if !finalizers.is_empty() {
                    obj.insert("spec".into(), json!({"finalizers": finalizers}));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn config_map(raw: &[u8], obj: &mut Map<String, Value>) -> Result<()> {
    let (mut data, mut binary) = (BTreeMap::new(), BTreeMap::new());
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => drop(obj.insert("metadata".into(), object_meta(b)?)),
            (2, Field::Bytes(b)) => string_map(&mut data, b)?,
            (3, Field::Bytes(b)) => bytes_map(&mut binary, b)?,
            (4, Field::Varint(v)) => drop(obj.insert("immutable".into(), (v != 0).into())),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), json!(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), json!(binary));
    }
    Ok(())
}

fn secret(raw: &[u8], obj: &mut Map<String, Value>) -> Result<()> {
    let (mut data, mut string_data) = (BTreeMap::new(), BTreeMap::new());
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => drop(obj.insert("metadata".into(), object_meta(b)?)),
            (2, Field::Bytes(b)) => bytes_map(&mut data, b)?,
            // An empty type means "not set" (the server defaults it to Opaque).
            (3, Field::Bytes(b)) if !b.is_empty() => drop(obj.insert("type".into(), text(b)?.into())),
            (4, Field::Bytes(b)) => string_map(&mut string_data, b)?,
            (5, Field::Varint(v)) => drop(obj.insert("immutable".into(), (v != 0).into())),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), json!(data));
    }
    if !string_data.is_empty() {
        obj.insert("stringData".into(), json!(string_data));
    }
    Ok(())
}

/// LabelSelector {matchLabels = 1} (matchExpressions are not produced by kubectl's generators).
fn label_selector(bytes: &[u8]) -> Result<Value> {
    let mut labels = BTreeMap::new();
    for (n, f) in fields(bytes)? {
        if let (1, Field::Bytes(b)) = (n, f) {
            string_map(&mut labels, b)?;
        }
    }
    Ok(json!({"matchLabels": labels}))
}

/// Container {name = 1, image = 2, command = 3, args = 4, ports = 6 {containerPort = 3, protocol = 4}}.
fn container(bytes: &[u8]) -> Result<Value> {
    let mut c = Map::new();
    let (mut command, mut args, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => drop(c.insert("name".into(), text(b)?.into())),
            2 => drop(c.insert("image".into(), text(b)?.into())),
            3 => command.push(Value::String(text(b)?)),
            4 => args.push(Value::String(text(b)?)),
            6 => {
                let mut port = Map::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (3, Field::Varint(v)) => drop(port.insert("containerPort".into(), v.into())),
                        (4, Field::Bytes(p)) if !p.is_empty() => {
                            drop(port.insert("protocol".into(), text(p)?.into()))
                        }
                        _ => {}
                    }
                }
                ports.push(Value::Object(port));
            }
            _ => {}
        }
    }
    for (name, list) in [("command", command), ("args", args), ("ports", ports)] {
        if !list.is_empty() {
            c.insert(name.into(), list.into());
        }
    }
    Ok(Value::Object(c))
}

/// Deployment {metadata = 1, spec = 2 {replicas = 1, selector = 2, template = 3 {metadata = 1, spec = 2
/// {containers = 2}}}}: what `kubectl create deployment` sends.
fn deployment(raw: &[u8], obj: &mut Map<String, Value>) -> Result<()> {
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => drop(obj.insert("metadata".into(), object_meta(b)?)),
            (2, Field::Bytes(b)) => {
                let mut spec = Map::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Varint(v)) => drop(spec.insert("replicas".into(), v.into())),
                        (2, Field::Bytes(sel)) => drop(spec.insert("selector".into(), label_selector(sel)?)),
                        (3, Field::Bytes(template)) => {
                            let mut t = Map::new();
                            for (n, f) in fields(template)? {
                                match (n, f) {
                                    (1, Field::Bytes(m)) => {
                                        drop(t.insert("metadata".into(), object_meta(m)?))
                                    }
                                    (2, Field::Bytes(pod)) => {
                                        let mut containers = Vec::new();
                                        for (n, f) in fields(pod)? {
                                            if let (2, Field::Bytes(c)) = (n, f) {
                                                containers.push(container(c)?);
                                            }
                                        }
                                        t.insert("spec".into(), json!({"containers": containers}));
                                    }
                                    _ => {}
                                }
                            }
                            spec.insert("template".into(), Value::Object(t));
                        }
                        _ => {}
                    }
                }
                obj.insert("spec".into(), Value::Object(spec));
            }
            _ => {}
        }
    }
    Ok(())
}

/// IntOrString {type = 1 (0 int, 1 string), intVal = 2, strVal = 3}.
fn int_or_string(bytes: &[u8]) -> Result<Value> {
    let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Varint(v)) => is_string = v == 1,
            // int32 on the wire: a negative value arrives sign-extended to 64 bits.
            (2, Field::Varint(v)) => int = i64::from(v as i32),
            (3, Field::Bytes(b)) => string = text(b)?,
            _ => {}
        }
    }
    Ok(if is_string { string.into() } else { int.into() })
}

/// ServicePort {name = 1, protocol = 2, port = 3, targetPort = 4, nodePort = 5, appProtocol = 6}.
fn service_port(bytes: &[u8]) -> Result<Value> {
    let mut port = Map::new();
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) if !b.is_empty() => drop(port.insert("name".into(), text(b)?.into())),
            (2, Field::Bytes(b)) if !b.is_empty() => drop(port.insert("protocol".into(), text(b)?.into())),
            (3, Field::Varint(v)) => drop(port.insert("port".into(), v.into())),
            (4, Field::Bytes(b)) => drop(port.insert("targetPort".into(), int_or_string(b)?)),
            (5, Field::Varint(v)) if v != 0 => drop(port.insert("nodePort".into(), v.into())),
            (6, Field::Bytes(b)) => drop(port.insert("appProtocol".into(), text(b)?.into())),
            _ => {}
        }
    }
    Ok(Value::Object(port))
}

/// Service {metadata = 1, spec = 2 {ports = 1, selector = 2, clusterIP = 3, type = 4, externalIPs = 5,
/// externalName = 10}}: what `kubectl create service clusterip|nodeport|loadbalancer|externalname` sends.
fn service(raw: &[u8], obj: &mut Map<String, Value>) -> Result<()> {
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => drop(obj.insert("metadata".into(), object_meta(b)?)),
            (2, Field::Bytes(b)) => {
                let mut spec = Map::new();
                let (mut ports, mut selector, mut external_ips) = (Vec::new(), BTreeMap::new(), Vec::new());
                for (n, f) in fields(b)? {
                    let Field::Bytes(b) = f else { continue };
                    match n {
                        1 => ports.push(service_port(b)?),
                        2 => string_map(&mut selector, b)?,
                        3 if !b.is_empty() => drop(spec.insert("clusterIP".into(), text(b)?.into())),
                        4 if !b.is_empty() => drop(spec.insert("type".into(), text(b)?.into())),
                        5 => external_ips.push(Value::String(text(b)?)),
                        10 if !b.is_empty() => drop(spec.insert("externalName".into(), text(b)?.into())),
                        _ => {}
                    }
                }
                if !ports.is_empty() {
                    spec.insert("ports".into(), ports.into());
                }
                if !selector.is_empty() {
                    spec.insert("selector".into(), json!(selector));
                }
                if !external_ips.is_empty() {
                    spec.insert("externalIPs".into(), external_ips.into());
                }
                obj.insert("spec".into(), Value::Object(spec));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a protobuf request body (magic + `runtime.Unknown`) into the equivalent JSON object.
pub fn to_json(body: &[u8]) -> Result<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or(Error::NoMagic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), api_version.clone().into());
    obj.insert("kind".into(), kind.clone().into());
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw, &mut obj)?,
        ("v1", "ConfigMap") => config_map(raw, &mut obj)?,
        ("v1", "Secret") => secret(raw, &mut obj)?,
        ("apps/v1", "Deployment") => deployment(raw, &mut obj)?,
        ("v1", "Service") => service(raw, &mut obj)?,
        _ => {
            if !crate::auth::protobuf::decode(&api_version, &kind, raw, &mut obj)? {
                return Err(Error::UnsupportedKind(format!("{api_version}/{kind}")));
            }
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u64, wire: u8) -> u8 {
        u8::try_from(n << 3).unwrap() | wire
    }

    fn bytes_field(n: u64, data: &[u8]) -> Vec<u8> {
        let mut out = vec![tag(n, 2), u8::try_from(data.len()).unwrap()];
        out.extend_from_slice(data);
        out
    }

    fn map_entry(n: u64, k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = bytes_field(1, k.as_bytes());
        e.extend(bytes_field(2, v));
        bytes_field(n, &e)
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = bytes_field(1, api_version.as_bytes());
        type_meta.extend(bytes_field(2, kind.as_bytes()));
        let mut out = MAGIC.to_vec();
        out.extend(bytes_field(1, &type_meta));
        out.extend(bytes_field(2, raw));
        out.extend(bytes_field(4, b""));
        out
    }

    #[test]
    fn config_map_with_labels_data_and_binary_data() {
        let mut meta = bytes_field(1, b"c");
        meta.extend(bytes_field(3, b"default"));
        meta.extend(map_entry(11, "app", b"web"));
        let mut raw = bytes_field(1, &meta);
        raw.extend(map_entry(2, "a", b"b"));
        raw.extend(map_entry(3, "bin", &[0, 255]));
        raw.extend([tag(4, 0), 1]);
        let body = envelope("v1", "ConfigMap", &raw);
        assert_eq!(
            to_json(&body).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default", "labels": {"app": "web"}},
                "data": {"a": "b"}, "binaryData": {"bin": "AP8="}, "immutable": true
            })
        );
    }

    #[test]
    fn service_with_ports_selector_and_type() {
        let meta = bytes_field(1, b"s1");
        let mut target = vec![tag(1, 0), 0, tag(2, 0)];
        target.extend([0x90, 0x3f]); // 8080
        let mut port = bytes_field(1, b"80-8080");
        port.extend(bytes_field(2, b"TCP"));
        port.extend([tag(3, 0), 80]);
        port.extend(bytes_field(4, &target));
        port.extend([tag(5, 0), 0xe2, 0xea, 0x01]); // 30050
        let mut spec = bytes_field(1, &port);
        spec.extend(map_entry(2, "app", b"s1"));
        spec.extend(bytes_field(4, b"NodePort"));
        let mut raw = bytes_field(1, &meta);
        raw.extend(bytes_field(2, &spec));
        raw.extend(bytes_field(3, b""));
        assert_eq!(
            to_json(&envelope("v1", "Service", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s1"},
                "spec": {
                    "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30050}],
                    "selector": {"app": "s1"}, "type": "NodePort"
                }
            })
        );
        let mut named = vec![tag(1, 0), 1];
        named.extend(bytes_field(3, b"http"));
        assert_eq!(int_or_string(&named).unwrap(), json!("http"));
    }

    #[test]
    fn namespace_with_empty_spec_and_status() {
        let mut raw = bytes_field(1, &bytes_field(1, b"x"));
        raw.extend(bytes_field(2, b""));
        raw.extend(bytes_field(3, b""));
        assert_eq!(
            to_json(&envelope("v1", "Namespace", &raw)).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        );
    }

    #[test]
    fn secret_data_is_base64_in_json() {
        let mut raw = bytes_field(1, &bytes_field(1, b"s"));
        raw.extend(map_entry(2, "k", b"v"));
        raw.extend(bytes_field(3, b"Opaque"));
        let got = to_json(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(got["data"], json!({"k": "dg=="}));
        assert_eq!(got["type"], "Opaque");
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        assert_eq!(to_json(b"{}"), Err(Error::NoMagic));
        assert!(matches!(to_json(b"k8s\0\x0a\x7f"), Err(Error::Malformed(_))));
        assert!(matches!(to_json(b"k8s\0\x08\xff\xff"), Err(Error::Malformed(_))));
        assert_eq!(
            to_json(&envelope("apps/v1", "DaemonSet", b"")),
            Err(Error::UnsupportedKind("apps/v1/DaemonSet".into()))
        );
    }
}
