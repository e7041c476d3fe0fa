//! apps/v1 Deployment, ReplicaSet and DaemonSet: selectors, replicas, strategies and pod templates.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::field::FieldError;
use super::meta::{self, json};
use super::names::{percent, quote};
use super::pod;
use crate::controllers::selector;

/// Which workload kind a template belongs to (kube words a few messages per kind).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Deployment,
    ReplicaSet,
    DaemonSet,
}

impl Workload {
    fn noun(self) -> &'static str {
        match self {
            Self::Deployment | Self::ReplicaSet => "deployment",
            Self::DaemonSet => "daemonset",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::DaemonSet => "DaemonSet",
        }
    }
}

fn non_negative(value: Option<i64>, field: &str, errors: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        errors.push(FieldError::invalid(
            field,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// Selector present, valid and non-empty, and matching the template's labels; the template itself.
fn selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    raw_template: Option<&Value>,
    workload: Workload,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match selector {
        None => errors.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            errors.extend(meta::label_selector(sel, "spec.selector"));
            if selector::is_empty(sel) {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    json(sel),
                    format!("empty selector is invalid for {}", workload.noun()),
                ));
            } else if let Some(t) = template {
                let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
                if !selector::matches(sel, labels) {
                    errors.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        json(&labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    errors.extend(pod::template(template, raw_template, "spec.template"));
    if let Some(spec) = template.and_then(|t| t.spec.as_ref()) {
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        if policy != "Always" {
            errors.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                quote(policy),
                &["Always"],
            ));
        }
        if let Some(d) = spec.active_deadline_seconds {
            errors.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                d,
                format!("activeDeadlineSeconds in {} is not Supported", workload.title()),
            ));
        }
    }
    errors
}

