use super::*;

fn pod(uid: &str, app: &str) -> PodMeta {
    PodMeta {
        uid: uid.to_owned(),
        namespace: "shop".to_owned(),
        name: format!("{app}-x"),
        node: "n1".to_owned(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_kept_for_the_grace_then_forgotten() {
    let cache = PodCache::new(Duration::from_secs(300));
    cache.apply(pod("u1", "web"));
    let (version, meta) = cache.get("u1").unwrap();
    assert_eq!(meta.labels["app"], "web");
    cache.delete("u1");
    assert!(cache.live().is_empty(), "deleted pods are not live");
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(
        cache.get("u1").unwrap().0,
        version,
        "still known within the grace"
    );
    cache.purge();
    assert!(cache.get("u1").is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cache.get("u1").is_none(), "gone after the grace");
    cache.purge();
    assert!(cache.pods.read().unwrap().by_uid.is_empty());
}

#[tokio::test(start_paused = true)]
async fn versions_change_only_with_the_metadata() {
    let cache = PodCache::new(Duration::from_secs(1));
    let mut changes = cache.subscribe();
    cache.apply(pod("u1", "web"));
    let (v1, _) = cache.get("u1").unwrap();
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    cache.apply(pod("u1", "web"));
    assert_eq!(cache.get("u1").unwrap().0, v1);
    assert!(
        !changes.has_changed().unwrap(),
        "an unchanged pod is no change"
    );
    cache.apply(pod("u1", "api"));
    assert!(cache.get("u1").unwrap().0 > v1);
}

#[tokio::test(start_paused = true)]
async fn a_relist_deletes_what_it_no_longer_lists() {
    let cache = PodCache::new(Duration::from_secs(60));
    cache.apply(pod("u1", "a"));
    cache.apply(pod("u2", "b"));
    cache.retain_listed(&HashSet::from(["u2".to_owned()]));
    let live: Vec<String> = cache.live().iter().map(|p| p.uid.clone()).collect();
    assert_eq!(live, vec!["u2".to_owned()]);
    assert!(cache.get("u1").is_some(), "deleted, within the grace");
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_and_makes_room_from_deleted_pods() {
    let cache = PodCache::new(Duration::from_secs(60));
    for i in 0..MAX_PODS {
        cache.apply(pod(&format!("u{i}"), "a"));
    }
    cache.apply(pod("extra", "a"));
    assert!(cache.get("extra").is_none(), "full: refused");
    cache.delete("u0");
    cache.apply(pod("extra", "a"));
    assert!(
        cache.get("extra").is_some(),
        "the oldest deleted pod made room"
    );
    assert_eq!(cache.pods.read().unwrap().by_uid.len(), MAX_PODS);
}
