//! Resource quantities (`100m`, `1.5`, `128Mi`, `1G`) as plain numbers: CPU in millicores, everything else in units.

/// The value of a Kubernetes quantity (`500m`, `1Gi`, `2e3`), or `None` when it is not one (kube's syntax: an
/// optional sign, digits with at most one dot, then a decimal, binary or exponent suffix).
pub fn value(text: &str) -> Option<f64> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || digits == "."
        || number.len() - digits.len() > 1
        || digits.matches('.').count() > 1
        || digits.contains(['+', '-'])
    {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * factor)
}

/// A quantity's value times `scale` (1000 for millicores), rounded up.
pub fn parse(text: &str, scale: f64) -> Option<i64> {
    let value = (value(text.trim())? * scale).ceil();
    (value.is_finite() && value.abs() < 9.0e18).then_some(value as i64)
}

/// CPU in millicores.
pub fn millicores(text: &str) -> Option<i64> {
    parse(text, 1000.0)
}

/// Memory (or any countable resource) in units.
pub fn units(text: &str) -> Option<i64> {
    parse(text, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(millicores("100m"), Some(100));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(units("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("110"), Some(110));
        assert_eq!(units("1e3"), Some(1000));
        assert_eq!(units("12x"), None);
        assert_eq!(units(""), None);
    }

    #[test]
    fn values_parse_like_kube() {
        assert_eq!(value("500m"), Some(0.5));
        assert_eq!(value("1Gi"), Some(1073741824.0));
        assert_eq!(value("1.5k"), Some(1500.0));
        assert_eq!(value("3e2"), Some(300.0));
        assert_eq!(value("-1"), Some(-1.0));
        for bad in ["", "abc", "1Gb", "1..2", "--1", "m"] {
            assert_eq!(value(bad), None, "{bad}");
        }
    }
}
