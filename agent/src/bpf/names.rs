//! The names file (`<pin dir>/names.json`): which Service each frontend belongs to, written by the running agent
//! so `inspect` can show names without talking to the API server.
use std::{collections::BTreeMap, io, path::Path};

use skiff_common::ServiceKey;

use super::maps::fmt_service_key;

/// Frontend (as `fmt_service_key` prints it) -> service description (`namespace/name:port`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    pub services: BTreeMap<String, String>,
}

impl Names {
    pub fn insert(&mut self, k: &ServiceKey, name: String) {
        self.services.insert(fmt_service_key(k), name);
    }

    pub fn get(&self, k: &ServiceKey) -> Option<&str> {
        self.services.get(&fmt_service_key(k)).map(String::as_str)
    }

    /// Reads the file; a missing or unreadable file means "no names" (inspect still works).
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the file atomically (write to a temporary name, then rename).
    pub fn store(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
    }
}

/// Splits `namespace/name:port` into its parts (metrics labels); anything else is returned as the name.
pub fn split_service_name(s: &str) -> (String, String, String) {
    let (ns, rest) = s.split_once('/').unwrap_or(("", s));
    let (name, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
    (ns.to_string(), name.to_string(), port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = std::env::temp_dir().join(format!("skiff-agentio-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("names.json");
        let k = ServiceKey {
            addr_be: u32::from(std::net::Ipv4Addr::new(10, 96, 0, 1)).to_be(),
            port_be: 443u16.to_be(),
            proto: 6,
            scope: 0,
        };
        let mut n = Names::default();
        n.insert(&k, "default/kubernetes:https".into());
        n.store(&path).unwrap();
        let back = Names::load(&path);
        assert_eq!(back.get(&k), Some("default/kubernetes:https"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Names::load(&path), Names::default());
    }

    #[test]
    fn service_names_split_into_labels() {
        assert_eq!(
            split_service_name("kube-system/kube-dns:dns-tcp"),
            ("kube-system".into(), "kube-dns".into(), "dns-tcp".into())
        );
        assert_eq!(split_service_name("web"), ("".into(), "web".into(), "".into()));
    }
}
