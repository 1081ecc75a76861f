//! Drift reverted at event speed under `cfgsync run`: the service watches
//! what it owns in Kubernetes (kube-emulator), and a hand edit or a
//! deletion of an owned Secret or ConfigMap is undone by a pass of its
//! output, long before the (1 h) interval. Objects beside ours are never
//! touched; a watch the server closes, or one whose version expired (410),
//! resumes or lists again without missing a change; only the leader's
//! watches act.

use std::time::Duration;

use kube_emulator::{Emulator, Kind};
use serde_json::Value;

use crate::faults::{CANARY, KubeBed, b64};
use crate::service::Service;
use crate::support::{Etcd, Project, wait_until};

const SOON: Duration = Duration::from_secs(10);

/// `obj` with `data[key]` set to `value` (already encoded as stored).
pub fn edited(mut obj: Value, key: &str, value: &str) -> Value {
    obj["data"][key] = Value::String(value.to_owned());
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.shift_remove("resourceVersion");
        meta.shift_remove("managedFields");
    }
    obj
}

/// The drift passes this replica finished (logged), once every one it
/// started (`cfgsync_passes_total`) has been logged.
fn drift_passes(svc: &Service) -> usize {
    wait_until("the drift passes started to be logged", SOON, || {
        let started = svc.metric("cfgsync_passes_total{env=\"prod\",reason=\"drift\"}").unwrap_or(0.0) as usize;
        let logged = svc.log().matches("reason=\"owned object changed outside cfgsync\"").count();
        (logged == started).then_some(logged)
    })
}

fn started(bed: &KubeBed) -> Service {
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first passes", SOON, || (bed.at("staging", 1) && bed.at("prod", 1)).then_some(()));
    wait_until("the Kubernetes watches", SOON, || {
        (svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(1.0) && bed.prod.open_watches() == 2)
            .then_some(())
    });
    svc
}

#[test]
fn hand_edits_and_deletions_of_owned_objects_are_reverted_at_once() {
    let bed = KubeBed::new();
    let svc = started(&bed);
    let drift_before = svc.metric("cfgsync_drift_total{env=\"prod\"}").unwrap_or(0.0);

    // A Secret (keyed fingerprint: a tainted output).
    let hand = b64("hand-edited");
    bed.prod.put_object(edited(bed.secret("prod").unwrap(), "PASSWORD", &hand)).unwrap();
    wait_until("the Secret reverted", SOON, || bed.secret_at("prod", 1).then_some(()));

    // A ConfigMap (plain fingerprint).
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "hand.example")).unwrap();
    wait_until("the ConfigMap reverted", SOON, || bed.configmap_at("prod", 1).then_some(()));

    // A deleted owned object comes back.
    assert!(bed.prod.delete_object(Kind::ConfigMap, "api", "web"));
    wait_until("the ConfigMap recreated", SOON, || bed.configmap_at("prod", 1).then_some(()));
    wait_until("drift counted", SOON, || {
        (svc.metric("cfgsync_drift_total{env=\"prod\"}").unwrap_or(0.0) >= drift_before + 2.0).then_some(())
    });

    // cfgsync's own writes trigger nothing: one more edit makes exactly
    // one more pass, and the Secret reverted before is not written again.
    // (Changes within the debounce share a pass.)
    let passes = drift_passes(&svc);
    assert!(passes >= 1);
    let secret = bed.secret("prod");
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "marker")).unwrap();
    wait_until("the marker reverted", SOON, || bed.configmap_at("prod", 1).then_some(()));
    assert_eq!(drift_passes(&svc), passes + 1, "no pass of our own writes:\n{}", svc.log());
    assert_eq!(bed.secret("prod"), secret, "no write after the reverts");
    assert!(bed.at("staging", 1), "the other env untouched");
    let log = svc.log();
    assert!(!log.contains(CANARY) && !log.contains("hand-edited"), "a value in the log:\n{log}");
    let (_, page) = svc.get("/").unwrap();
    assert!(!page.contains(CANARY));
    // The status page and /readyz say what the watches do.
    assert!(page.contains("<th>kubernetes watch</th><td class=\"ok\">up"), "{page}");
    assert!(page.contains("drift seen by the watches") && page.contains("in context prod</code>"), "{page}");
    assert!(page.contains("<th>last watch event</th>"), "{page}");
    let (_, ready) = svc.readyz();
    assert!(ready["envs"]["prod"]["drift_seen"].as_u64() >= Some(3), "{ready}");
}

