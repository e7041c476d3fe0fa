//! Deployment controller: rolls a Deployment's pod template out through ReplicaSets and reports its status.
//!
//! Each pass over a Deployment mirrors kube-controller-manager: claim ReplicaSets (adopt, release), find the one
//! for the current template (bumping its revision on a rollback), then either scale proportionally (paused or
//! resized) or take one RollingUpdate/Recreate step, delete old history, and write the status `kubectl rollout
//! status` reads. The decisions are pure functions in `rollout`, `status` and `strategy`.

pub mod hash;
pub mod rollout;
pub mod status;
pub mod strategy;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use self::rollout::{Plan, Rs};
use self::strategy::{Kind, Strategy};
use self::view::{DESIRED, MAX, REVISION, REVISION_HISTORY};
use super::cache::{self, Caches};
use super::events;

const DEBOUNCE: Duration = Duration::from_millis(10);
/// How often unfinished rollouts are looked at again without a change (minReadySeconds, progress deadlines).
const RETRY: Duration = Duration::from_secs(1);
/// Writes the cache has not shown after this long are no longer waited for.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Objects this controller wrote that the cache has not reflected yet: until they show up, the Deployment is not
/// reconciled again, so a pass never decides from the state before its own writes.
#[derive(Default)]
struct Expectations {
    /// ReplicaSet name and the resourceVersion it must reach (None: it must be gone).
    sets: Vec<(String, Option<u64>)>,
    /// The Deployment's own resourceVersion after a write.
    deployment: Option<u64>,
    since: Option<Instant>,
}

fn rv(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

impl Expectations {
    fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.deployment.is_none()
    }

    fn satisfied(&mut self, d: &Deployment, sets: &[&ReplicaSet]) -> bool {
        self.sets.retain(|(name, want)| {
            let found = sets.iter().find(|r| r.metadata.name.as_ref() == Some(name));
            match (want, found) {
                (None, found) => found.is_some(),
                (Some(_), None) => true,
                (Some(w), Some(rs)) => rv(&rs.metadata).is_some_and(|have| have < *w),
            }
        });
        if self
            .deployment
            .is_some_and(|w| rv(&d.metadata).is_none_or(|have| have >= w))
        {
            self.deployment = None;
        }
        let expired = self.since.is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        self.is_empty() || expired
    }

    fn wrote_set(&mut self, rs: &ReplicaSet) {
        if let Some(v) = rv(&rs.metadata) {
            self.sets.push((rs.name_any(), Some(v)));
        }
        self.since = Some(Instant::now());
    }

    fn wrote_deployment(&mut self, d: &Deployment) {
        self.deployment = rv(&d.metadata).max(self.deployment);
        self.since = Some(Instant::now());
    }
}

/// A write that failed; the pass stops and is retried.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
struct WriteError {
    what: String,
    source: kube::Error,
}

fn failed(what: impl Into<String>) -> impl FnOnce(kube::Error) -> WriteError {
    let what = what.into();
    move |source| WriteError { what, source }
}

/// Runs until the caches stop.
pub async fn run(client: Client, caches: Arc<Caches>) {
    let mut expectations: HashMap<String, Expectations> = HashMap::new();
    let mut rounds = cache::Rounds::start(&caches, DEBOUNCE, RETRY).await;
    loop {
        let unfinished = reconcile_all(&client, &caches, &mut expectations).await || !expectations.is_empty();
        if !rounds.next(unfinished).await {
            return;
        }
    }
}

