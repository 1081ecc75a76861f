//! Watches as kube-apiserver serves them ("Efficient detection of changes"
//! in the API concepts): resume from a resourceVersion, synthetic ADDED
//! events without one, BOOKMARKs when allowed, 410 Gone for a version
//! older than the history kept, label changes seen through a selector as
//! ADDED/DELETED, and streams the server closes.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::support::Cluster;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

async fn next(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("an event within 10 s")
        .expect("no transport error")
        .expect("the stream is open")
}

fn name_of(e: &WatchEvent<ConfigMap>) -> (&'static str, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(b) => ("BOOKMARK", b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR", e.message.clone()),
    }
}

#[tokio::test]
async fn without_a_resource_version_a_watch_starts_with_the_current_state() {
    let c = Cluster::start("watch-state").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    configmaps.create(&PostParams::default(), &cm("a", json!({"x": "1"}))).await.unwrap();
    configmaps.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    for rv in ["", "0"] {
        let mut s = configmaps.watch(&WatchParams::default().labels("x=1").timeout(10), rv).await.unwrap().boxed();
        assert_eq!(name_of(&next(&mut s).await), ("ADDED", "a".into()), "resourceVersion {rv:?}");
    }
}

#[tokio::test]
async fn bookmarks_carry_the_version_seen_and_a_resumed_watch_misses_nothing() {
    let c = Cluster::start("watch-bookmark").await;
    c.emu.set_bookmark_interval(Duration::from_millis(50));
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let from = configmaps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut s = configmaps.watch(&WatchParams::default().timeout(10), &from).await.unwrap().boxed();
    let created = configmaps.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    assert_eq!(name_of(&next(&mut s).await), ("ADDED", "a".into()));
    let bookmark = loop {
        if let WatchEvent::Bookmark(b) = next(&mut s).await {
            break b;
        }
    };
    assert_eq!(bookmark.metadata.resource_version, created.metadata.resource_version.clone().unwrap());
    assert_eq!(bookmark.types.kind, "ConfigMap");

    // The server closes the stream; a watch resumed from the bookmark gets what happened meanwhile.
    assert_eq!(c.emu.open_watches(), 1);
    c.emu.close_watches();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = s.try_next().await.unwrap() {
            assert!(matches!(e, WatchEvent::Bookmark(_)), "only bookmarks before the end: {:?}", name_of(&e));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends when the server closes it");
    configmaps.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "edited"}}))).await.unwrap();
    let mut s = configmaps
        .watch(&WatchParams::default().timeout(10), &bookmark.metadata.resource_version)
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next(&mut s).await), ("MODIFIED", "a".into()));
    let mut quiet =
        configmaps.watch(&WatchParams::default().disable_bookmarks().timeout(1), &from).await.unwrap().boxed();
    let mut events = Vec::new();
    while let Some(e) = quiet.try_next().await.unwrap() {
        events.push(name_of(&e).0);
    }
    assert_eq!(events, ["ADDED", "MODIFIED"], "no bookmark unless asked for");
}

#[tokio::test]
async fn a_version_older_than_the_history_is_410_gone() {
    let c = Cluster::start("watch-gone").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let from = configmaps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    configmaps.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    c.emu.compact();
    let mut s = configmaps.watch(&WatchParams::default().timeout(10), &from).await.unwrap().boxed();
    match next(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(e.message.starts_with(&format!("too old resource version: {from} (")), "{}", e.message);
        }
        other => panic!("expected ERROR 410, got {:?}", name_of(&other)),
    }
    assert!(s.try_next().await.unwrap().is_none(), "the stream ends after the error");
    let (code, body) =
        c.raw("GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc", None, b"").await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn a_label_change_is_added_or_deleted_for_a_selector() {
    let c = Cluster::start("watch-labels").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    configmaps.create(&PostParams::default(), &cm("a", json!({"x": "1"}))).await.unwrap();
    let from = configmaps.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut s = configmaps.watch(&WatchParams::default().labels("x=1").timeout(10), &from).await.unwrap().boxed();
    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"x": v}}}));
    configmaps.patch("a", &PatchParams::default(), &label(None)).await.unwrap();
    assert_eq!(name_of(&next(&mut s).await), ("DELETED", "a".into()), "no longer selected");
    configmaps.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "w"}}))).await.unwrap();
    configmaps.patch("a", &PatchParams::default(), &label(Some("1"))).await.unwrap();
    assert_eq!(name_of(&next(&mut s).await), ("ADDED", "a".into()), "selected again; the unselected edit is not seen");
}