#[test]
fn objects_beside_ours_are_never_touched_by_the_watch_path() {
    let bed = KubeBed::new();
    let svc = started(&bed);
    let foreign = |name: &str, labels: Value| {
        serde_json::json!({"kind": "ConfigMap", "metadata": {"name": name, "namespace": "api", "labels": labels},
            "data": {"HOST": "theirs"}})
    };
    bed.prod.put_object(foreign("hand-made", serde_json::json!({}))).unwrap();
    let other_instance = serde_json::json!({"app.kubernetes.io/managed-by": "cfgsync", "cfgsync.io/env": "prod",
        "cfgsync.io/instance": "someone-else", "cfgsync.io/output": "web"});
    bed.prod.put_object(foreign("other", other_instance.clone())).unwrap();
    let passes = drift_passes(&svc);
    // Edit and delete them, then make a change of ours as a marker: once
    // it is reverted, the events before it were seen too.
    let mut edited_other = foreign("other", other_instance);
    edited_other["data"]["HOST"] = "edited".into();
    bed.prod.put_object(edited_other).unwrap();
    assert!(bed.prod.delete_object(Kind::ConfigMap, "api", "hand-made"));
    bed.prod.put_object(foreign("hand-made", serde_json::json!({}))).unwrap();
    let before = bed.prod.get_object(Kind::ConfigMap, "api", "other").unwrap();
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "marker")).unwrap();
    wait_until("our ConfigMap reverted", SOON, || bed.configmap_at("prod", 1).then_some(()));
    assert_eq!(drift_passes(&svc), passes + 1, "only our object made a pass:\n{}", svc.log());
    assert_eq!(bed.prod.get_object(Kind::ConfigMap, "api", "other").unwrap(), before, "never written");
    assert_eq!(bed.prod.get_object(Kind::ConfigMap, "api", "hand-made").unwrap()["data"]["HOST"], "theirs");
}

#[test]
fn a_watch_closed_by_the_server_or_expired_resumes_and_misses_nothing() {
    let bed = KubeBed::new();
    let svc = started(&bed);

    // The server closes every stream (an apiserver restart): watched again
    // from the last version seen.
    bed.prod.close_watches();
    bed.prod.put_object(edited(bed.configmap("prod").unwrap(), "HOST", "while-closed")).unwrap();
    wait_until("the edit after the close reverted", SOON, || bed.configmap_at("prod", 1).then_some(()));

    // The watches cannot come back (403 on watch): down on /readyz and in
    // the metric; an edit made meanwhile waits.
    bed.prod.forbid(None, &[kube_emulator::Verb::Watch]);
    bed.prod.close_watches();
    wait_until("the watches down", SOON, || {
        let (_, ready) = svc.readyz();
        (bed.prod.open_watches() == 0
            && ready["envs"]["prod"]["watches_down"] == serde_json::json!(["kubernetes"])
            && svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == Some(0.0))
        .then_some(())
    });
    bed.prod.put_object(edited(bed.secret("prod").unwrap(), "PASSWORD", &b64("in-the-gap"))).unwrap();
    // The versions the watches resume from expire (compaction): 410, a new
    // LIST, and the edit made in the gap is found by it.
    bed.prod.compact();
    bed.prod.clear_access();
    wait_until("the edit in the gap reverted", SOON, || bed.secret_at("prod", 1).then_some(()));
    wait_until("the watches back", SOON, || {
        let (_, ready) = svc.readyz();
        (bed.prod.open_watches() == 2 && ready["envs"]["prod"].get("watches_down").is_none()).then_some(())
    });
    let log = svc.log();
    assert!(log.contains("410 Gone"), "the expired version was listed again:\n{log}");
    assert!(!log.contains(CANARY) && !log.contains("in-the-gap"));
}