/// One pass over every Deployment; true when some rollout is unfinished or a write failed.
async fn reconcile_all(
    client: &Client,
    caches: &Caches,
    expectations: &mut HashMap<String, Expectations>,
) -> bool {
    let deployments = caches.deployments.state();
    let sets = caches.replicasets.state();
    let pods = caches.pods.state();
    let uids: Vec<String> = deployments
        .iter()
        .filter_map(|d| d.metadata.uid.clone())
        .collect();
    expectations.retain(|uid, _| uids.contains(uid));
    let mut unsettled = false;
    for d in &deployments {
        let ns = d.namespace().unwrap_or_default();
        let in_ns: Vec<&ReplicaSet> = sets
            .iter()
            .map(|r| &**r)
            .filter(|r| r.namespace().as_deref() == Some(&ns))
            .collect();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        if let Some(e) = expectations.get_mut(&uid) {
            if !e.satisfied(d, &in_ns) {
                unsettled = true;
                continue;
            }
            expectations.remove(&uid);
        }
        let pods_in_ns: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| p.namespace().as_deref() == Some(&ns))
            .collect();
        let expect = expectations.entry(uid.clone()).or_default();
        match reconcile(client, d, &in_ns, &pods_in_ns, expect).await {
            Ok(done) => unsettled |= !done,
            Err(e) => {
                tracing::debug!(%ns, deployment = %d.name_any(), error = %e, "reconcile failed; retrying");
                unsettled = true;
            }
        }
        if expectations.get(&uid).is_some_and(Expectations::is_empty) {
            expectations.remove(&uid);
        }
    }
    unsettled
}

/// The ReplicaSet for the current template, the others, and the views of both.
struct Sets<'a> {
    new: Option<&'a ReplicaSet>,
    old: Vec<&'a ReplicaSet>,
}

fn split<'a>(d: &Deployment, owned: &[&'a ReplicaSet]) -> Sets<'a> {
    let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut sorted = owned.to_vec();
    sorted.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let new = sorted.iter().copied().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| hash::equal_ignoring_hash(t, &template))
    });
    let old = sorted
        .into_iter()
        .filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .collect();
    Sets { new, old }
}

/// One pass over `d`; Ok(true) when its rollout is complete (nothing to look at until something changes).
async fn reconcile(
    client: &Client,
    d: &Deployment,
    sets: &[&ReplicaSet],
    pods: &[&Pod],
    expect: &mut Expectations,
) -> Result<bool, WriteError> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(true);
    };
    if super::selector::is_empty(&spec.selector) {
        return Ok(true);
    }
    let strategy = match strategy::resolve(spec) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%ns, deployment = %name, error = %e, "invalid strategy");
            return Ok(true);
        }
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1);

    let claim = view::claim(d, sets);
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let changes = claim
        .adopt
        .iter()
        .map(|rs| (rs, "adopting", view::with_owner(&rs.metadata, view::owner_ref(d))))
        .chain(
            claim
                .release
                .iter()
                .map(|rs| (rs, "releasing", view::without_owner(&rs.metadata, &uid))),
        );
    for (rs, what, refs) in changes {
        let patch = json!({"metadata": {"ownerReferences": refs}});
        let rs = rs_api
            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(failed(format!("{what} ReplicaSet {}", rs.name_any())))?;
        expect.wrote_set(&rs);
    }
    let found = split(d, &claim.owned);
    let mut old: Vec<Rs> = found
        .old
        .iter()
        .map(|rs| view::view(rs, pods, min_ready, now))
        .collect();
    let mut new: Option<Rs> = found.new.map(|rs| view::view(rs, pods, min_ready, now));
    let mut status = d.status.clone().unwrap_or_default();

    if d.metadata.deletion_timestamp.is_some() {
        return write_status(
            client,
            d,
            &strategy,
            new.as_ref(),
            &old,
            status,
            now,
            expect,
            false,
        )
        .await;
    }

    if let (Some(rs), Some(view)) = (found.new, new.as_mut()) {
        sync_new_revision(client, d, rs, view, &old, expect).await?;
        status::new_rs_condition(d, &mut status, &view.name, false, now);
    }

    let paused = spec.paused.unwrap_or(false);
    let scaling = rollout::is_scaling_event(replicas, new.as_ref(), &old);
    let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let plan = if paused || scaling {
        rollout::proportional(&strategy, replicas, status_replicas, new.as_ref(), &old)
    } else {
        match strategy.kind {
            Kind::RollingUpdate => rollout::rolling(&strategy, replicas, new.as_ref(), &old),
            Kind::Recreate => rollout::recreate(replicas, new.as_ref(), &old),
        }
    };
    tracing::debug!(%ns, deployment = %name, ?plan, paused, scaling, "reconciling");
    let acted = !plan.scales.is_empty() || plan.create_new.is_some();
    if let Some(size) = plan.create_new {
        match create_new(client, d, &strategy, size, rollout::new_revision(&old), expect).await? {
            Some(rs) => {
                let v = view::view(&rs, pods, min_ready, now);
                status::new_rs_condition(d, &mut status, &v.name, true, now);
                new = Some(v);
            }
            None => {
                // A name collision: collisionCount went up, the next pass hashes differently.
                return Ok(false);
            }
        }
    }
    apply(client, d, &strategy, &plan, new.as_mut(), &mut old, expect).await?;

    let recorded_complete = d.status.as_ref().is_some_and(|s| status::complete(d, s));
    if paused || (!scaling && !acted && recorded_complete) {
        let limit = spec.revision_history_limit;
        for victim in rollout::history_cleanup(limit, &old) {
            match rs_api.delete(&victim, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(failed(format!("deleting old ReplicaSet {victim}"))(e)),
            }
            expect.sets.push((victim.clone(), None));
            expect.since = Some(Instant::now());
            old.retain(|r| r.name != victim);
        }
    }
    let rollout = !paused && !scaling;
    write_status(
        client,
        d,
        &strategy,
        new.as_ref(),
        &old,
        status,
        now,
        expect,
        rollout,
    )
    .await
}

