//! Query parameters of API requests and content negotiation from the Accept header.

use std::collections::HashMap;

use super::status::ApiError;

/// Parsed query string.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A boolean flag: `true`/`1` (and bare presence) are true.
    pub fn flag(&self, key: &str) -> bool {
        self.0
            .get(key)
            .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    }

    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key} parameter {v:?}")))
            })
            .transpose()
    }

    /// `resourceVersion` as a revision (`None` when absent or empty).
    pub fn resource_version(&self) -> Result<Option<u64>, ApiError> {
        self.get("resourceVersion")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))
            })
            .transpose()
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

/// A continue token: the list snapshot revision and the last key returned.
pub fn encode_continue(revision: u64, last_key: &str) -> String {
    let raw = format!("{revision}\n{last_key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token made by [`encode_continue`].
pub fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    let raw = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (rev, key) = raw.split_once('\n').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_numbers() {
        let q = Query::parse(Some(
            "watch=1&limit=500&labelSelector=app%3Dweb&allowWatchBookmarks=true&x=",
        ));
        assert!(q.flag("watch"));
        assert!(q.flag("allowWatchBookmarks"));
        assert!(!q.flag("sendInitialEvents"));
        assert_eq!(q.number("limit").unwrap(), Some(500));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.get("x"), None);
        assert!(Query::parse(Some("limit=abc")).number("limit").is_err());
        assert_eq!(
            Query::parse(Some("resourceVersion=")).resource_version().unwrap(),
            None
        );
    }

    #[test]
    fn table_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(Some(kubectl)));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/core/pods/default/p-1");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "/core/pods/default/p-1".to_owned())
        );
        assert!(decode_continue("zz").is_err());
        assert!(decode_continue("abc").is_err());
        assert!(decode_continue(&encode_continue(1, "x")[2..]).is_err());
    }
}