/// Two replicas, one env: only the leader watches and reverts; the other
/// replica's watches do not exist, so they trigger nothing.
#[test]
fn only_the_leader_watches_a_fenced_off_replica_triggers_nothing() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/host", "www.prod");
    let cluster = Emulator::start("prod");
    cluster.create_namespace("api");
    let config = format!(
        r#"interval = "1h"
instance = "ha"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[kubernetes]
kubeconfig = "kubeconfig"

[service]
debounce = "20ms"
[service.election]
ttl = "3s"

[envs.prod]

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "kubernetes-configmap"
context = "prod"
namespace = "api"
name = "web"
"#,
        etcd.endpoint
    );
    let p = Project::new(&config);
    p.write("kubeconfig", &cluster.kubeconfig_yaml());
    let a = Service::start(&p, &["--replica-id", "A"], &[]);
    let b = Service::start(&p, &["--replica-id", "B"], &[]);
    let leads = |s: &Service| s.metric("cfgsync_leader{env=\"prod\"}") == Some(1.0);
    let host = || cluster.get_object(Kind::ConfigMap, "api", "web").map(|c| c["data"]["HOST"].clone());
    wait_until("a leader and the first pass", Duration::from_secs(30), || {
        (leads(&a) != leads(&b) && host() == Some("www.prod".into())).then_some(())
    });
    let (leader, follower) = if leads(&a) { (&a, &b) } else { (&b, &a) };
    wait_until("the leader's watch", SOON, || (cluster.open_watches() == 1).then_some(()));
    assert_eq!(follower.metric("cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}").unwrap_or(0.0), 0.0);
    let obj = cluster.get_object(Kind::ConfigMap, "api", "web").unwrap();
    cluster.put_object(edited(obj, "HOST", "hand")).unwrap();
    wait_until("reverted by the leader", SOON, || (host() == Some("www.prod".into())).then_some(()));
    assert_eq!(drift_passes(leader), 1, "{}", leader.log());
    assert_eq!(drift_passes(follower), 0, "{}", follower.log());
    assert!(!follower.log().contains("a pass of its output reverts it"));
    assert_eq!(cluster.open_watches(), 1, "one watch in all: the leader's");
}

/// A file target under `run` (file source): a hand edit or a deletion is
/// reverted at once; cfgsync's own writes, and files beside ours, make no
/// pass; a link put in the file's place is never followed.
#[test]
fn hand_edits_of_managed_files_are_reverted_at_once_and_links_never_followed() {
    let p = Project::new(
        r#"interval = "1h"
instance = "files"

[files]

[envs.prod]

[[output]]
name = "api"
[output.entries]
PASSWORD = "{{ secret(path='api/db', field='password') }}"
[[output.target]]
kind = "file"
path = "out/api.env"

[[output]]
name = "conf"
[output.entries]
"a.txt" = "A={{ key(name='a') }}"
[[output.target]]
kind = "file"
path = "out/conf"
format = "dir"
"#,
    );
    p.write("source/prod.toml", &format!("[keys]\na = \"1\"\n\n[secrets.\"api/db\"]\npassword = \"{CANARY}-file\"\n"));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    let want = format!("PASSWORD={CANARY}-file\n");
    let api = p.path("out/api.env");
    let conf = p.path("out/conf/a.txt");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    wait_until("the first pass and the file watch", SOON, || {
        (read(&api) == want
            && read(&conf) == "A=1"
            && svc.metric("cfgsync_watch_up{env=\"prod\",kind=\"file\"}") == Some(1.0))
        .then_some(())
    });

    std::fs::write(&api, "PASSWORD=hand\n").unwrap();
    wait_until("the edit reverted", SOON, || (read(&api) == want).then_some(()));
    std::fs::remove_file(&conf).unwrap();
    wait_until("the deleted file in a dir target recreated", SOON, || (read(&conf) == "A=1").then_some(()));
    let passes = drift_passes(&svc);
    assert!(passes >= 1);

    // A file beside ours: no pass. Then an edit of ours as a marker: exactly one more pass.
    std::fs::write(p.path("out/notes.txt"), "mine").unwrap();
    crate::service::save_like_an_editor(&api, "PASSWORD=marker\n");
    wait_until("the marker reverted", SOON, || (read(&api) == want).then_some(()));
    assert_eq!(drift_passes(&svc), passes + 1, "{}", svc.log());
    assert_eq!(read(&p.path("out/notes.txt")), "mine");
    // Idle, the watch costs nothing: reading the files it judges is no
    // event (a watch that saw its own reads spun at a full core). Over a
    // bounded window, the service uses well under half a core.
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", svc.pid)).unwrap();
        let rest = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect::<Vec<_>>();
        rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap()
    };
    let before = cpu_ticks();
    let window = Duration::from_secs(2);
    let busy =
        crate::support::poll_until(window, Duration::from_millis(100), || (cpu_ticks() - before > 100).then_some(()));
    assert!(busy.is_none(), "the idle service used more than 1 s of CPU in {window:?}");

    // A link in the file's place: the pass refuses it, nothing is written through it.
    let victim = p.path("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    // Put in place atomically: the file is never missing (a pass that saw
    // it missing would write a new file over the link, not through it).
    let link = p.path("out/link.tmp");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::fs::rename(&link, &api).unwrap();
    wait_until("the link refused", SOON, || svc.log().contains("unsafe_path").then_some(()));
    assert_eq!(read(&victim), "untouched");
    assert!(std::fs::symlink_metadata(&api).unwrap().file_type().is_symlink(), "the link is left for a person");
    let log = svc.log();
    assert!(!log.contains(CANARY), "a secret in the log:\n{log}");
}
