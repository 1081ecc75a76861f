//! A watch event re-renders only the outputs that read what changed; the
//! interval pass still covers everything.

use std::time::Duration;

use crate::service::{Service, read_or_empty, wait_until};
use crate::support::{Etcd, Project};

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

    // A hand edit of b's file: a full pass would revert it at once.
    std::fs::write(p.path("out/b.env"), "B=hand\n").unwrap();
    etcd.put("/cfgsync/prod/a", "2");
    wait_until("a to follow the watch", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/a.env")) == "A=2\n").then_some(())
    });
    // A new key under a prefix an output lists concerns that output.
    etcd.put("/cfgsync/prod/flags/y", "off");
    wait_until("flags to follow the watch", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/flags.env")) == "FLAGS='x=on;y=off;'\n").then_some(())
    });
    assert_eq!(read_or_empty(&p.path("out/b.env")), "B=hand\n", "b was not part of those passes");

    // A key nobody reads triggers no pass at all. (The passes for a and
    // flags log after writing: wait for both lines before counting.)
    let watch_passes = || svc.log().matches("reason=\"etcd watch\"").count();
    wait_until("the log lines of the two passes", Duration::from_secs(5), || (watch_passes() == 2).then_some(()));
    let passes_before = watch_passes();
    etcd.put("/cfgsync/prod/unused", "x");
    etcd.put("/cfgsync/prod/b", "2");
    wait_until("b to follow the watch (and its edit to be replaced)", Duration::from_secs(5), || {
        (read_or_empty(&p.path("out/b.env")) == "B=2\n").then_some(())
    });
    // The pass for b logs after writing it; the put of `unused` made none.
    wait_until("the log line of b's pass", Duration::from_secs(5), || {
        (svc.log().matches("reason=\"etcd watch\"").count() > passes_before).then_some(())
    });
    let log = svc.log();
    assert_eq!(log.matches("reason=\"etcd watch\"").count(), passes_before + 1, "one pass, for b only:\n{log}");
}
