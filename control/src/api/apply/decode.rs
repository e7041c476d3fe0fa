//! Body decoding that reports duplicate fields (JSON and YAML), for `fieldValidation`.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A decoded body and the paths of fields it set more than once (`spec.replicas`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub value: Value,
    pub duplicates: Vec<String>,
}

/// Decodes JSON, keeping the last of duplicate fields (like kube) and reporting them.
pub fn json(body: &[u8]) -> Result<Decoded, String> {
    let dups = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Seed {
        path: String::new(),
        dups: &dups,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(Decoded {
        value,
        duplicates: dups.into_inner(),
    })
}

/// Decodes one YAML document (JSON is YAML too), reporting duplicate fields.
pub fn yaml(body: &[u8]) -> Result<Decoded, String> {
    let dups = RefCell::new(Vec::new());
    let de = serde_yaml::Deserializer::from_slice(body);
    let value = Seed {
        path: String::new(),
        dups: &dups,
    }
    .deserialize(de)
    .map_err(|e| e.to_string())?;
    Ok(Decoded {
        value,
        duplicates: dups.into_inner(),
    })
}

struct Seed<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed {
            path: format!("{}[{}]", self.path, items.len()),
            dups: self.dups,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let value = map.next_value_seed(Seed {
                path: path.clone(),
                dups: self.dups,
            })?;
            if out.insert(key, value).is_some() {
                self.dups.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Map keys as strings (YAML allows numbers and booleans as keys).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom("null is not a valid map key"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_duplicates_are_reported_with_paths() {
        let d = json(br#"{"spec": {"replicas": 1, "replicas": 2, "ports": [{"a": 1, "a": 1}]}}"#).unwrap();
        assert_eq!(d.value, json!({"spec": {"replicas": 2, "ports": [{"a": 1}]}}));
        assert_eq!(
            d.duplicates,
            vec!["spec.replicas".to_owned(), "spec.ports[0].a".to_owned()]
        );
        assert!(json(b"{} x").is_err());
        assert!(json(br#"{"a": 1}"#).unwrap().duplicates.is_empty());
    }

    #[test]
    fn yaml_decodes_and_reports_duplicates() {
        let d = yaml(b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: x\n  a: y\n  1: z\n").unwrap();
        assert_eq!(d.value["data"], json!({"a": "y", "1": "z"}));
        assert_eq!(d.duplicates, vec!["data.a".to_owned()]);
        assert_eq!(
            yaml(br#"{"a": [1, true, null]}"#).unwrap().value,
            json!({"a": [1, true, null]})
        );
    }
}
