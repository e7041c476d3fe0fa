//! A Deployment's strategy resolved to numbers: maxSurge rounds up, maxUnavailable rounds down, never both zero.

use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// How replicas are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RollingUpdate,
    /// Every old pod is gone before the first new one is created.
    Recreate,
}

/// The strategy with absolute numbers for the current `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    pub kind: Kind,
    /// Pods allowed above `replicas` (0 for Recreate).
    pub max_surge: i32,
    /// Pods allowed below `replicas` that are not available (at most `replicas`; 0 for Recreate).
    pub max_unavailable: i32,
}

/// A strategy value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("invalid value {0:?}: must be an integer or a percentage")]
    NotIntOrPercent(String),
    #[error("invalid strategy type {0:?}: must be RollingUpdate or Recreate")]
    Type(String),
}

/// `value` of `total` (an integer as is, a percentage of `total` rounded up or down), never negative.
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, Invalid> {
    let v = match value {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Invalid::NotIntOrPercent(s.clone()))?;
            let product = pct * i64::from(total);
            let v = if round_up {
                product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    };
    Ok(v.max(0))
}

/// Resolves the strategy of `spec` (defaults as the apiserver sets them: RollingUpdate with 25%/25%).
pub fn resolve(spec: &DeploymentSpec) -> Result<Strategy, Invalid> {
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.clone().unwrap_or_default();
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "Recreate" => Ok(Strategy {
            kind: Kind::Recreate,
            max_surge: 0,
            max_unavailable: 0,
        }),
        "RollingUpdate" => {
            let ru = strategy.rolling_update.unwrap_or_default();
            let quarter = IntOrString::String("25%".to_owned());
            let surge = scaled(ru.max_surge.as_ref().unwrap_or(&quarter), replicas, true)?;
            let mut unavailable = scaled(ru.max_unavailable.as_ref().unwrap_or(&quarter), replicas, false)?;
            // Both zero would never make progress; Kubernetes lets one pod be unavailable then.
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            Ok(Strategy {
                kind: Kind::RollingUpdate,
                max_surge: surge,
                max_unavailable: unavailable.min(replicas),
            })
        }
        other => Err(Invalid::Type(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: serde_json::Value) -> DeploymentSpec {
        serde_json::from_value(v).unwrap()
    }

    fn rolling(replicas: i32, surge: serde_json::Value, unavailable: serde_json::Value) -> Strategy {
        resolve(&spec(json!({"replicas": replicas, "selector": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}})))
        .unwrap()
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let s = rolling(10, json!("25%"), json!("25%"));
        assert_eq!((s.max_surge, s.max_unavailable), (3, 2));
        let s = rolling(3, json!("50%"), json!("50%"));
        assert_eq!((s.max_surge, s.max_unavailable), (2, 1));
        let s = rolling(4, json!("25%"), json!("25%"));
        assert_eq!((s.max_surge, s.max_unavailable), (1, 1));
        let s = rolling(10, json!(2), json!(0));
        assert_eq!((s.max_surge, s.max_unavailable), (2, 0));
    }

    #[test]
    fn both_zero_allows_one_unavailable_and_unavailable_is_capped() {
        let s = rolling(3, json!(0), json!(0));
        assert_eq!((s.max_surge, s.max_unavailable), (0, 1));
        // 10% of 5 rounds both to zero: same fencepost.
        let s = rolling(5, json!("10%"), json!("10%"));
        assert_eq!((s.max_surge, s.max_unavailable), (1, 0));
        let s = rolling(5, json!("0%"), json!("10%"));
        assert_eq!((s.max_surge, s.max_unavailable), (0, 1));
        let s = rolling(2, json!(1), json!(5));
        assert_eq!(s.max_unavailable, 2);
    }

    #[test]
    fn defaults_recreate_and_errors() {
        let s = resolve(&spec(json!({"replicas": 4, "selector": {}}))).unwrap();
        assert_eq!(
            (s.kind, s.max_surge, s.max_unavailable),
            (Kind::RollingUpdate, 1, 1)
        );
        let s = resolve(&spec(
            json!({"replicas": 4, "selector": {}, "strategy": {"type": "Recreate"}}),
        ))
        .unwrap();
        assert_eq!((s.kind, s.max_surge, s.max_unavailable), (Kind::Recreate, 0, 0));
        assert!(matches!(
            resolve(&spec(json!({"selector": {}, "strategy": {"type": "Blue"}}))),
            Err(Invalid::Type(_))
        ));
        assert!(scaled(&IntOrString::String("x%".into()), 10, true).is_err());
    }
}
