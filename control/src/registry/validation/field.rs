//! Field errors in Kubernetes' wording (`field.Invalid`, `field.Required`, ...) and how they render.

use std::fmt;

/// The category of a field error (the `reason` of a Status cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    Duplicate,
    NotSupported,
    Forbidden,
    NotFound,
    TooLong,
    TooMany,
}

/// One invalid field, rendered like kube-apiserver: `spec.ports[0].port: Invalid value: 0: must be ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    /// The offending value, already rendered (strings quoted).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: impl fmt::Display, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: impl fmt::Display, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", list.join(", "));
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.to_string()),
            detail,
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn not_found(field: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            kind: FieldErrorKind::NotFound,
            field: field.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }

    /// A value over a size limit; like kube, the message names the limit, not the value.
    pub fn too_long(field: impl Into<String>, limit: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            value: None,
            detail: format!("may not be more than {limit} bytes"),
        }
    }

    /// A list with more items than allowed.
    pub fn too_many(field: impl Into<String>, actual: usize, limit: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooMany,
            field: field.into(),
            value: Some(actual.to_string()),
            detail: format!("must have at most {limit} items"),
        }
    }

    /// The Status cause reason (`FieldValueInvalid`, ...).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
        }
    }

    /// The message without the field path.
    pub fn message(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
        };
        match (&self.value, self.detail.is_empty()) {
            (Some(v), false) => format!("{head}: {v}: {}", self.detail),
            (Some(v), true) => format!("{head}: {v}"),
            (None, false) => format!("{head}: {}", self.detail),
            (None, true) => head.to_owned(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kube_apiserver_wording() {
        let e = FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive");
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let r = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            r.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let n = FieldError::not_supported("spec.type", "\"Foo\"", &["ClusterIP", "NodePort"]);
        assert_eq!(
            n.to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1]", "x").reason(),
            "FieldValueDuplicate"
        );
    }

    #[test]
    fn size_and_lookup_errors() {
        assert_eq!(
            FieldError::too_long("[]", 1048576).to_string(),
            "[]: Too long: may not be more than 1048576 bytes"
        );
        let e = FieldError::not_found("spec.containers[0].volumeMounts[0].name", "\"data\"");
        assert_eq!(e.reason(), "FieldValueNotFound");
        assert_eq!(e.message(), "Not found: \"data\"");
        assert_eq!(
            FieldError::too_many("endpoints", 1001, 1000).message(),
            "Too many: 1001: must have at most 1000 items"
        );
    }
}
