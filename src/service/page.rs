//! The status page, `GET /`: one small server-rendered HTML document.
//!
//! For each env it shows its readiness (the same [`super::status`] verdict
//! as `/readyz`), its leader, this replica's role and how often it passes
//! the env (against what the interval and debounce allow), the last pass (time,
//! age, etcd revision), the outputs that could not be rendered, and each
//! target, named by its output and destination (kind and file or object;
//! the id `<env>/<output>/<index>` is its tooltip), with its state (ok,
//! drift reverted, failing, backing off), the failure code, and when
//! cfgsync last changed it (or, when no write is known, since when it has
//! been found unchanged); the watches on what it writes (up or down, the
//! last event, drift they saw) and the secret reads this replica sent to
//! Vault for it in the last minute (the counter behind them is
//! `cfgsync_secret_reads_total` on `/metrics`); then links to `/metrics`
//! and `/readyz`.
//!
//! Decisions:
//! - **No JavaScript**, no external resources: the response carries a
//!   `Content-Security-Policy` that forbids scripts, and the page works in
//!   any browser or `curl`. Refresh the page to refresh the data.
//! - **Nothing secret can be on it**: it is built from the status board,
//!   which holds states, codes, names and times only (never error text).
//! - **Everything is escaped, by the template engine**: env, output and
//!   target names, addresses and replica ids come from the config or from
//!   etcd and may hold any characters. The page is the Tera template
//!   `status.html.tera` (compiled in) with autoescape on for it, so every
//!   `{{ value }}` goes through [`escape`] and no value is ever marked
//!   safe; the Rust side only shapes the data ([`Page`]).
//! - [`escape`] is Tera's escape function for this template instead of
//!   Tera's own, which also writes `/` as `&#x2F;`: needless in HTML, and
//!   it would turn every path on the page into entities for `curl` readers.

use std::sync::LazyLock;

use serde::Serialize;

use super::published::{OutputRecord, TargetRecord, TargetState};
use super::status::Snapshot;

/// The template's name; autoescape is on for exactly this suffix.
const TEMPLATE: &str = "status.html.tera";

/// The compiled template, with autoescape on and [`escape`] as its escape.
static TERA: LazyLock<Result<tera::Tera, String>> = LazyLock::new(|| {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![TEMPLATE]);
    tera.set_escape_fn(escape);
    tera.add_raw_template(TEMPLATE, include_str!("status.html.tera")).map_err(|e| error_text(&e))?;
    Ok(tera)
});

/// Tera's error with its causes (the template's line is in a cause).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `&`, `<`, `>`, `"`, `'` as entities: safe in element content and in
/// quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `12 s ago`, `3 min ago`, `2 h ago`, `4 d ago`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// What the template is given: the snapshot, shaped for showing.
#[derive(Serialize)]
struct Page<'a> {
    replica: &'a str,
    election: bool,
    ready: bool,
    rendered_at: String,
    envs: Vec<EnvPage<'a>>,
}

#[derive(Serialize)]
struct EnvPage<'a> {
    name: &'a str,
    ready: bool,
    state: &'a str,
    code: Option<&'a str>,
    leader: Option<&'a str>,
    role: &'static str,
    passes: Passes,
    watch_lost: bool,
    target_watches: Vec<WatchRow>,
    last_watch_event: Option<When>,
    drift_seen: u64,
    last_drift: Option<DriftRow<'a>>,
    secret_reads_last_minute: Option<u64>,
    last_pass: Option<LastPass<'a>>,
}

/// The target watches of one kind (`kubernetes`, `file`).
#[derive(Serialize)]
struct WatchRow {
    kind: &'static str,
    up: bool,
}

/// The last drift the watches saw: when, and the object's name.
#[derive(Serialize)]
struct DriftRow<'a> {
    at: When,
    object: &'a str,
}

/// Passes per second, as shown (one decimal).
#[derive(Serialize)]
struct Passes {
    too_high: bool,
    per_second: String,
    allowed: String,
}

#[derive(Serialize)]
struct LastPass<'a> {
    at: When,
    leader: &'a str,
    ok: bool,
    code: Option<&'a str>,
    revision: Option<i64>,
    outputs: &'a [OutputRecord],
    targets: Vec<TargetRow<'a>>,
}

/// A point in time: its age, with its UTC time as a tooltip.
#[derive(Serialize)]
struct When {
    utc: String,
    ago: String,
}

impl When {
    fn of(now_ms: u64, ms: u64) -> Self {
        Self { utc: crate::utc::from_unix_ms(ms), ago: ago(now_ms, ms) }
    }
}

#[derive(Serialize)]
struct TargetRow<'a> {
    id: &'a str,
    output: &'a str,
    kind: &'a str,
    address: &'a str,
    /// The state's CSS class and words.
    class: &'static str,
    label: &'static str,
    code: Option<&'a str>,
    /// "Last change": cfgsync's last write, else since when it is unchanged.
    changed: Option<When>,
    unchanged_since: Option<When>,
}

