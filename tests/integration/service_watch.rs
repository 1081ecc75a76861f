//! A watch event re-renders only the outputs that read what changed; the
//! interval pass still covers everything.

use std::time::Duration;

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, wait_until};

fn config(etcd: &Etcd) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[service]
debounce = "20ms"

[envs.prod]

[[output]]
name = "a"
[output.entries]
A = "{{{{ key(name='a') }}}}"
[[output.target]]
kind = "file"
path = "out/a.env"

[[output]]
name = "b"
[output.entries]
B = "{{{{ key(name='b') }}}}"
[[output.target]]
kind = "file"
path = "out/b.env"

[[output]]
name = "flags"
[output.entries]
FLAGS = "{{% for k, v in keys(prefix='flags/') %}}{{{{ k }}}}={{{{ v }}}};{{% endfor %}}"
[[output.target]]
kind = "file"
path = "out/flags.env"
"#,
        etcd.endpoint
    )
}

#[test]
fn a_watch_event_touches_only_the_outputs_that_read_the_change() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/a", "1");
    etcd.put("/cfgsync/prod/b", "1");
    etcd.put("/cfgsync/prod/flags/x", "on");
    let p = Project::new(&config(&etcd));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first pass", Duration::from_secs(10), || {
        (read_or_empty(&p.path("out/b.env")) == "B=1\n" && read_or_empty(&p.path("out/flags.env")) == "FLAGS='x=on;'\n")
            .then_some(())
    });

    // b's file as written: a pass of b would replace it (a new inode).
    // (A hand edit is no probe any more: the file watch reverts it at once.)
    let written = |rel: &str| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p.path(rel)).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let b_before = written("out/b.env");
    etcd.put("/cfgsync/prod/a", "2");
    wait_until("a to follow the watch", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/a.env")) == "A=2\n").then_some(())
    });
    // A new key under a prefix an output lists concerns that output.
    etcd.put("/cfgsync/prod/flags/y", "off");
    wait_until("flags to follow the watch", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/flags.env")) == "FLAGS='x=on;y=off;'\n").then_some(())
    });
    assert_eq!(written("out/b.env"), b_before, "b was not part of those passes");

    // A key nobody reads triggers no pass at all. (The passes for a and
    // flags log after writing: wait for both lines before counting.)
    let watch_passes = || svc.log().matches("reason=\"etcd watch\"").count();
    wait_until("the log lines of the two passes", Duration::from_secs(5), || (watch_passes() == 2).then_some(()));
    let passes_before = watch_passes();
    etcd.put("/cfgsync/prod/unused", "x");
    etcd.put("/cfgsync/prod/b", "2");
    wait_until("b to follow the watch", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/b.env")) == "B=2\n").then_some(())
    });
    // The pass for b logs after writing it; the put of `unused` made none.
    wait_until("the log line of b's pass", Duration::from_secs(5), || {
        (svc.log().matches("reason=\"etcd watch\"").count() > passes_before).then_some(())
    });
    let log = svc.log();
    assert_eq!(log.matches("reason=\"etcd watch\"").count(), passes_before + 1, "one pass, for b only:\n{log}");
}

/// Watch passes read only the keys that changed (point reads at the
/// events' revision) and apply them to the keys the last pass read: what
/// they render must be exactly what a full read would give — a new key
/// under a listed prefix, a deleted one, and a change no output read when
/// it happened (a conditional read) that becomes visible later.
#[test]
fn watch_passes_read_only_the_changed_keys_and_see_what_a_full_read_sees() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/a", "1");
    etcd.put("/cfgsync/prod/b", "1");
    etcd.put("/cfgsync/prod/flags/x", "on");
    etcd.put("/cfgsync/prod/flags/z", "on");
    etcd.put("/cfgsync/prod/gate", "closed");
    etcd.put("/cfgsync/prod/hidden", "h1");
    let gated = r#"
[[output]]
name = "gated"
[output.entries]
G = "{% if key(name='gate') == 'open' %}{{ key(name='hidden') }}{% else %}shut{% endif %}"
[[output.target]]
kind = "file"
path = "out/gated.env"
"#;
    let p = Project::new(&format!("{}{gated}", config(&etcd)));
    let svc = Service::start(&p, &[], &[("RUST_LOG", "cfgsync=debug")]);
    svc.wait_ready(Duration::from_secs(30));
    let file_is = |rel: &str, want: &str| read_or_empty(&p.path(rel)) == want;
    wait_until("the first pass", Duration::from_secs(10), || {
        (file_is("out/flags.env", "FLAGS='x=on;z=on;'\n") && file_is("out/gated.env", "G=shut\n")).then_some(())
    });

    etcd.put("/cfgsync/prod/a", "2");
    wait_until("a", Duration::from_secs(5), || file_is("out/a.env", "A=2\n").then_some(()));
    etcd.put("/cfgsync/prod/flags/y", "off");
    wait_until("a new key under the prefix", Duration::from_secs(5), || {
        file_is("out/flags.env", "FLAGS='x=on;y=off;z=on;'\n").then_some(())
    });
    etcd.ctl_ok(&["del", "/cfgsync/prod/flags/z"]);
    wait_until("a deleted key under the prefix", Duration::from_secs(5), || {
        file_is("out/flags.env", "FLAGS='x=on;y=off;'\n").then_some(())
    });
    // Nothing reads `hidden` while the gate is closed: its change makes no
    // pass. Opening the gate must show its new value, not the one kept.
    let patched = || svc.log().matches("keys patched").count();
    wait_until("three patched reads", Duration::from_secs(5), || (patched() >= 3).then_some(()));
    etcd.put("/cfgsync/prod/hidden", "h2");
    wait_until("the change nobody reads to be seen", Duration::from_secs(5), || {
        svc.log().contains("no output reads the changed keys").then_some(())
    });
    etcd.put("/cfgsync/prod/gate", "open");
    wait_until("the gate to open on the current hidden value", Duration::from_secs(5), || {
        file_is("out/gated.env", "G=h2\n").then_some(())
    });
    assert!(patched() >= 4, "every watch pass here read only what changed:\n{}", svc.log());
    assert_eq!(svc.log().matches("reading the changed keys failed").count(), 0, "{}", svc.log());
    assert!(file_is("out/a.env", "A=2\n") && file_is("out/b.env", "B=1\n"));
}