/// The number an int-or-percent stands for when it is zero-checked (`0`, `"0%"`).
fn int_or_percent_value(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::Int(n) => Some((*n).into()),
        IntOrString::String(s) => s.strip_suffix('%').and_then(|n| n.parse().ok()),
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => quote(s),
    }
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent` (the latter when `capped`).
fn int_or_percent(v: &IntOrString, field: &str, capped: bool, errors: &mut Vec<FieldError>) {
    match v {
        IntOrString::String(s) => {
            if let Some(why) = percent(s) {
                errors.push(FieldError::invalid(field, quote(s), why));
            }
        }
        IntOrString::Int(n) => non_negative(Some((*n).into()), field, errors),
    }
    if capped
        && matches!(v, IntOrString::String(s) if s.ends_with('%'))
        && int_or_percent_value(v).is_some_and(|p| p > 100)
    {
        errors.push(FieldError::invalid(
            field,
            show(v),
            "must not be greater than 100%",
        ));
    }
}

fn deployment_strategy(d: &Deployment, errors: &mut Vec<FieldError>) {
    let Some(strategy) = d.spec.as_ref().and_then(|s| s.strategy.as_ref()) else {
        return;
    };
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errors.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let quarter = IntOrString::String("25%".into());
            let ru = strategy.rolling_update.as_ref();
            let unavailable = ru
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(quarter.clone());
            let surge = ru.and_then(|r| r.max_surge.clone()).unwrap_or(quarter);
            let base = "spec.strategy.rollingUpdate";
            int_or_percent(&unavailable, &format!("{base}.maxUnavailable"), false, errors);
            int_or_percent(&surge, &format!("{base}.maxSurge"), false, errors);
            if int_or_percent_value(&unavailable) == Some(0) && int_or_percent_value(&surge) == Some(0) {
                errors.push(FieldError::invalid(
                    format!("{base}.maxUnavailable"),
                    show(&unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if matches!(&unavailable, IntOrString::String(s) if s.ends_with('%'))
                && int_or_percent_value(&unavailable).is_some_and(|p| p > 100)
            {
                errors.push(FieldError::invalid(
                    format!("{base}.maxUnavailable"),
                    show(&unavailable),
                    "must not be greater than 100%",
                ));
            }
        }
        other => errors.push(FieldError::not_supported(
            "spec.strategy.type",
            quote(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `ValidateDeploymentSpec` (on create and whenever the spec changes).
pub fn deployment(object: &Value) -> Vec<FieldError> {
    let Ok(d) = serde_json::from_value::<Deployment>(object.clone()) else {
        return Vec::new();
    };
    let Some(spec) = &d.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errors = Vec::new();
    non_negative(spec.replicas.map(i64::from), "spec.replicas", &mut errors);
    errors.extend(selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        object.pointer("/spec/template"),
        Workload::Deployment,
    ));
    deployment_strategy(&d, &mut errors);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    non_negative(Some(min_ready), "spec.minReadySeconds", &mut errors);
    non_negative(
        spec.revision_history_limit.map(i64::from),
        "spec.revisionHistoryLimit",
        &mut errors,
    );
    if let Some(deadline) = spec.progress_deadline_seconds.map(i64::from) {
        non_negative(Some(deadline), "spec.progressDeadlineSeconds", &mut errors);
        if deadline <= min_ready {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errors
}

/// `ValidateReplicaSetSpec`.
pub fn replica_set(object: &Value) -> Vec<FieldError> {
    let Ok(rs) = serde_json::from_value::<ReplicaSet>(object.clone()) else {
        return Vec::new();
    };
    let Some(spec) = &rs.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errors = Vec::new();
    non_negative(spec.replicas.map(i64::from), "spec.replicas", &mut errors);
    non_negative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
        &mut errors,
    );
    errors.extend(selector_and_template(
        Some(&spec.selector),
        spec.template.as_ref(),
        object.pointer("/spec/template"),
        Workload::ReplicaSet,
    ));
    errors
}

/// `ValidateDaemonSetSpec`.
pub fn daemon_set(object: &Value) -> Vec<FieldError> {
    let Ok(ds) = serde_json::from_value::<DaemonSet>(object.clone()) else {
        return Vec::new();
    };
    let Some(spec) = &ds.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errors = selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        object.pointer("/spec/template"),
        Workload::DaemonSet,
    );
    non_negative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
        &mut errors,
    );
    non_negative(
        spec.revision_history_limit.map(i64::from),
        "spec.revisionHistoryLimit",
        &mut errors,
    );
    let strategy = spec.update_strategy.as_ref();
    match strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
    {
        "OnDelete" => {}
        "RollingUpdate" => {
            let ru = strategy.and_then(|s| s.rolling_update.as_ref());
            let unavailable = ru
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1));
            let surge = ru
                .and_then(|r| r.max_surge.clone())
                .unwrap_or(IntOrString::Int(0));
            let base = "spec.updateStrategy.rollingUpdate";
            int_or_percent(&unavailable, &format!("{base}.maxUnavailable"), true, &mut errors);
            int_or_percent(&surge, &format!("{base}.maxSurge"), true, &mut errors);
            let has_unavailable = int_or_percent_value(&unavailable) != Some(0);
            let has_surge = int_or_percent_value(&surge) != Some(0);
            if has_unavailable && has_surge {
                errors.push(FieldError::invalid(
                    format!("{base}.maxSurge"),
                    show(&surge),
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !has_unavailable && !has_surge {
                errors.push(FieldError::required(
                    format!("{base}.maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                ));
            }
        }
        other => errors.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            quote(other),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    errors
}

/// apps/v1 forbids changing a workload's selector.
pub fn selector_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if n == o {
        return Vec::new();
    }
    let shown = n
        .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok())
        .map_or_else(|| "null".to_owned(), |s| json(&s));
    vec![FieldError::invalid("spec.selector", shown, "field is immutable")]
}

/// Status counters of the three kinds may not be negative.
pub fn status(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for field in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "unavailableReplicas",
        "fullyLabeledReplicas",
        "terminatingReplicas",
        "observedGeneration",
        "currentNumberScheduled",
        "numberMisscheduled",
        "desiredNumberScheduled",
        "numberReady",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberUnavailable",
        "collisionCount",
    ] {
        let value = object
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64);
        non_negative(value, &format!("status.{field}"), &mut errors);
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::validation::shown;

    fn workload(spec_extra: Value) -> Value {
        let mut spec = json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "nginx"}]}},
        });
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"metadata": {"name": "w"}, "spec": spec})
    }

    #[test]
    fn valid_workloads_pass() {
        assert_eq!(shown(&deployment(&workload(json!({})))), Vec::<String>::new());
        let recreate = workload(json!({"strategy": {"type": "Recreate"}, "progressDeadlineSeconds": 600}));
        assert_eq!(shown(&deployment(&recreate)), Vec::<String>::new());
        assert_eq!(shown(&replica_set(&workload(json!({})))), Vec::<String>::new());
        let mut ds = workload(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "10%"}}}),
        );
        ds["spec"].as_object_mut().unwrap().remove("replicas");
        assert_eq!(shown(&daemon_set(&ds)), Vec::<String>::new());
    }

    #[test]
    fn selector_must_match_template() {
        let d = workload(json!({"selector": {"matchLabels": {"app": "db"}}}));
        assert_eq!(
            shown(&deployment(&d)),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        let d = workload(json!({"selector": {}}));
        assert_eq!(
            shown(&replica_set(&d)),
            ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );
        let errors = daemon_set(&workload(json!({"selector": {"matchLabels": {}}})));
        assert!(
            errors[0]
                .detail
                .ends_with("empty selector is invalid for daemonset")
        );
    }

    #[test]
    fn counts_and_template_policy() {
        let mut d = workload(json!({"replicas": -1, "minReadySeconds": -2, "revisionHistoryLimit": -3}));
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            shown(&deployment(&d)),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.minReadySeconds: Invalid value: -2: must be greater than or equal to 0",
                "spec.revisionHistoryLimit: Invalid value: -3: must be greater than or equal to 0",
            ]
        );
        let d = workload(json!({"minReadySeconds": 10, "progressDeadlineSeconds": 10}));
        assert_eq!(
            shown(&deployment(&d)),
            ["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds"]
        );
    }

    #[test]
    fn rolling_update_parameters() {
        let d = workload(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}}),
        );
        assert_eq!(
            shown(&deployment(&d)),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
        let d = workload(json!({"strategy": {"rollingUpdate": {"maxUnavailable": "150%", "maxSurge": "x"}}}));
        let errors = shown(&deployment(&d));
        assert!(errors[0].starts_with(
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x\": a valid percent string"
        ));
        assert_eq!(
            errors[1],
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
        );
        let d = workload(json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}}));
        assert_eq!(
            shown(&deployment(&d)),
            [
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
            ]
        );
        let d = workload(json!({"strategy": {"type": "BlueGreen"}}));
        assert_eq!(
            shown(&deployment(&d)),
            [
                "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""
            ]
        );
        let ds = workload(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}}));
        assert_eq!(
            shown(&daemon_set(&ds)),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
            ]
        );
        let ds = workload(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}}));
        assert_eq!(
            shown(&daemon_set(&ds)),
            [
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
            ]
        );
    }

    #[test]
    fn selectors_are_immutable_and_status_counts_non_negative() {
        let old = workload(json!({}));
        assert!(selector_update(&old, &old).is_empty());
        let new = workload(json!({"selector": {"matchLabels": {"app": "web", "v": "2"}}}));
        assert_eq!(
            shown(&selector_update(&new, &old)),
            [
                "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"
            ]
        );
        assert_eq!(
            shown(&status(&json!({"status": {"replicas": -1, "readyReplicas": 1}}))),
            ["status.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
    }
}
