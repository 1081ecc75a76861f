//! Two replicas of `cfgsync run` against one etcd: per-env election, fair
//! share, failover after SIGKILL, and never two writers for one env.
//!
//! Every write runs a `check_cmd` that appends `<replica> begin <ns>` and
//! `<replica> end <ns>` to `writes-<env>.log`, so the test sees who wrote
//! which env and when.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, wait_until};

const TTL_S: u64 = 3;

fn config(etcd: &Etcd) -> String {
    let mut c = format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[service]
debounce = "20ms"
[service.election]
ttl = "{TTL_S}s"

[envs.a]
[envs.b]
"#,
        etcd.endpoint
    );
    for env in ["a", "b"] {
        c.push_str(&format!(
            r#"
[[output]]
name = "o{env}"
envs = ["{env}"]
[output.entries]
V = "{{{{ key(name='v') }}}}"
[[output.target]]
kind = "file"
path = "out/{env}.env"
check_cmd = "echo \"$REPLICA begin $(date +%s%N)\" >> writes-{env}.log; sleep 0.05; echo \"$REPLICA end $(date +%s%N)\" >> writes-{env}.log"
"#
        ));
    }
    c
}

/// (replica, begin ns, end ns) for every write recorded for `env`.
fn writes(p: &Project, env: &str) -> Vec<(String, u128, u128)> {
    let text = read_or_empty(&p.path(&format!("writes-{env}.log")));
    let mut open: BTreeMap<String, u128> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [who, what, ns] = parts[..] else { panic!("bad line {line:?}") };
        let ns: u128 = ns.parse().unwrap();
        match what {
            "begin" => {
                assert!(open.insert(who.to_owned(), ns).is_none(), "{who} began twice for {env}");
            }
            "end" => out.push((who.to_owned(), open.remove(who).expect("end without begin"), ns)),
            _ => panic!("bad line {line:?}"),
        }
    }
    out
}

/// No two replicas ever wrote the same env at overlapping times.
fn assert_single_writer(p: &Project, env: &str) {
    let w = writes(p, env);
    for (i, a) in w.iter().enumerate() {
        for b in &w[i + 1..] {
            if a.0 != b.0 {
                assert!(a.2 < b.1 || b.2 < a.1, "two writers for env {env} at once: {a:?} and {b:?}");
            }
        }
    }
}

fn leads(svc: &Service, env: &str) -> bool {
    svc.metric(&format!("cfgsync_leader{{env=\"{env}\"}}")) == Some(1.0)
}

fn value_is(p: &Project, env: &str, v: &str) -> Option<()> {
    (read_or_empty(&p.path(&format!("out/{env}.env"))) == format!("V={v}\n")).then_some(())
}

#[test]
fn two_replicas_share_the_envs_write_alone_and_fail_over_within_the_ttl() {
    let etcd = Etcd::start();
    for env in ["a", "b"] {
        etcd.put(&format!("/cfgsync/{env}/v"), "0");
    }
    let p = Project::new(&config(&etcd));
    let mut replicas = [
        Service::start(&p, &["--replica-id", "A"], &[("REPLICA", "A")]),
        Service::start(&p, &["--replica-id", "B"], &[("REPLICA", "B")]),
    ];

    // Fair share: each replica ends up leading exactly one env.
    let leader_of = wait_until("each replica to lead one env", Duration::from_secs(20), || {
        let mut leader_of = BTreeMap::new();
        for env in ["a", "b"] {
            let who: Vec<usize> = (0..2).filter(|i| leads(&replicas[*i], env)).collect();
            if who.len() != 1 {
                return None;
            }
            leader_of.insert(env, who[0]);
        }
        (leader_of["a"] != leader_of["b"]).then_some(leader_of)
    });
    for env in ["a", "b"] {
        wait_until("the first write", Duration::from_secs(10), || value_is(&p, env, "0"));
    }

    // Only the leader of an env writes it.
    let seen: BTreeMap<&str, usize> = ["a", "b"].iter().map(|e| (*e, writes(&p, e).len())).collect();
    for i in 1..=5 {
        for env in ["a", "b"] {
            etcd.put(&format!("/cfgsync/{env}/v"), &i.to_string());
        }
        for env in ["a", "b"] {
            wait_until("the change", Duration::from_secs(5), || value_is(&p, env, &i.to_string()));
        }
    }
    for env in ["a", "b"] {
        let leader = ["A", "B"][leader_of[env]];
        let new: Vec<_> = writes(&p, env).into_iter().skip(seen[env]).collect();
        assert_eq!(new.len(), 5, "one write per change for env {env}: {new:?}");
        assert!(new.iter().all(|w| w.0 == leader), "only {leader} writes env {env}: {new:?}");
        assert_single_writer(&p, env);
    }

    // SIGKILL the leader of env a: the other takes it within the TTL.
    let victim = leader_of["a"];
    let survivor = 1 - victim;
    replicas[victim].kill();
    let killed = Instant::now();
    wait_until("the survivor to lead env a", Duration::from_secs(TTL_S + 5), || {
        leads(&replicas[survivor], "a").then_some(())
    });
    let failover = killed.elapsed();
    eprintln!("failover after SIGKILL took {failover:?} (ttl {TTL_S} s)");
    // The lease dies at most one TTL after the victim's last keep-alive;
    // etcd checks for expired leases every 500 ms, and a loaded CI machine
    // adds scheduling delay to the survivor's reaction and to this poll.
    assert!(failover <= Duration::from_millis(TTL_S * 1000 + 1000), "failover took {failover:?}");
    assert!(leads(&replicas[survivor], "b"));

    etcd.put("/cfgsync/a/v", "after-failover");
    wait_until("the survivor to write env a", Duration::from_secs(5), || value_is(&p, "a", "after-failover"));
    let last = writes(&p, "a").pop().unwrap();
    assert_eq!(last.0, ["A", "B"][survivor]);
    assert_single_writer(&p, "a");
    assert_single_writer(&p, "b");
    let body = replicas[survivor].wait_ready(Duration::from_secs(5));
    assert_eq!(body["envs"]["a"]["role"], "leader", "{body}");
}

#[test]
fn a_replica_joining_late_gets_its_fair_share_without_two_writers() {
    let etcd = Etcd::start();
    for env in ["a", "b"] {
        etcd.put(&format!("/cfgsync/{env}/v"), "0");
    }
    let p = Project::new(&config(&etcd));
    let first = Service::start(&p, &["--replica-id", "A"], &[("REPLICA", "A")]);
    wait_until("A to lead both envs", Duration::from_secs(20), || {
        (leads(&first, "a") && leads(&first, "b")).then_some(())
    });
    let second = Service::start(&p, &["--replica-id", "B"], &[("REPLICA", "B")]);
    wait_until("A to hand one env to B", Duration::from_secs(20), || {
        let a = ["a", "b"].iter().filter(|e| leads(&first, e)).count();
        let b = ["a", "b"].iter().filter(|e| leads(&second, e)).count();
        (a == 1 && b == 1).then_some(())
    });
    // Writes keep flowing for both envs, each from one replica at a time.
    for i in 1..=3 {
        for env in ["a", "b"] {
            etcd.put(&format!("/cfgsync/{env}/v"), &i.to_string());
        }
        for env in ["a", "b"] {
            wait_until("the change", Duration::from_secs(5), || value_is(&p, env, &i.to_string()));
        }
    }
    assert_single_writer(&p, "a");
    assert_single_writer(&p, "b");
    assert!(first.log().contains("handed the env over"), "{}", first.log());
}
