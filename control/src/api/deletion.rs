//! What a DELETE does to an object (pure): DeleteOptions, graceful pod deletion and the GC finalizers.

use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::validation::FieldError;

/// The finalizer that makes the garbage collector orphan an object's dependents before it goes.
pub const ORPHAN: &str = "orphan";
/// The finalizer that makes the garbage collector delete an object's dependents before it goes.
pub const FOREGROUND: &str = "foregroundDeletion";
/// A pod's grace period when neither the request nor `spec.terminationGracePeriodSeconds` gives one.
pub const DEFAULT_POD_GRACE: i64 = 30;

/// `propagationPolicy`: what happens to an object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub const NAMES: &'static [&'static str] = &["Foreground", "Background", "Orphan"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orphan => "Orphan",
            Self::Background => "Background",
            Self::Foreground => "Foreground",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "Orphan" => Some(Self::Orphan),
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            _ => None,
        }
    }
}

/// The parts of `DeleteOptions` (body or query parameters) the server acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    /// Deprecated `orphanDependents`; `true` means Orphan.
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body, with query parameters filling what the body leaves out.
    pub fn parse<'q>(body: &Value, query: impl Fn(&str) -> Option<&'q str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let grace = match body.get("gracePeriodSeconds") {
            Some(v) if !v.is_null() => v.as_i64(),
            _ => query("gracePeriodSeconds").and_then(|q| q.parse().ok()),
        };
        let policy = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or_else(|| query("propagationPolicy"));
        let propagation = match policy {
            None | Some("") => None,
            Some(p) => {
                let parsed = Propagation::parse(p);
                if parsed.is_none() {
                    errors.push(FieldError::not_supported(
                        "propagationPolicy",
                        format!("{p:?}"),
                        Propagation::NAMES,
                    ));
                }
                parsed
            }
        };
        let orphan_dependents = body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| query("orphanDependents").and_then(|q| q.parse().ok()));
        if orphan_dependents.is_some() && propagation.is_some() {
            errors.push(FieldError::invalid(
                "propagationPolicy",
                format!("{:?}", policy.unwrap_or_default()),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        let precondition = |field: &str| {
            body.pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let dry_run = body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
            || query("dryRun") == Some("All");
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            grace_period_seconds: grace,
            propagation,
            orphan_dependents,
            precondition_uid: precondition("uid"),
            precondition_resource_version: precondition("resourceVersion"),
            dry_run,
        })
    }

    /// The effective policy, counting the deprecated `orphanDependents`.
    fn policy(&self) -> Option<Propagation> {
        self.propagation.or(match self.orphan_dependents {
            Some(true) => Some(Propagation::Orphan),
            _ => None,
        })
    }
}

/// What a DELETE does to one stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Remove it from storage now.
    Remove,
    /// Store this object (deletionTimestamp and finalizers set); it stays until its grace and finalizers end.
    Mark(Value),
    /// A graceful deletion is already under way and this request does not shorten it: nothing changes.
    Pending,
}

/// Seconds since the epoch of an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Option<i64> {
    Timestamp::from_str(text).ok().map(|t| t.as_second())
}

/// A Kubernetes timestamp (RFC 3339, whole seconds, UTC).
pub fn format_time(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn grace_of(object: &Value) -> Option<i64> {
    object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
}

/// A pod's grace period for this request (kube-apiserver's `CheckGracefulDelete`): the requested one, else the
/// pod's `terminationGracePeriodSeconds`; 0 for pods that never reached a node or already finished.
pub fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    let period = requested.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_POD_GRACE)
    });
    // A negative period cannot mean "now": kube-apiserver turns it into the shortest graceful one.
    if period < 0 { 1 } else { period }
}

/// The finalizers after applying the request's propagation policy (unchanged when it gives none).
pub fn finalizers_for(current: &[String], options: &DeleteOptions) -> Vec<String> {
    let mut out: Vec<String> = current.to_vec();
    let mut set = |name: &str, present: bool| {
        let has = out.iter().any(|f| f == name);
        if present && !has {
            out.push(name.to_owned());
        } else if !present && has {
            out.retain(|f| f != name);
        }
    };
    match options.policy() {
        Some(Propagation::Orphan) => {
            set(ORPHAN, true);
            set(FOREGROUND, false);
        }
        Some(Propagation::Foreground) => {
            set(FOREGROUND, true);
            set(ORPHAN, false);
        }
        Some(Propagation::Background) => {
            set(ORPHAN, false);
            set(FOREGROUND, false);
        }
        None if options.orphan_dependents == Some(false) => set(ORPHAN, false),
        None => {}
    }
    out
}

/// Decides a DELETE of `object` at `now` (seconds since the epoch), as kube-apiserver's `BeforeDelete` and its
/// store's finalizer handling do. Only pods are deleted gracefully.
pub fn decide(object: &Value, is_pod: bool, options: &DeleteOptions, now: i64) -> Outcome {
    let marked_at = object
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let current = finalizers(object);
    let old_grace = grace_of(object).unwrap_or(0);
    if let Some(at) = marked_at
        && old_grace > 0
    {
        // Graceful deletion under way: a request may only shorten it, and cannot change finalizers.
        let Some(requested) = options.grace_period_seconds.map(|g| g.max(0)) else {
            return Outcome::Pending;
        };
        if requested >= old_grace {
            return Outcome::Pending;
        }
        if requested == 0 && current.is_empty() {
            return Outcome::Remove;
        }
        let mut marked = object.clone();
        marked["metadata"]["deletionTimestamp"] = json!(format_time(at - old_grace + requested));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(requested);
        return Outcome::Mark(marked);
    }
    let wanted = finalizers_for(&current, options);
    let grace = if is_pod && marked_at.is_none() {
        pod_grace(object, options.grace_period_seconds)
    } else {
        0
    };
    if grace == 0 && wanted.is_empty() {
        return Outcome::Remove;
    }
    if marked_at.is_some() && wanted == current {
        return Outcome::Pending;
    }
    let mut marked = object.clone();
    let meta = &mut marked["metadata"];
    if marked_at.is_none() {
        meta["deletionTimestamp"] = json!(format_time(now + grace));
        meta["deletionGracePeriodSeconds"] = json!(grace);
        if grace > 0
            && let Some(generation) = meta.get("generation").and_then(Value::as_i64)
        {
            meta["generation"] = json!(generation + 1);
        }
    }
    if wanted.is_empty() {
        if let Some(m) = meta.as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        meta["finalizers"] = json!(wanted);
    }
    Outcome::Mark(marked)
}

/// Keeps the stored deletion grace period on update: clients cannot change it.
pub fn carry_grace(old: &Value, new: &mut Value) {
    match old.pointer("/metadata/deletionGracePeriodSeconds") {
        Some(g) => new["metadata"]["deletionGracePeriodSeconds"] = g.clone(),
        None => {
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("deletionGracePeriodSeconds");
            }
        }
    }
}

/// Whether an update leaves an object that is to be removed at once: marked for deletion, its grace over and
/// no finalizer left.
pub fn remove_on_update(new: &Value) -> bool {
    new.pointer("/metadata/deletionTimestamp").is_some()
        && grace_of(new).unwrap_or(0) == 0
        && finalizers(new).is_empty()
}

#[cfg(test)]
mod tests;
