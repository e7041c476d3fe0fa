//! The Kubernetes API source: one watcher per kind (Services, EndpointSlices, Nodes), each event converted to a
//! compact change at once (no object store is kept), relists turned into the deletions they imply.
use std::{collections::HashSet, fmt::Debug};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::inputs::{Change, Converter, Kind, ObjKey, key_of};

/// Starts the three watchers; each kind is `Listed` once its initial list is complete.
pub fn spawn_kube(client: Client) -> mpsc::UnboundedReceiver<Vec<Change>> {
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_watcher::<Service>(Api::all(client.clone()), Kind::Service, tx.clone());
    spawn_watcher::<EndpointSlice>(Api::all(client.clone()), Kind::EndpointSlice, tx.clone());
    spawn_watcher::<Node>(Api::all(client), Kind::Node, tx);
    rx
}

/// Objects of one kind that turn into changes.
pub trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    fn change(conv: &mut Converter, obj: &Self) -> Change;
    fn deleted(key: ObjKey) -> Change;
}

impl Watched for Service {
    fn change(conv: &mut Converter, obj: &Self) -> Change {
        conv.service(obj)
    }
    fn deleted(key: ObjKey) -> Change {
        Change::Service(key, None)
    }
}

impl Watched for EndpointSlice {
    fn change(conv: &mut Converter, obj: &Self) -> Change {
        conv.slice(obj)
    }
    fn deleted(key: ObjKey) -> Change {
        Change::Slice(key, None)
    }
}

impl Watched for Node {
    fn change(conv: &mut Converter, obj: &Self) -> Change {
        conv.node(obj)
    }
    fn deleted(key: ObjKey) -> Change {
        Change::Node(key.name, None)
    }
}

fn spawn_watcher<K>(api: Api<K>, kind: Kind, tx: mpsc::UnboundedSender<Vec<Change>>)
where
    K: Watched,
    K::DynamicType: Default,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut events = Events::<K>::new(kind);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    let changes = events.handle(e);
                    if !changes.is_empty() && tx.send(changes).is_err() {
                        return;
                    }
                }
                // The watcher recovers by itself (with backoff); say why it had to.
                Err(e) => warn!(?kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// Turns one kind's watcher events into changes (pure; keeps only the keys of the objects it has seen).
pub struct Events<K> {
    kind: Kind,
    conv: Converter,
    known: HashSet<ObjKey>,
    /// Keys listed since the last `Init` (a relist in progress), and their changes: a relist is sent as one batch.
    relisting: Option<(HashSet<ObjKey>, Vec<Change>)>,
    listed: bool,
    _kind: std::marker::PhantomData<K>,
}

impl<K: Watched> Events<K> {
    pub fn new(kind: Kind) -> Self {
        Events {
            kind,
            conv: Converter::default(),
            known: HashSet::new(),
            relisting: None,
            listed: false,
            _kind: std::marker::PhantomData,
        }
    }

    pub fn handle(&mut self, event: watcher::Event<K>) -> Vec<Change> {
        match event {
            watcher::Event::Apply(o) => {
                let key = self.key(&o);
                self.known.insert(key);
                vec![K::change(&mut self.conv, &o)]
            }
            watcher::Event::Delete(o) => {
                let key = self.key(&o);
                self.known.remove(&key);
                vec![K::deleted(key)]
            }
            watcher::Event::Init => {
                self.relisting = Some(Default::default());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                let key = self.key(&o);
                let change = K::change(&mut self.conv, &o);
                let (keys, changes) = self.relisting.get_or_insert_with(Default::default);
                keys.insert(key);
                changes.push(change);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let (listed, mut out) = self.relisting.take().unwrap_or_default();
                out.extend(
                    self.known
                        .iter()
                        .filter(|k| !listed.contains(*k))
                        .cloned()
                        .map(K::deleted),
                );
                self.known = listed;
                self.conv.strings.collect();
                if !std::mem::replace(&mut self.listed, true) {
                    info!(kind = ?self.kind, objects = self.known.len(), "initial list complete");
                    out.push(Change::Listed(self.kind));
                }
                out
            }
        }
    }

    fn key(&mut self, o: &K) -> ObjKey {
        let mut key = key_of(o.meta(), &mut self.conv.strings);
        if self.kind == Kind::Node {
            key.namespace = self.conv.strings.get("");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;

    use super::*;

    fn named<K: Resource<DynamicType = ()> + Default>(name: &str) -> K {
        let mut o = K::default();
        o.meta_mut().name = Some(name.into());
        o.meta_mut().namespace = Some("default".into());
        o
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Service(k, Some(_)) => format!("+{}", k.name),
                Change::Service(k, None) => format!("-{}", k.name),
                Change::Listed(k) => format!("listed {k:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn listed_once_after_the_initial_list_then_per_object_changes() {
        let mut ev = Events::<Service>::new(Kind::Service);
        assert!(ev.handle(Event::Init).is_empty());
        assert!(
            ev.handle(Event::InitApply(named("a"))).is_empty(),
            "a list is sent as one batch"
        );
        assert!(ev.handle(Event::InitApply(named("b"))).is_empty());
        assert_eq!(names(&ev.handle(Event::InitDone)), ["+a", "+b", "listed Service"]);
        assert_eq!(names(&ev.handle(Event::Apply(named("c")))), ["+c"]);
        assert_eq!(names(&ev.handle(Event::Delete(named("a")))), ["-a"]);
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_lists() {
        let mut ev = Events::<Service>::new(Kind::Service);
        ev.handle(Event::Init);
        ev.handle(Event::InitApply(named("a")));
        ev.handle(Event::InitApply(named("b")));
        ev.handle(Event::InitDone);
        ev.handle(Event::Init);
        ev.handle(Event::InitApply(named("b")));
        assert_eq!(
            names(&ev.handle(Event::InitDone)),
            ["+b", "-a"],
            "listed only once"
        );
    }
}