/// Brings the current ReplicaSet's revision above every old one (a rollback reuses an old ReplicaSet) and its
/// minReadySeconds in line, and the Deployment's revision annotation in line with it.
async fn sync_new_revision(
    client: &Client,
    d: &Deployment,
    rs: &ReplicaSet,
    view: &mut Rs,
    old: &[Rs],
    expect: &mut Expectations,
) -> Result<(), WriteError> {
    let ns = d.namespace().unwrap_or_default();
    let want = rollout::new_revision(old);
    let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    if view.revision < want || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
        let mut annotations = serde_json::Map::new();
        for (k, v) in view::copied_annotations(d) {
            annotations.insert(k, json!(v));
        }
        if view.revision < want {
            annotations.insert(REVISION.to_owned(), json!(want.to_string()));
            if view.revision > 0 {
                let mut history: Vec<String> = rs
                    .annotations()
                    .get(REVISION_HISTORY)
                    .map(|h| h.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                history.push(view.revision.to_string());
                annotations.insert(REVISION_HISTORY.to_owned(), json!(history.join(",")));
            }
        }
        let patch = json!({"metadata": {"annotations": annotations}, "spec": {"minReadySeconds": min_ready.unwrap_or(0)}});
        let updated = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(failed(format!(
                "updating revision of ReplicaSet {}",
                rs.name_any()
            )))?;
        expect.wrote_set(&updated);
        view.revision = view.revision.max(want);
    }
    set_deployment_revision(client, d, view.revision, expect).await
}

async fn set_deployment_revision(
    client: &Client,
    d: &Deployment,
    revision: i64,
    expect: &mut Expectations,
) -> Result<(), WriteError> {
    let value = revision.to_string();
    if d.annotations().get(REVISION) == Some(&value) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {REVISION: value}}});
    let updated = Api::<Deployment>::namespaced(client.clone(), &d.namespace().unwrap_or_default())
        .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(failed("updating the Deployment's revision"))?;
    expect.wrote_deployment(&updated);
    Ok(())
}

