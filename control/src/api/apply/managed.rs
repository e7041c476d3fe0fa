//! `metadata.managedFields`: decoding, ownership changes on update and apply, and apply conflicts.

use serde_json::{Value, json};

use super::fieldset::{FieldSet, Path, Scope, display};
use super::merge::{self, compare};

/// Whether an entry records applies or ordinary writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who is writing: one managedFields entry is kept per (manager, operation, subresource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: Option<String>,
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    fn is(&self, writer: &Writer) -> bool {
        self.manager == writer.manager
            && self.operation == writer.operation
            && self.subresource == writer.subresource
    }

    /// How conflict messages name this manager (`"kubectl-client-side-apply" using apps/v1`).
    fn describe(&self) -> String {
        match self.operation {
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
            Operation::Apply => format!("{:?}", self.manager),
        }
    }
}

/// All managedFields entries of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managers(pub Vec<Entry>);

/// Another manager owns fields an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, as conflict messages name it.
    pub manager: String,
    pub path: Path,
}

impl Managers {
    /// Decodes `metadata.managedFields`; absent is empty, malformed is an error.
    pub fn decode(object: &Value) -> Result<Self, String> {
        let Some(list) = object.pointer("/metadata/managedFields").filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let list = list.as_array().ok_or("managedFields must be a list")?;
        let mut entries = Vec::with_capacity(list.len());
        for item in list {
            let text = |f: &str| item.get(f).and_then(Value::as_str).map(str::to_owned);
            let operation = match text("operation").as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                other => return Err(format!("invalid operation {other:?}")),
            };
            let fields = match (text("fieldsType").as_deref(), item.get("fieldsV1")) {
                (Some("FieldsV1"), Some(v)) => FieldSet::from_fields_v1(v)?,
                (None, None) => FieldSet::new(),
                (t, _) => return Err(format!("unsupported fieldsType {t:?}")),
            };
            entries.push(Entry {
                manager: text("manager").unwrap_or_default(),
                operation,
                api_version: text("apiVersion").unwrap_or_default(),
                time: text("time"),
                subresource: text("subresource"),
                fields,
            });
        }
        Ok(Self(entries))
    }

    /// The `managedFields` list, Apply entries first, then by time.
    pub fn encode(&self) -> Value {
        let mut entries: Vec<&Entry> = self.0.iter().collect();
        entries.sort_by(|a, b| (a.operation, &a.time, &a.manager).cmp(&(b.operation, &b.time, &b.manager)));
        Value::Array(
            entries
                .into_iter()
                .map(|e| {
                    let mut v = json!({
                        "manager": e.manager,
                        "operation": e.operation.as_str(),
                        "apiVersion": e.api_version,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": e.fields.to_fields_v1(),
                    });
                    if let Some(time) = &e.time {
                        v["time"] = json!(time);
                    }
                    if let Some(sub) = &e.subresource {
                        v["subresource"] = json!(sub);
                    }
                    v
                })
                .collect(),
        )
    }

    fn take(&mut self, writer: &Writer) -> Option<Entry> {
        let pos = self.0.iter().position(|e| e.is(writer))?;
        Some(self.0.remove(pos))
    }

    /// Records an ordinary write of `new` over `old`: the writer takes the fields it changed.
    pub fn record_update(&mut self, old: &Value, new: &Value, writer: &Writer, scope: Scope, now: &str) {
        let cmp = compare(old, new, scope);
        let changed = cmp.changed();
        let previous = self.take(writer);
        for entry in &mut self.0 {
            entry.fields = entry.fields.difference(&changed).difference(&cmp.removed);
        }
        let before = previous.as_ref().map(|e| e.fields.clone()).unwrap_or_default();
        let fields = before.union(&changed).difference(&cmp.removed);
        let time = match &previous {
            Some(p) if cmp.is_empty() && p.fields == fields => p.time.clone(),
            _ => Some(now.to_owned()),
        };
        self.0.push(entry_for(writer, fields, time));
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Applies `config` to `live` for `writer`; returns the new object or the conflicts (unless `force`).
    pub fn apply(
        &mut self,
        live: &Value,
        config: &Value,
        writer: &Writer,
        scope: Scope,
        force: bool,
        now: &str,
    ) -> Result<Value, Vec<Conflict>> {
        let mut merged = live.clone();
        merge::merge(&mut merged, config);
        let applied = FieldSet::of(config, scope);
        let previous = self.take(writer);
        let last = previous.as_ref().map(|e| e.fields.clone()).unwrap_or_default();
        let others = self.0.iter().fold(FieldSet::new(), |all, e| all.union(&e.fields));
        let keep = applied.union(&others);
        for path in last.difference(&keep).iter() {
            if !keep.has_descendant(path) {
                merge::remove(&mut merged, path, &keep);
            }
        }
        let cmp = compare(live, &merged, scope);
        let changed = cmp.changed();
        let conflicts: Vec<Conflict> = self
            .0
            .iter()
            .flat_map(|e| {
                e.fields
                    .intersection(&changed)
                    .iter()
                    .map(|p| Conflict {
                        manager: e.describe(),
                        path: p.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if !force && !conflicts.is_empty() {
            if let Some(previous) = previous {
                self.0.push(previous);
            }
            return Err(conflicts);
        }
        for entry in &mut self.0 {
            entry.fields = entry.fields.difference(&changed).difference(&cmp.removed);
        }
        let time = match &previous {
            Some(p) if cmp.is_empty() && p.fields == applied => p.time.clone(),
            _ => Some(now.to_owned()),
        };
        self.0.push(entry_for(writer, applied, time));
        self.0.retain(|e| !e.fields.is_empty());
        Ok(merged)
    }
}

fn entry_for(writer: &Writer, fields: FieldSet, time: Option<String>) -> Entry {
    Entry {
        manager: writer.manager.clone(),
        operation: writer.operation,
        api_version: writer.api_version.clone(),
        time,
        subresource: writer.subresource.clone(),
        fields,
    }
}

/// kube's conflict message: `Apply failed with 1 conflict: conflict with "x" using apps/v1: .spec.replicas`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let plural = if n == 1 { "" } else { "s" };
    let body = match conflicts {
        [one] => format!("conflict with {}: {}", one.manager, display(&one.path)),
        many => {
            let mut managers: Vec<&str> = many.iter().map(|c| c.manager.as_str()).collect();
            managers.sort_unstable();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in managers {
                lines.push(format!("conflicts with {manager}:"));
                for c in many.iter().filter(|c| c.manager == manager) {
                    lines.push(format!("- {}", display(&c.path)));
                }
            }
            lines.join("\n")
        }
    };
    format!("Apply failed with {n} conflict{plural}: {body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str, operation: Operation) -> Writer {
        Writer {
            manager: manager.into(),
            operation,
            api_version: "apps/v1".into(),
            subresource: None,
        }
    }

    fn fields(managers: &Managers, manager: &str) -> Value {
        managers
            .0
            .iter()
            .find(|e| e.manager == manager)
            .map(|e| e.fields.to_fields_v1())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn update_moves_ownership_of_changed_fields() {
        let mut m = Managers::default();
        let empty = json!({});
        let v1 = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        m.record_update(
            &empty,
            &v1,
            &writer("creator", Operation::Update),
            Scope::All,
            "t1",
        );
        let v2 = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3}});
        m.record_update(&v1, &v2, &writer("scaler", Operation::Update), Scope::All, "t2");
        assert_eq!(
            fields(&m, "creator"),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}})
        );
        assert_eq!(fields(&m, "scaler"), json!({"f:spec": {"f:replicas": {}}}));
        m.record_update(&v2, &v2, &writer("noop", Operation::Update), Scope::All, "t3");
        assert_eq!(m.0.len(), 2, "a write that changes nothing adds no entry");
        let v3 = json!({"spec": {"replicas": 3}});
        m.record_update(&v2, &v3, &writer("scaler", Operation::Update), Scope::All, "t4");
        assert_eq!(m.0.len(), 1, "the creator's only field is gone, so is its entry");
    }

    #[test]
    fn apply_conflicts_forces_and_removes_unapplied_fields() {
        let mut m = Managers::default();
        let config = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2}});
        let applier = writer("kubectl", Operation::Apply);
        let live = m
            .apply(&json!({}), &config, &applier, Scope::All, false, "t1")
            .unwrap();
        assert_eq!(live, config);
        let same = m
            .apply(&live, &config, &applier, Scope::All, false, "t2")
            .unwrap();
        assert_eq!(same, live);
        assert_eq!(m.0[0].time.as_deref(), Some("t1"), "a no-op apply keeps the time");

        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        m.record_update(
            &live,
            &scaled,
            &writer("kubectl-scale", Operation::Update),
            Scope::All,
            "t3",
        );
        let conflicts = m
            .apply(&scaled, &config, &applier, Scope::All, false, "t4")
            .unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        let kept = m.clone();
        let fewer = json!({"metadata": {"labels": {"a": "1"}}});
        let out = m
            .apply(&scaled, &fewer, &applier, Scope::All, false, "t5")
            .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 5}})
        );
        assert_eq!(
            fields(&m, "kubectl"),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}})
        );

        let mut forced = kept;
        let out = forced
            .apply(&scaled, &config, &applier, Scope::All, true, "t6")
            .unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(forced.0.len(), 1, "the scaler lost its only field");
    }

    #[test]
    fn shared_fields_survive_one_manager_leaving() {
        let mut m = Managers::default();
        let config = json!({"data": {"k": "v"}});
        let live = m
            .apply(
                &json!({}),
                &config,
                &writer("a", Operation::Apply),
                Scope::All,
                false,
                "t",
            )
            .unwrap();
        let live = m
            .apply(
                &live,
                &config,
                &writer("b", Operation::Apply),
                Scope::All,
                false,
                "t",
            )
            .unwrap();
        let live = m
            .apply(
                &live,
                &json!({}),
                &writer("a", Operation::Apply),
                Scope::All,
                false,
                "t",
            )
            .unwrap();
        assert_eq!(live, config, "b still applies data.k");
        let live = m
            .apply(
                &live,
                &json!({}),
                &writer("b", Operation::Apply),
                Scope::All,
                false,
                "t",
            )
            .unwrap();
        assert_eq!(live, json!({}));
        assert!(m.0.is_empty());
    }

    #[test]
    fn managed_fields_round_trip_and_reject_garbage() {
        let mut m = Managers::default();
        m.record_update(
            &json!({}),
            &json!({"spec": {"replicas": 1}}),
            &Writer {
                subresource: Some("status".into()),
                ..writer("x", Operation::Update)
            },
            Scope::All,
            "2026-01-01T00:00:00Z",
        );
        let object = json!({"metadata": {"managedFields": m.encode()}});
        assert_eq!(Managers::decode(&object).unwrap(), m);
        assert_eq!(object["metadata"]["managedFields"][0]["subresource"], "status");
        assert!(Managers::decode(&json!({"metadata": {"managedFields": [{"operation": "Bogus"}]}})).is_err());
        assert!(Managers::decode(&json!({"metadata": {"managedFields": "x"}})).is_err());
    }
}
