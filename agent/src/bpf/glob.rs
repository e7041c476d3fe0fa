//! Shell-style interface name patterns (`*`, `?`) for `--pod-iface`.

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` exactly one.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with single-star backtracking: linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `name` matches any of `patterns`.
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_question_mark() {
        assert!(matches("veth*", "veth1234"));
        assert!(matches("veth*", "veth"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches("*-h", "pod-a-h"));
        assert!(matches("lxc?", "lxc1"));
        assert!(!matches("lxc?", "lxc12"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("eth0", "eth0"));
        assert!(!matches("eth0", "eth01"));
        assert!(matches("*", ""));
    }

    #[test]
    fn any_of_several() {
        let pats = vec!["veth*".to_string(), "skp-*".to_string()];
        assert!(matches_any(&pats, "skp-1"));
        assert!(!matches_any(&pats, "lo"));
        assert!(!matches_any(&[], "veth0"));
    }
}
