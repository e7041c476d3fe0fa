//! Converts between the events.k8s.io/v1 Event (an API view) and the core/v1 Event (its storage), field by field.
//!
//! Both APIs serve one storage, as in kube-apiserver. The renames are exact inverses; on the way into storage a
//! core reader's legacy fields are also filled from the newer ones (`source` from `reportingController` and
//! `reportingInstance`, `count` and `lastTimestamp` from `series`) when the writer left them out, and on the way
//! out such derived values are dropped again, so events.k8s.io objects round-trip unchanged.

use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 field, core/v1 field) pairs with different names; other fields share their name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

const CORE_API_VERSION: &str = "v1";
const EVENTS_API_VERSION: &str = "events.k8s.io/v1";

/// Renames the top-level fields of `object` towards core (or back) and sets apiVersion/kind.
fn renamed(object: Value, to_core: bool, api_version: &str) -> Map<String, Value> {
    let Value::Object(fields) = object else {
        return Map::new();
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let name = RENAMES
            .iter()
            .find_map(|(view, core)| match to_core {
                true if key == *view => Some(*core),
                false if key == *core => Some(*view),
                _ => None,
            })
            .map_or(key, str::to_owned);
        out.insert(name, value);
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    out
}

fn non_empty_str<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.values().all(|v| is_empty(Some(v))),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// The legacy `source` a core reader sees for an event whose writer only set the reporting fields.
fn derived_source(controller: Option<&str>, instance: Option<&str>) -> Option<Value> {
    let mut source = Map::new();
    if let Some(c) = controller {
        source.insert("component".into(), json!(c));
    }
    if let Some(h) = instance {
        source.insert("host".into(), json!(h));
    }
    (!source.is_empty()).then_some(Value::Object(source))
}

/// A MicroTime (`2026-01-02T03:04:05.123456Z`) truncated to a Time (`2026-01-02T03:04:05Z`).
pub fn truncate_to_seconds(micro: &str) -> String {
    let Some(dot) = micro.find('.') else {
        return micro.to_owned();
    };
    let zone = micro[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(micro.len(), |i| dot + 1 + i);
    format!("{}{}", &micro[..dot], &micro[zone..])
}

/// The legacy (count, lastTimestamp) a core reader sees for an event series.
fn derived_series(series: Option<&Value>) -> Option<(Value, Value)> {
    let series = series?.as_object()?;
    let count = series.get("count").filter(|c| c.is_i64())?.clone();
    let last = series.get("lastObservedTime").and_then(Value::as_str)?;
    Some((count, json!(truncate_to_seconds(last))))
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is stored as.
pub fn to_core(event: Value) -> Value {
    let mut out = renamed(event, true, CORE_API_VERSION);
    if is_empty(out.get("source")) {
        let derived = derived_source(
            non_empty_str(&out, "reportingComponent"),
            non_empty_str(&out, "reportingInstance"),
        );
        match derived {
            Some(source) => out.insert("source".into(), source),
            None => out.remove("source"),
        };
    }
    if is_empty(out.get("count"))
        && is_empty(out.get("lastTimestamp"))
        && let Some((count, last)) = derived_series(out.get("series"))
    {
        out.insert("count".into(), count);
        out.insert("lastTimestamp".into(), last);
    }
    Value::Object(out)
}

/// A stored core/v1 Event as the events.k8s.io/v1 Event view.
pub fn to_events(core: Value) -> Value {
    let mut out = renamed(core, false, EVENTS_API_VERSION);
    let derived = derived_source(
        non_empty_str(&out, "reportingController"),
        non_empty_str(&out, "reportingInstance"),
    );
    if derived.is_some() && out.get("deprecatedSource") == derived.as_ref() {
        out.remove("deprecatedSource");
    }
    if let Some((count, last)) = derived_series(out.get("series"))
        && out.get("deprecatedCount") == Some(&count)
        && out.get("deprecatedLastTimestamp") == Some(&last)
    {
        out.remove("deprecatedCount");
        out.remove("deprecatedLastTimestamp");
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_style() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "p1.abc", "namespace": "default", "resourceVersion": "7"},
            "eventTime": "2026-12-02T01:02:03.456789Z",
            "series": {"count": 3, "lastObservedTime": "2026-12-02T01:05:00.000100Z"},
            "reportingController": "skiff.io/scheduler",
            "reportingInstance": "skiff-control-1",
            "action": "Binding",
            "reason": "Scheduled",
            "regarding": {"kind": "Pod", "namespace": "default", "name": "p1", "uid": "u1", "apiVersion": "v1"},
            "related": {"kind": "Node", "name": "n1"},
            "note": "Successfully assigned default/p1 to n1",
            "type": "Normal"
        })
    }

    #[test]
    fn events_to_core_maps_every_field() {
        let core = to_core(new_style());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["kind"], "Event");
        assert_eq!(core["metadata"]["resourceVersion"], "7");
        assert_eq!(core["involvedObject"]["name"], "p1");
        assert_eq!(core["involvedObject"]["uid"], "u1");
        assert_eq!(core["message"], "Successfully assigned default/p1 to n1");
        assert_eq!(core["reportingComponent"], "skiff.io/scheduler");
        assert_eq!(core["reportingInstance"], "skiff-control-1");
        assert_eq!(core["related"]["name"], "n1");
        assert_eq!(core["action"], "Binding");
        assert_eq!(core["eventTime"], "2026-12-02T01:02:03.456789Z");
        assert_eq!(core["series"]["count"], 3);
        // Legacy fields a core reader (kubectl describe) shows, filled from the newer ones.
        assert_eq!(
            core["source"],
            json!({"component": "skiff.io/scheduler", "host": "skiff-control-1"})
        );
        assert_eq!(core["count"], 3);
        assert_eq!(core["lastTimestamp"], "2026-12-02T01:05:00Z");
        for view_only in [
            "regarding",
            "note",
            "reportingController",
            "deprecatedSource",
            "deprecatedCount",
        ] {
            assert!(
                core.get(view_only).is_none(),
                "{view_only} left in the core object"
            );
        }
    }

    #[test]
    fn explicit_deprecated_fields_win_over_derived_ones() {
        let mut event = new_style();
        event["deprecatedSource"] = json!({"component": "kubelet", "host": "n1"});
        event["deprecatedCount"] = json!(9);
        event["deprecatedFirstTimestamp"] = json!("2026-12-01T00:00:00Z");
        event["deprecatedLastTimestamp"] = json!("2026-12-02T00:00:00Z");
        let core = to_core(event.clone());
        assert_eq!(core["source"], json!({"component": "kubelet", "host": "n1"}));
        assert_eq!(core["count"], 9);
        assert_eq!(core["firstTimestamp"], "2026-12-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-12-02T00:00:00Z");
        assert_eq!(to_events(core), event);
    }

    #[test]
    fn events_round_trip_unchanged() {
        assert_eq!(to_events(to_core(new_style())), new_style());
        let minimal = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "n1"}, "note": "x"});
        assert_eq!(to_core(minimal.clone())["source"], Value::Null);
        assert_eq!(to_events(to_core(minimal.clone())), minimal);
    }

    #[test]
    fn core_events_round_trip_unchanged() {
        let legacy = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "p1.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled",
            "message": "Container image already present",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-12-02T01:00:00Z",
            "lastTimestamp": "2026-12-02T01:01:00Z",
            "count": 2,
            "type": "Normal",
            "reportingComponent": "kubelet",
            "reportingInstance": "n1"
        });
        let view = to_events(legacy.clone());
        assert_eq!(view["apiVersion"], "events.k8s.io/v1");
        assert_eq!(view["regarding"]["fieldPath"], "spec.containers{app}");
        assert_eq!(view["note"], "Container image already present");
        assert_eq!(view["reportingController"], "kubelet");
        assert_eq!(view["deprecatedCount"], 2);
        assert_eq!(view["deprecatedFirstTimestamp"], "2026-12-02T01:00:00Z");
        assert_eq!(view["deprecatedLastTimestamp"], "2026-12-02T01:01:00Z");
        // The source equals what the reporting fields imply, so the view leaves it out...
        assert!(view.get("deprecatedSource").is_none());
        // ...and storing the view again restores it.
        assert_eq!(to_core(view), legacy);

        let other_source = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"name": "x"}, "source": {"component": "kubelet"}, "reportingInstance": "n1"});
        assert_eq!(
            to_events(other_source.clone())["deprecatedSource"],
            json!({"component": "kubelet"})
        );
        assert_eq!(to_core(to_events(other_source.clone())), other_source);
    }

    #[test]
    fn micro_time_truncates_to_seconds() {
        assert_eq!(
            truncate_to_seconds("2026-12-02T01:02:03.456789Z"),
            "2026-12-02T01:02:03Z"
        );
        assert_eq!(
            truncate_to_seconds("2026-12-02T01:02:03.5+01:00"),
            "2026-12-02T01:02:03+01:00"
        );
        assert_eq!(
            truncate_to_seconds("2026-12-02T01:02:03Z"),
            "2026-12-02T01:02:03Z"
        );
    }
}
