//! A linear pre-scan of request bodies for bracket nesting depth, run before any JSON or YAML parser sees them.
//! serde_json stops at 128 levels by itself, but the YAML scanner (apply-patch+yaml) spends quadratic time on
//! deeply nested flow collections before serde_yaml's own depth limit applies; kube-apiserver's decoders refuse
//! depths beyond their limits too (go-yaml and sigs.k8s.io/json).

/// Deepest accepted nesting of `[`/`{` (serde_json's own recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Whether `body` nests `[` and `{` deeper than `limit`, ignoring brackets inside quoted strings (and, for YAML,
/// inside `#` comments).
pub fn too_deep(body: &[u8], yaml: bool, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut previous = b'\n';
    for &byte in body {
        if comment {
            comment = byte != b'\n';
        } else if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if byte == b'\\' && q == b'"' {
                escaped = true;
            } else if byte == q {
                quote = None;
            }
        } else {
            match byte {
                b'"' => quote = Some(b'"'),
                // In YAML a single quote opens a string only where a scalar starts (not inside `it's`).
                b'\'' if yaml && matches!(previous, b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':') => {
                    quote = Some(b'\'');
                }
                b'#' if yaml && matches!(previous, b' ' | b'\t' | b'\n') => comment = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = byte;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn counts_brackets_and_braces() {
        assert!(!too_deep(nested(128).as_bytes(), false, 128));
        assert!(too_deep(nested(129).as_bytes(), false, 128));
        assert!(too_deep(nested(100_000).as_bytes(), true, 128));
        let objects = format!("{}{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(too_deep(objects.as_bytes(), false, 128));
        // Depth, not count: many siblings are fine.
        assert!(!too_deep("[[]]".repeat(10_000).as_bytes(), false, 3));
    }

    #[test]
    fn ignores_brackets_in_strings_and_comments() {
        let json = format!(r#"{{"data": {{"a": "{}", "b": "\"[[["}}}}"#, "[".repeat(1000));
        assert!(!too_deep(json.as_bytes(), false, 3));
        let yaml = format!(
            "data:\n  a: '{}' # {}\n  b: it's [1]\n",
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(!too_deep(yaml.as_bytes(), true, 3));
        let yaml = format!("data:\n  a: x\nx: {}\n", nested(10));
        assert!(too_deep(yaml.as_bytes(), true, 3));
    }
}
