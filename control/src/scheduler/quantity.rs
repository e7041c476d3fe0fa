//! Resource quantities (`100m`, `1.5`, `128Mi`, `1G`) as plain numbers: CPU in millicores, everything else in units.

/// Parses a Kubernetes quantity into its value times `scale` (1000 for millicores), rounded up.
pub fn parse(text: &str, scale: f64) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
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
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let value = (number * factor * scale).ceil();
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
}
