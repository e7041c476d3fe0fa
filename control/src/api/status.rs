//! API errors rendered as Kubernetes `Status` objects with the matching HTTP code and reason.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::kinds::Kind;
use crate::registry::validation::FieldError;
use crate::store;

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(kind: &Kind, name: &str) -> Value {
    json!({"name": name, "group": kind.group, "kind": kind.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(kind: &Kind, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{} {name:?} not found", qualified(kind)));
        e.details = Some(details(kind, name));
        e
    }

    /// 404 for a URL that addresses nothing we serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(kind)),
        );
        e.details = Some(details(kind, name));
        e
    }

    pub fn conflict(kind: &Kind, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your \
             changes to the latest version and try again",
            qualified(kind)
        );
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(details(kind, name));
        e
    }

    /// 422 naming every invalid field.
    pub fn invalid(kind: &Kind, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let message = match list.as_slice() {
            [one] => format!("{} {name:?} is invalid: {one}", kind.kind),
            many => format!("{} {name:?} is invalid: [{}]", kind.kind, many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({"name": name, "group": kind.group, "kind": kind.kind, "causes": causes}));
        e
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {what}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// 410: the requested resourceVersion is older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Maps a store error for an object of `kind` named `name`.
    pub fn from_store(err: store::Error, kind: &Kind, name: &str) -> Self {
        match err {
            store::Error::AlreadyExists(_) => Self::already_exists(kind, name),
            store::Error::NotFound(_) => Self::not_found(kind, name),
            store::Error::Conflict { .. } => Self::conflict(kind, name),
            store::Error::Compacted { requested, compacted } => {
                Self::expired(format!("too old resource version: {requested} ({compacted})"))
            }
            store::Error::FutureRevision { requested, current } => {
                let mut e = Self::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {requested}, current: {current}"),
                );
                e.details = Some(
                    json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                );
                e
            }
            store::Error::Backend(msg) => Self::internal(msg),
            store::Error::Unavailable(msg) => {
                let mut e = Self::new(
                    503,
                    "ServiceUnavailable",
                    format!("storage is unavailable: {msg}"),
                );
                e.details = Some(json!({"retryAfterSeconds": 1}));
                e
            }
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// `pods` for core kinds, `deployments.apps` for grouped ones (as kube-apiserver words it).
fn qualified(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut response = (code, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::find;

    #[test]
    fn not_found_and_conflict_wording() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let e = ApiError::not_found(deploy, "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        assert_eq!(e.to_status()["details"]["kind"], "deployments");
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(
            ApiError::conflict(cm, "c")
                .message
                .starts_with("Operation cannot be fulfilled on configmaps \"c\"")
        );
    }

    #[test]
    fn invalid_names_fields_in_causes() {
        let svc = find("", "v1", "services").unwrap();
        let errs = [FieldError::invalid(
            "spec.ports[0].port",
            0,
            "must be between 1 and 65535, inclusive",
        )];
        let status = ApiError::invalid(svc, "s", &errs).to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "Service \"s\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(status["details"]["causes"][0]["field"], "spec.ports[0].port");
        assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueInvalid");
    }

    #[test]
    fn compacted_store_error_is_410_expired() {
        let cm = find("", "v1", "configmaps").unwrap();
        let e = ApiError::from_store(
            store::Error::Compacted {
                requested: 3,
                compacted: 9,
            },
            cm,
            "",
        );
        assert_eq!((e.code, e.reason), (410, "Expired"));
    }
}