impl<'a> TargetRow<'a> {
    fn of(now_ms: u64, t: &'a TargetRecord) -> Self {
        let (class, label) = match t.state {
            TargetState::Ok => ("ok", "ok"),
            TargetState::DriftReverted => ("warn", "drift reverted"),
            TargetState::Failing => ("bad", "failing"),
            TargetState::BackingOff => ("bad", "backing off"),
        };
        let changed = t.last_change_ms.map(|ms| When::of(now_ms, ms));
        let unchanged_since = t.unchanged_since_ms.filter(|_| changed.is_none()).map(|ms| When::of(now_ms, ms));
        Self {
            id: &t.id,
            output: t.output_name(),
            kind: &t.kind,
            address: &t.address,
            class,
            label,
            code: t.code.as_deref(),
            changed,
            unchanged_since,
        }
    }
}

impl<'a> Page<'a> {
    fn of(snap: &'a Snapshot) -> Self {
        let now = snap.clock.now_ms;
        let envs = snap
            .envs
            .iter()
            .map(|(env, view, verdict)| EnvPage {
                name: env,
                ready: verdict.ready(),
                state: verdict.state,
                code: verdict.code.as_deref(),
                leader: view.leader.as_deref(),
                role: view.role.as_str(),
                passes: Passes {
                    too_high: view.passes.too_high(),
                    per_second: format!("{:.1}", view.passes.per_second()),
                    allowed: format!("{:.1}", view.passes.allowed_per_second()),
                },
                watch_lost: view.watch_lost,
                target_watches: view.target_watches.iter().map(|(kind, up)| WatchRow { kind, up: *up }).collect(),
                last_watch_event: view.last_watch_event_ms.map(|ms| When::of(now, ms)),
                drift_seen: view.drift_seen,
                last_drift: view.last_drift.as_ref().map(|(ms, object)| DriftRow { at: When::of(now, *ms), object }),
                secret_reads_last_minute: view.secret_reads_last_minute,
                last_pass: view.record.as_ref().map(|r| LastPass {
                    at: When::of(now, r.at_ms),
                    leader: &r.leader,
                    ok: r.ok,
                    code: r.code.as_deref(),
                    revision: r.revision,
                    outputs: &r.outputs,
                    targets: r.targets.iter().map(|t| TargetRow::of(now, t)).collect(),
                }),
            })
            .collect();
        Self {
            replica: &snap.replica,
            election: snap.election,
            ready: snap.envs.iter().all(|(_, _, v)| v.ready()),
            rendered_at: crate::utc::from_unix_ms(now),
            envs,
        }
    }
}

