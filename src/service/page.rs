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
//! been found unchanged); then links to `/metrics` and `/readyz`.
//!
//! Decisions:
//! - **No JavaScript**, no external resources: the response carries a
//!   `Content-Security-Policy` that forbids scripts, and the page works in
//!   any browser or `curl`. Refresh the page to refresh the data.
//! - **Nothing secret can be on it**: it is built from the status board,
//!   which holds states, codes, names and times only (never error text).
//! - **Everything is escaped**: env, output and target names, addresses
//!   and replica ids come from the config or from etcd and may hold any
//!   characters; each one goes through [`escape`].

use std::fmt::Write;

use super::published::{TargetRecord, TargetState};
use super::status::Snapshot;

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

/// `YYYY-MM-DD hh:mm:ss UTC` from Unix milliseconds.
pub fn utc(ms: u64) -> String {
    crate::utc::from_unix_ms(ms)
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

fn when(now_ms: u64, ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("<time title=\"{}\">{}</time>", utc(ms), ago(now_ms, ms)),
        None => "—".to_owned(),
    }
}

/// "Last change": cfgsync's last write, else since when it is unchanged.
fn last_change(now_ms: u64, t: &TargetRecord) -> String {
    match (t.last_change_ms, t.unchanged_since_ms) {
        (Some(ms), _) => when(now_ms, Some(ms)),
        (None, Some(since)) => format!("none since {}", when(now_ms, Some(since))),
        (None, None) => when(now_ms, None),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}\
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code{font-size:.95em}\
.ok{color:#176f2c}.bad{color:#b00020;font-weight:bold}.warn{color:#9a6700}";

/// The page for `snap`.
pub fn render(snap: &Snapshot) -> String {
    let now = snap.clock.now_ms;
    let ready = snap.envs.iter().all(|(_, _, v)| v.ready());
    let mut h = String::with_capacity(4096);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>cfgsync status</title><style>{STYLE}</style></head><body>\n\
<h1>cfgsync</h1>\n<p>Replica <code id=\"replica\">{}</code> ({}) — <span class=\"{}\" id=\"ready\">{}</span> — \
<a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a> · <a href=\"/healthz\">/healthz</a></p>\n\
<p>Rendered {}.</p>\n",
        escape(&snap.replica),
        if snap.election { "leader election through etcd" } else { "standalone: writes every env" },
        if ready { "ok" } else { "bad" },
        if ready { "ready" } else { "not ready" },
        utc(now),
    );
    for (env, view, verdict) in &snap.envs {
        let env_html = escape(env);
        let _ = write!(h, "<section id=\"env-{env_html}\">\n<h2>env <code>{env_html}</code></h2>\n<table>\n");
        let class = if verdict.ready() { "ok" } else { "bad" };
        let code = verdict.code.as_deref().map(|c| format!(" (<code>{}</code>)", escape(c))).unwrap_or_default();
        let _ = writeln!(h, "<tr><th>readiness</th><td class=\"{class}\">{}{code}</td></tr>", escape(verdict.state));
        let leader = match (&view.leader, snap.election) {
            (Some(l), _) => format!("<code>{}</code>", escape(l)),
            (None, true) => "<span class=\"bad\">none</span>".to_owned(),
            (None, false) => "this replica (no election)".to_owned(),
        };
        let _ = writeln!(h, "<tr><th>leader</th><td>{leader}</td></tr>");
        let _ = writeln!(h, "<tr><th>this replica</th><td>{}</td></tr>", view.role.as_str());
        let passes = view.passes;
        let _ = writeln!(
            h,
            "<tr><th>passes here</th><td class=\"{}\">{:.1}/s over the last 10 s (interval and debounce allow {:.1}/s{})</td></tr>",
            if passes.too_high() { "bad" } else { "ok" },
            passes.per_second(),
            passes.allowed_per_second(),
            if passes.too_high() { ": more is a bug in cfgsync, see the log" } else { "" },
        );
        if view.watch_lost {
            let _ = writeln!(h, "<tr><th>etcd watch</th><td class=\"warn\">lost (reconnecting)</td></tr>");
        }
        match &view.record {
            None => {
                let _ = writeln!(h, "<tr><th>last pass</th><td>none yet</td></tr>\n</table>");
            }
            Some(r) => {
                let result = if r.ok {
                    "<span class=\"ok\">succeeded</span>".to_owned()
                } else {
                    let code = r.code.as_deref().map(|c| format!(" (<code>{}</code>)", escape(c))).unwrap_or_default();
                    format!("<span class=\"bad\">failed</span>{code}")
                };
                let _ = writeln!(
                    h,
                    "<tr><th>last pass</th><td>{} by <code>{}</code>: {result}</td></tr>",
                    when(now, Some(r.at_ms)),
                    escape(&r.leader),
                );
                let rev = r.revision.map_or_else(|| "—".to_owned(), |v| v.to_string());
                let _ = writeln!(h, "<tr><th>etcd revision</th><td>{rev}</td></tr>\n</table>");
                if !r.outputs.is_empty() {
                    let _ = writeln!(h, "<table><tr><th>output</th><th>state</th></tr>");
                    for o in &r.outputs {
                        let _ = writeln!(
                            h,
                            "<tr><td><code>{}</code></td><td class=\"bad\">not rendered (<code>{}</code>)</td></tr>",
                            escape(&o.name),
                            escape(&o.code)
                        );
                    }
                    let _ = writeln!(h, "</table>");
                }
                let _ = writeln!(
                    h,
                    "<table><tr><th>output</th><th>destination</th><th>state</th><th>last change</th></tr>"
                );
                for t in &r.targets {
                    let (class, label) = match t.state {
                        TargetState::Ok => ("ok", "ok"),
                        TargetState::DriftReverted => ("warn", "drift reverted"),
                        TargetState::Failing => ("bad", "failing"),
                        TargetState::BackingOff => ("bad", "backing off"),
                    };
                    let code = t.code.as_deref().map(|c| format!(" (<code>{}</code>)", escape(c))).unwrap_or_default();
                    let _ = writeln!(
                        h,
                        "<tr class=\"target\" title=\"{}\"><td><code>{}</code></td><td>{} <code>{}</code></td><td class=\"{class}\">{label}{code}</td><td>{}</td></tr>",
                        escape(&t.id),
                        escape(t.output_name()),
                        escape(&t.kind),
                        escape(&t.address),
                        last_change(now, t),
                    );
                }
                let _ = writeln!(h, "</table>");
            }
        }
        let _ = writeln!(h, "</section>");
    }
    h.push_str("</body></html>\n");
    h
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
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599_999), "2024-12-31 23:59:59 UTC");
        assert_eq!(ago(200_000, 80_000), "2 min ago");
        assert_eq!(ago(80_000, 200_000), "0 s ago", "a clock ahead of ours");
    }

    #[test]
    fn names_from_the_config_and_etcd_are_escaped() {
        let hostile = "<script>alert(1)</script>";
        let record = EnvRecord {
            leader: hostile.into(),
            at_ms: 1_000,
            revision: Some(3),
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
}
