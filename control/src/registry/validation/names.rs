//! Syntax rules for names, keys and values (apimachinery's `validation` package), each returning kube's message.

/// Checks a DNS-1123 subdomain (most object names): lowercase alphanumerics, '-' and '.', at most 253.
pub fn dns1123_subdomain(name: &str) -> Option<String> {
    let ok = name.len() <= 253
        && !name.is_empty()
        && name
            .split('.')
            .all(|label| label_chars_ok(label) && !label.is_empty());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .to_owned()
    })
}

/// kube-apiserver's rule for names that only need to be one URL path segment (RBAC roles and bindings,
/// whose names carry colons like `system:node`).
pub fn path_segment_name(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

/// Checks a DNS-1123 label (namespaces, ports' names): at most 63 characters, no dots.
pub fn dns1123_label(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.len() <= 63 && label_chars_ok(name);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
         end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .to_owned()
    })
}

/// Checks a DNS-1035 label (Service names): like a DNS-1123 label but starting with a letter.
pub fn dns1035_label(name: &str) -> Option<String> {
    let ok = dns1123_label(name).is_none() && name.starts_with(|c: char| c.is_ascii_lowercase());
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic \
         character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for \
         validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            .to_owned()
    })
}

fn label_chars_ok(label: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    label.chars().all(|c| alnum(c) || c == '-') && label.starts_with(alnum) && label.ends_with(alnum)
}

/// Checks an IANA service name (a port name): at most 15 characters, a letter, no double hyphens.
pub fn port_name(name: &str) -> Option<String> {
    let ok = name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    (!ok).then(|| {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), contain at least one letter, \
         must not start or end with a hyphen, no two adjacent hyphens, and be no more than 15 characters"
            .to_owned()
    })
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and \
     end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation \
     is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn qualified_part_ok(name: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    name.starts_with(edge)
        && name.ends_with(edge)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and '/', then a name of at most 63 characters
/// (label keys, annotation keys, finalizers). Every rule broken gives one message.
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else if let Some(why) = dns1123_subdomain(prefix) {
                errors.push(format!("prefix part {why}"));
            }
            *name
        }
        _ => {
            return vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and \
                 end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                 validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix \
                 and '/' (e.g. 'example.com/MyName')"
                    .to_owned(),
            ];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_owned());
    }
    if !qualified_part_ok(name) {
        errors.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errors
}

/// `IsValidLabelValue`: empty, or a qualified name part of at most 63 characters.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !qualified_part_ok(value) {
        errors.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
             regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// `IsValidPortName` with one message per broken rule (container ports; Services use [`port_name`]).
pub fn port_name_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > 15 {
        errors.push("must be no more than 15 characters".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errors.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned());
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_owned());
    }
    if name.contains("--") {
        errors.push("must not contain consecutive hyphens".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_owned());
    }
    errors
}

/// `IsValidPortNum`.
pub fn port_number(port: i64) -> Option<&'static str> {
    (!(1..=65535).contains(&port)).then_some("must be between 1 and 65535, inclusive")
}

fn chdir_prefix(value: &str) -> Option<String> {
    match value {
        "." => Some("must not be '.'".to_owned()),
        ".." => Some("must not be '..'".to_owned()),
        v if v.starts_with("..") => Some("must not start with '..'".to_owned()),
        _ => None,
    }
}

/// `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`/`..`.
pub fn env_var_name(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok {
        errors.push(
            "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', \
             and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used \
             for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
                .to_owned(),
        );
    }
    errors.extend(chdir_prefix(name));
    errors
}

/// `IsConfigMapKey` (ConfigMap and Secret keys): `[-._a-zA-Z0-9]+`, at most 253, not `.`/`..`.
pub fn config_map_key(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if key.len() > 253 {
        errors.push("must be no more than 253 characters".to_owned());
    }
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok {
        errors.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or \
             'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .to_owned(),
        );
    }
    errors.extend(chdir_prefix(key));
    errors
}

/// `IsValidPercent`: digits followed by '%'.
pub fn percent(value: &str) -> Option<String> {
    let ok = value
        .strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    (!ok).then(|| {
        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex \
         used for validation is '[0-9]+%')"
            .to_owned()
    })
}

/// A string as Go's `%q` prints it (the way kube shows string values in messages).
pub fn quote(value: &str) -> String {
    format!("{value:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert_eq!(path_segment_name("system:node"), None);
        assert!(path_segment_name("a/b").is_some());
        assert!(path_segment_name("..").is_some());
        assert!(dns1123_subdomain("web.example-1").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_subdomain("-a").is_some());
        assert!(dns1123_subdomain("a..b").is_some());
        assert!(dns1123_label("kube-system").is_none());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
        assert!(dns1035_label("1web").is_some());
        assert!(dns1035_label("web-1").is_none());
        assert!(port_name("http").is_none());
        assert!(port_name("http--x").is_some());
        assert!(port_name("8080").is_some());
        assert!(port_name("a-very-long-port-name").is_some());
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("Foo_Bar.baz").is_empty());
        let e = qualified_name("a b");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("name part must consist of alphanumeric characters"),
            "{e:?}"
        );
        assert_eq!(qualified_name("/x"), ["prefix part must be non-empty"]);
        assert!(qualified_name("Example.com/x")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert_eq!(
            qualified_name(&"a".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
        assert_eq!(qualified_name("").len(), 2);
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_x-y").is_empty());
        assert_eq!(label_value("-x").len(), 1);
        assert_eq!(
            label_value(&"v".repeat(64)),
            ["must be no more than 63 characters"]
        );
    }

    #[test]
    fn ports_env_keys_and_percents() {
        assert!(port_name_errors("http-alt").is_empty());
        assert_eq!(
            port_name_errors("-8080"),
            [
                "must contain at least one letter (a-z)",
                "must not begin or end with a hyphen"
            ]
        );
        assert_eq!(port_name_errors("a--b"), ["must not contain consecutive hyphens"]);
        assert_eq!(port_number(0), Some("must be between 1 and 65535, inclusive"));
        assert_eq!(port_number(65535), None);
        assert!(env_var_name("MY_VAR.x-1").is_empty());
        assert!(env_var_name("_x").is_empty());
        assert_eq!(env_var_name("1X").len(), 1);
        assert_eq!(env_var_name("..x"), ["must not start with '..'"]);
        assert!(config_map_key("app.properties").is_empty());
        assert_eq!(config_map_key("a/b").len(), 1);
        assert_eq!(config_map_key(".."), ["must not be '..'"]);
        assert_eq!(percent("25%"), None);
        assert!(percent("25").is_some() && percent("%").is_some() && percent("2.5%").is_some());
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
