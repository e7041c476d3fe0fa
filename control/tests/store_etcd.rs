//! The store conformance suite and durability checks against the etcd backend (a real etcd on loopback).

mod etcd_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use control::store::etcd::EtcdStore;
use control::store::{Error, Store, WatchItem, conformance};
use etcd_support::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_passes_conformance() {
    let etcd = Etcd::start().await;
    let counter = AtomicUsize::new(0);
    conformance::run_all(|| {
        let root = format!("/skiff-ctl-{}", counter.fetch_add(1, Ordering::SeqCst));
        let options = etcd.options(&root);
        async move { Arc::new(EtcdStore::connect(options).await.expect("connect")) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_are_etcd_mod_revisions_and_survive_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let store = EtcdStore::connect(etcd.options("/skiff-ctl")).await.unwrap();
    let created = store.create("/p/a", b"v1".to_vec()).await.unwrap();
    let updated = store.update("/p/a", b"v2".to_vec(), None).await.unwrap();
    assert_eq!(updated.create_revision, created.create_revision);

    etcd.kill();
    let down = tokio::time::timeout(Duration::from_secs(10), store.get("/p/a"))
        .await
        .expect("a request against a dead etcd fails within its timeout");
    assert!(matches!(down, Err(Error::Unavailable(_))), "{down:?}");

    etcd.restart().await;
    let mut got = None;
    for _ in 0..100 {
        if let Ok(found) = store.get("/p/a").await {
            got = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.expect("the same client recovers and the key survived");
    assert_eq!(
        (got.value.as_slice(), got.mod_revision),
        (b"v2".as_slice(), updated.mod_revision)
    );
    let mut stream = store.watch("/p/", created.mod_revision - 1).await.unwrap();
    let first = stream.recv().await;
    let Some(Ok(WatchItem::Event(first))) = first else {
        panic!("history replays after the restart, got {first:?}")
    };
    assert_eq!(first.revision, created.mod_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_bounds_history() {
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(etcd.options("/skiff-ctl")).await.unwrap();
    let first = store.create("/lease/a", b"0".to_vec()).await.unwrap();
    for i in 1..30u8 {
        store.update("/lease/a", vec![i], None).await.unwrap();
    }
    let compactor = tokio::spawn(store.clone().run_compactor(Duration::from_millis(50), 10));
    let current = store.current_revision().await.unwrap();
    let mut compacted = 0;
    for _ in 0..100 {
        compacted = store.compacted_revision().await.unwrap();
        if compacted > first.mod_revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    compactor.abort();
    assert!(
        compacted > first.mod_revision && compacted + 10 >= current,
        "compacted {compacted}, current {current}"
    );
    let old = store.watch("/lease/", first.mod_revision).await;
    assert!(matches!(old, Err(Error::Compacted { .. })), "{old:?}");
    assert_eq!(store.get("/lease/a").await.unwrap().unwrap().value, vec![29]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_larger_than_grpcs_default_message_limit_succeeds() {
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(etcd.options("/skiff-ctl-big")).await.unwrap();
    // 600 values of 10 KiB: about 6 MiB in one range response, over gRPC's 4 MiB default.
    let value = vec![b'x'; 10 * 1024];
    for i in 0..600 {
        store
            .create(&format!("/big/{i:04}"), value.clone())
            .await
            .unwrap();
    }
    let list = store
        .list("/big/", control::store::ListOptions::default())
        .await
        .expect("a 6 MiB list");
    assert_eq!(list.items.len(), 600);
}
