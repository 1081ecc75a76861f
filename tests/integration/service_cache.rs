//! The watch's state is the pass's cache: under `cfgsync run`, while the
//! leader's Kubernetes watches are synced, its passes (interval, key
//! change, drift) read the watches' stores instead of LISTing; a watch
//! that is down makes the passes LIST again; a watch whose version expired
//! (410) lists once per scope and misses nothing; a pass after the
//! service's own writes writes nothing again. Requests are counted by
//! kube-emulator.

use std::time::Duration;

use kube_emulator::Verb;

use crate::faults::{CANARY, KUBE_CONFIG, KubeBed, b64};
use crate::service::Service;
use crate::service_drift::edited;
use crate::support::wait_until;

const SOON: Duration = Duration::from_secs(15);

fn passes(svc: &Service, reason: &str) -> u64 {
    svc.metric(&format!("cfgsync_passes_total{{env=\"prod\",reason=\"{reason}\"}}")).unwrap_or(0.0) as u64
}

/// Waits until `n` more interval passes of prod have started, and every
/// pass started has finished.
fn interval_passes(svc: &Service, n: u64) {
    let started = |svc: &Service| {
        svc.metrics()
            .lines()
            .filter(|l| l.starts_with("cfgsync_passes_total{env=\"prod\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let finished =
        |svc: &Service| svc.metric("cfgsync_reconcile_duration_seconds_count{env=\"prod\"}").unwrap_or(0.0) as u64;
    let from = passes(svc, "interval");
    wait_until("interval passes", SOON, || {
        (passes(svc, "interval") >= from + n && finished(svc) == started(svc)).then_some(())
    });
}

/// The bed of `faults` with a one-second interval, its first passes made
/// and both prod watches streaming.
fn started(bed: &KubeBed) -> Service {
    bed.p.write("cfgsync.toml", &KUBE_CONFIG.replace("interval = \"1h\"", "interval = \"1s\""));
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first passes and the watches", SOON, || {
        (bed.at("staging", 1)
            && bed.at("prod", 1)
            && svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(1.0)
            && bed.prod.open_watches() == 2)
            .then_some(())
    });
    svc
}

#[test]
fn a_leader_with_synced_watches_passes_without_listing() {
    let bed = KubeBed::new();
    let svc = started(&bed);
    // Every pass before the watches were up is over.
    interval_passes(&svc, 1);
    let before = bed.prod.requests();

    // Interval passes, a key change, interval passes after its writes.
    interval_passes(&svc, 3);
    bed.seed(2);
    wait_until("the key change written", SOON, || bed.at("prod", 2).then_some(()));
    let written = bed.prod.requests();
    interval_passes(&svc, 3);
    let after = bed.prod.requests();
    let delta = |verb| after.verb(verb) - before.verb(verb);
    assert_eq!(delta(Verb::List), 0, "no LIST after the watches started: {after} (before: {before})");
    assert_eq!(delta(Verb::Get), 0, "no GET either: every target's object is in the stores");
    assert_eq!(after.writes() - before.writes(), 2, "the key change, once per object: {after} (before: {before})");
    assert_eq!(after.writes(), written.writes(), "nothing written again after the pass's own writes");

    // Drift is still reverted, from the store the watch keeps.
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "hand.example")).unwrap();
    wait_until("the drift reverted", SOON, || bed.configmap_at("prod", 2).then_some(()));
    assert_eq!(bed.prod.requests().verb(Verb::List), before.verb(Verb::List), "{}", bed.prod.requests());

    // A watch that is down: the passes LIST, and so revert an edit the
    // watch could not see.
    bed.prod.forbid(None, &[Verb::Watch]);
    bed.prod.close_watches();
    wait_until("the watches down", SOON, || {
        (svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(0.0)).then_some(())
    });
    let down = bed.prod.requests();
    bed.prod.put_object(edited(bed.secret("prod").unwrap(), "PASSWORD", &b64("while-down"))).unwrap();
    wait_until("the edit reverted by a listing pass", SOON, || bed.secret_at("prod", 2).then_some(()));
    assert!(bed.prod.requests().get(Verb::List, "secrets") > down.get(Verb::List, "secrets"));
    bed.prod.clear_access();
    let log = svc.log();
    assert!(!log.contains(CANARY) && !log.contains("while-down"), "a value in the log:\n{log}");
}

/// The versions the watches resume from expire (compaction) while they
/// are down and an edit is made: one LIST per scope when they are back,
/// the edit found and reverted, and the drift pass reads the fresh store.
#[test]
fn an_expired_watch_lists_once_per_scope_and_misses_nothing() {
    let bed = KubeBed::new();
    bed.p.write("cfgsync.toml", KUBE_CONFIG);
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first passes and the watches", SOON, || {
        (bed.at("prod", 1)
            && svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(1.0)
            && bed.prod.open_watches() == 2)
            .then_some(())
    });
    bed.prod.forbid(None, &[Verb::Watch]);
    bed.prod.close_watches();
    wait_until("the watches down", SOON, || {
        (bed.prod.open_watches() == 0 && svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(0.0))
            .then_some(())
    });
    let before = bed.prod.requests();
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "in-the-gap")).unwrap();
    bed.prod.compact();
    bed.prod.clear_access();
    wait_until("the edit in the gap reverted", SOON, || bed.configmap_at("prod", 1).then_some(()));
    wait_until("the watches back", SOON, || (bed.prod.open_watches() == 2).then_some(()));
    let after = bed.prod.requests();
    for resource in ["secrets", "configmaps"] {
        let lists = after.get(Verb::List, resource) - before.get(Verb::List, resource);
        assert_eq!(lists, 1, "one LIST of {resource} after the 410: {after} (before: {before})");
    }
    assert_eq!(after.verb(Verb::Get), before.verb(Verb::Get), "{after}");
    assert_eq!(after.writes() - before.writes(), 1, "the reverted ConfigMap only: {after}");
    assert!(svc.log().contains("410 Gone"), "{}", svc.log());
}