/// The ReplicaSet for the Deployment's current template, named after the template hash.
fn new_replicaset(d: &Deployment, strategy: &Strategy, size: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = hash::compute(&spec.template, collision);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(hash::LABEL.to_owned(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(hash::LABEL.to_owned(), hash.clone());
    let mut annotations = view::copied_annotations(d);
    annotations.insert(REVISION.to_owned(), revision.to_string());
    annotations.insert(DESIRED.to_owned(), spec.replicas.unwrap_or(1).to_string());
    annotations.insert(
        MAX.to_owned(),
        (spec.replicas.unwrap_or(1) + strategy.max_surge).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: meta.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![view::owner_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(size),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Creates the current template's ReplicaSet; None after a hash collision (collisionCount was raised).
async fn create_new(
    client: &Client,
    d: &Deployment,
    strategy: &Strategy,
    size: i32,
    revision: i64,
    expect: &mut Expectations,
) -> Result<Option<ReplicaSet>, WriteError> {
    let ns = d.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let rs = new_replicaset(d, strategy, size, revision);
    let rs_name = rs.name_any();
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            expect.wrote_set(&created);
            if size > 0 {
                scaled_event(client, d, &rs_name, 0, size).await;
            }
            set_deployment_revision(client, d, revision, expect).await?;
            Ok(Some(created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get(&rs_name)
                .await
                .map_err(failed(format!("reading ReplicaSet {rs_name}")))?;
            let ours = view::controller_of(&existing.metadata).map(|o| &o.uid) == d.metadata.uid.as_ref();
            let same = existing
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .zip(d.spec.as_ref().map(|s| &s.template))
                .is_some_and(|(a, b)| hash::equal_ignoring_hash(a, b));
            if ours && same {
                // The cache had not shown it yet.
                expect.wrote_set(&existing);
                return Ok(Some(existing));
            }
            let count = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
            tracing::info!(%ns, deployment = %d.name_any(), replicaset = %rs_name, count, "pod-template-hash collision");
            let patch = json!({"status": {"collisionCount": count}});
            let updated = Api::<Deployment>::namespaced(client.clone(), &ns)
                .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(failed("raising collisionCount"))?;
            expect.wrote_deployment(&updated);
            Ok(None)
        }
        Err(e) => Err(failed(format!("creating ReplicaSet {rs_name}"))(e)),
    }
}

async fn scaled_event(client: &Client, d: &Deployment, rs: &str, from: i32, to: i32) {
    let direction = if to > from { "up" } else { "down" };
    events::record(
        client,
        d,
        "Normal",
        "ScalingReplicaSet",
        "Scale",
        &format!("Scaled {direction} replica set {rs} from {from} to {to}"),
    )
    .await;
}

/// Writes the sizes of `plan` (with the desired/max annotations) and records them in the views.
async fn apply(
    client: &Client,
    d: &Deployment,
    strategy: &Strategy,
    plan: &Plan,
    mut new: Option<&mut Rs>,
    old: &mut [Rs],
    expect: &mut Expectations,
) -> Result<(), WriteError> {
    let ns = d.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    for s in &plan.scales {
        let patch = json!({
            "metadata": {"annotations": {DESIRED: replicas.to_string(), MAX: (replicas + strategy.max_surge).to_string()}},
            "spec": {"replicas": s.to},
        });
        let updated = api
            .patch(&s.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(failed(format!("scaling ReplicaSet {}", s.name)))?;
        expect.wrote_set(&updated);
        if s.from != s.to {
            scaled_event(client, d, &s.name, s.from, s.to).await;
        }
        let target = new
            .as_deref_mut()
            .filter(|n| n.name == s.name)
            .or_else(|| old.iter_mut().find(|r| r.name == s.name));
        if let Some(rs) = target {
            rs.replicas = s.to;
            rs.desired_annotation = Some(replicas);
            rs.max_annotation = Some(replicas + strategy.max_surge);
        }
    }
    Ok(())
}

/// Computes the status (with the Progressing condition when `rollout`) and writes it if it changed; Ok(true)
/// when the rollout is complete.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are what a status is made of"
)]
async fn write_status(
    client: &Client,
    d: &Deployment,
    strategy: &Strategy,
    new: Option<&Rs>,
    old: &[Rs],
    previous: DeploymentStatus,
    now: Timestamp,
    expect: &mut Expectations,
    rollout: bool,
) -> Result<bool, WriteError> {
    let mut all: Vec<Rs> = old.to_vec();
    all.extend(new.cloned());
    let mut base = d.clone();
    base.status = Some(previous);
    let mut status = status::calculate(&base, strategy.max_unavailable, new, &all, now);
    if rollout {
        // Progress is judged against what was recorded, not against this pass's own conditions.
        status::progress(d, new.map(|n| n.name.as_str()), &mut status, now);
    }
    status::pause_condition(d, &mut status, now);
    let done = status::complete(d, &status);
    if d.status.as_ref() == Some(&status) {
        return Ok(done);
    }
    let patch = json!({"status": status});
    let updated = Api::<Deployment>::namespaced(client.clone(), &d.namespace().unwrap_or_default())
        .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(failed("writing status"))?;
    expect.wrote_deployment(&updated);
    Ok(done)
}