/// The page for `snap`.
pub fn render(snap: &Snapshot) -> String {
    let rendered = TERA.as_ref().map_err(Clone::clone).and_then(|tera| {
        let context = tera::Context::from_serialize(Page::of(snap)).map_err(|e| error_text(&e))?;
        tera.render(TEMPLATE, &context).map_err(|e| error_text(&e))
    });
    rendered.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the status page could not be rendered");
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cfgsync status</title></head>\
<body><p>The status page could not be rendered; see the log, <a href=\"/readyz\">/readyz</a> and \
<a href=\"/metrics\">/metrics</a>.</p></body></html>\n"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::published::{EnvRecord, OutputRecord, TargetRecord};
    use crate::service::status::{Clock, EnvView, Role, Verdict};

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn ages() {
        assert_eq!(ago(200_000, 80_000), "2 min ago");
        assert_eq!(ago(80_000, 200_000), "0 s ago", "a clock ahead of ours");
        assert_eq!(ago(10_000_000, 0), "2 h ago");
        assert_eq!(ago(400_000_000, 0), "4 d ago");
    }

    #[test]
    fn names_from_the_config_and_etcd_are_escaped() {
        let hostile = "<script>alert(1)</script>";
        let record = EnvRecord {
            leader: hostile.into(),
            at_ms: 1_000,
            revision: Some(3),
            asked_revision: None,
            ok: false,
            code: Some("check_rejected".into()),
            outputs: vec![OutputRecord { name: hostile.into(), code: "render_missing".into() }],
            targets: vec![
                TargetRecord {
                    id: format!("prod/{hostile}/0"),
                    output: hostile.into(),
                    kind: "file".into(),
                    address: format!("out/{hostile}"),
                    state: TargetState::DriftReverted,
                    code: None,
                    last_change_ms: Some(500),
                    unchanged_since_ms: None,
                },
                TargetRecord {
                    id: "prod/web/0".into(),
                    output: String::new(),
                    kind: "kubernetes-secret".into(),
                    address: "prod/web/web".into(),
                    state: TargetState::Ok,
                    code: None,
                    last_change_ms: None,
                    unchanged_since_ms: Some(1_000),
                },
            ],
        };
        let mut view = EnvView::new(Role::Leader);
        view.record = Some(record);
        let snap = Snapshot {
            replica: hostile.into(),
            election: true,
            clock: Clock { now: tokio::time::Instant::now(), now_ms: 61_000 },
            envs: vec![(hostile.into(), view, Verdict { state: "failing", code: Some("check_rejected".into()) })],
        };
        let html = render(&snap);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("drift reverted"));
        assert!(html.contains("<a href=\"/metrics\">") && html.contains("<a href=\"/readyz\">"));
        assert!(html.contains("60 s ago"), "{html}");
        // Targets by output and destination; the id is the tooltip.
        assert!(html.contains("<tr class=\"target\" title=\"prod/web/0\"><td><code>web</code></td><td>kubernetes-secret <code>prod/web/web</code></td>"), "{html}");
        assert!(!html.contains("<code>prod/web/0</code>"), "{html}");
        assert!(html.contains("none since <time title=\"1970-01-01 00:00:01 UTC\">60 s ago</time>"), "{html}");
    }

    /// A snapshot whose every name is `name`: env, replica, leader, output,
    /// target id, kind and address, codes.
    fn everywhere(name: &str) -> Snapshot {
        let target = |state, last_change_ms, unchanged_since_ms| TargetRecord {
            id: format!("prod/{name}/0"),
            output: name.into(),
            kind: name.into(),
            address: format!("out/{name}"),
            state,
            code: Some(name.into()),
            last_change_ms,
            unchanged_since_ms,
        };
        let record = EnvRecord {
            leader: name.into(),
            at_ms: 1_000,
            revision: Some(0),
            asked_revision: None,
            ok: false,
            code: Some(name.into()),
            outputs: vec![OutputRecord { name: name.into(), code: name.into() }],
            targets: vec![
                target(TargetState::Failing, Some(500), None),
                target(TargetState::Ok, None, Some(700)),
                target(TargetState::BackingOff, None, None),
            ],
        };
        let mut led = EnvView::new(Role::Leader);
        led.leader = Some(name.into());
        led.watch_lost = true;
        led.secret_reads_last_minute = Some(7);
        led.record = Some(record);
        let unled = EnvView::new(Role::Follower);
        Snapshot {
            replica: name.into(),
            election: true,
            clock: Clock { now: tokio::time::Instant::now(), now_ms: 61_000 },
            envs: vec![
                (name.into(), led, Verdict { state: "failing", code: Some(name.into()) }),
                (format!("{name}2"), unled, Verdict { state: "no_leader", code: None }),
            ],
        }
    }

    /// Canary: a name that tries to close an attribute, open a tag and run
    /// a script, in every place the page shows a name, comes out as text.
    #[test]
    fn the_template_escapes_every_name_it_shows() {
        let hostile = "CANARY\"'><script>alert(1)</script><b x='&amp;";
        let html = render(&everywhere(hostile));
        let escaped = "CANARY&quot;&#39;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;b x=&#39;&amp;amp;";
        assert!(!html.contains("<script") && !html.contains("<b x"), "{html}");
        assert!(!html.contains("CANARY\""), "an attribute closed: {html}");
        for place in [
            format!("<code id=\"replica\">{escaped}</code>"),
            format!("<section id=\"env-{escaped}\">"),
            format!("<h2>env <code>{escaped}</code></h2>"),
            format!("<tr><th>readiness</th><td class=\"bad\">failing (<code>{escaped}</code>)</td></tr>"),
            format!("<td><code>{escaped}</code></td>"),
            format!("by <code>{escaped}</code>: <span class=\"bad\">failed</span> (<code>{escaped}</code>)"),
            format!("not rendered (<code>{escaped}</code>)"),
            format!(
                "<tr class=\"target\" title=\"prod/{escaped}/0\"><td><code>{escaped}</code></td><td>{escaped} <code>out/{escaped}</code></td><td class=\"bad\">failing (<code>{escaped}</code>)</td>"
            ),
        ] {
            assert!(html.contains(&place), "{place} not in:\n{html}");
        }
        let plain = render(&everywhere("web"));
        let names = |h: &str| h.matches("web").count();
        assert_eq!(names(&plain), html.matches(escaped).count(), "every place, and only escaped:\n{html}");
    }

    #[test]
    fn every_state_is_shown() {
        let html = render(&everywhere("web"));
        for text in [
            "<span class=\"bad\" id=\"ready\">not ready</span>",
            "leader election through etcd",
            "<tr><th>etcd watch</th><td class=\"warn\">lost (reconnecting)</td></tr>",
            "<tr><th>etcd revision</th><td>0</td></tr>",
            "<td><time title=\"1970-01-01 00:00:00 UTC\">60 s ago</time></td></tr>",
            "none since <time title=\"1970-01-01 00:00:00 UTC\">60 s ago</time>",
            "<td class=\"bad\">backing off (<code>web</code>)</td><td>—</td></tr>",
            "<tr><th>leader</th><td><span class=\"bad\">none</span></td></tr>",
            "<tr><th>last pass</th><td>none yet</td></tr>",
            "<tr><th>this replica</th><td>follower</td></tr>",
            "0.0/s over the last 10 s (interval and debounce allow 0.0/s)",
            "<tr><th>secret reads</th><td>7 in the last minute (sent to Vault by this replica)</td></tr>",
        ] {
            assert!(html.contains(text), "{text} not in:\n{html}");
        }
        assert!(html.ends_with("</section>\n</body></html>\n"), "{html}");
        assert_eq!(html.matches("<th>secret reads</th>").count(), 1, "not for an env without Vault:\n{html}");
    }
}
