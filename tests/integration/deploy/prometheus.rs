//! deploy/prometheus: the alert rules, their promtool unit tests, and the
//! Grafana dashboard, held to what `cfgsync run` really serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{promtool, read, repo, yaml};
use crate::service::{Service, metric_value, read_or_empty};
use crate::support::wait_until;
use crate::support::{Etcd, Project, Vault, run_output};

const RULES: &str = "deploy/prometheus/cfgsync-alerts.yml";
const DASHBOARD: &str = "deploy/prometheus/cfgsync-dashboard.json";

/// Label values the rules match on that a healthy service with a root
/// token never serves: a root token never expires, so it is never renewed,
/// and nothing fails in these tests. Each must still be a value that
/// src/metrics.rs writes.
const EVENT_ONLY: [(&str, &str, &str); 3] = [
    ("cfgsync_vault_credential_events_total", "event", "renewed"),
    ("cfgsync_vault_credential_events_total", "event", "renew_failed"),
    ("cfgsync_vault_credential_events_total", "event", "login_failed"),
];

fn unit_tests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/prometheus/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn alerts() -> Vec<Value> {
    let rules = yaml(RULES);
    rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = run_output(Command::new(promtool()).args(["check", "rules"]).arg(repo(RULES)).output().unwrap());
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains(&format!("SUCCESS: {} rules found", alerts().len())), "{check:?}");

    let tests = unit_tests();
    assert!(!tests.is_empty());
    let test = run_output(
        Command::new(promtool())
            .args(["test", "rules"])
            .args(&tests)
            .current_dir(repo("deploy/prometheus"))
            .output()
            .unwrap(),
    );
    assert_eq!(test.code, 0, "{test:?}");
    assert_eq!(test.stdout.matches("SUCCESS").count(), tests.len(), "{test:?}");
}

/// docs/observability.md's scrape configuration, with its rule file
/// pointed at the repository's.
#[test]
fn the_documented_prometheus_config_loads_the_rules() {
    let doc = read("docs/observability.md");
    let block = doc.split_once("```yaml\n").and_then(|(_, rest)| rest.split_once("```")).expect("a yaml block").0;
    let shipped = "/etc/prometheus/rules/cfgsync-alerts.yml";
    assert!(block.contains(shipped), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, block.replace(shipped, repo(RULES).to_str().unwrap())).unwrap();
    let check = run_output(Command::new(promtool()).args(["check", "config"]).arg(&config).output().unwrap());
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains(&format!("SUCCESS: {} rules found", alerts().len())), "{check:?}");
}

/// promtool passes a test of an alert that does not exist as long as it
/// expects nothing, so the names are checked here, and each alert must be
/// seen both firing and quiet.
#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() {
    let names: BTreeSet<String> = alerts().iter().map(|r| r["alert"].as_str().unwrap().to_owned()).collect();
    assert!(names.len() >= 6, "{names:?}");
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for file in unit_tests() {
        let shown = file.display().to_string();
        let doc = yaml(file.strip_prefix(repo("")).unwrap().to_str().unwrap());
        assert_eq!(doc["rule_files"], json!(["../cfgsync-alerts.yml"]), "{shown}");
        for case in doc["tests"].as_array().unwrap() {
            for t in case["alert_rule_test"].as_array().unwrap() {
                let name = t["alertname"].as_str().unwrap().to_owned();
                assert!(names.contains(&name), "{shown}: tests {name}, which is not an alert of {RULES}");
                let expected = t["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 { &mut quiet } else { &mut fired }.insert(name);
            }
        }
    }
    for name in &names {
        assert!(fired.contains(name), "no unit test in deploy/prometheus/tests fires {name}");
        assert!(quiet.contains(name), "no unit test in deploy/prometheus/tests shows {name} quiet");
    }
}

#[test]
fn dashboard_is_grafana_json_whose_queries_are_promql() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "cfgsync");
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["datasource", "job", "env"]);

    let mut ids = BTreeSet::new();
    let mut records = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel {title}: id used twice");
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "panel {title}: wider than the grid");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}");
            let expr = t["expr"].as_str().unwrap();
            let expr = expr.replace("$__rate_interval", "5m").replace("$job", ".+").replace("$env", ".+");
            assert!(!expr.contains('$'), "panel {title}: a variable the test does not know: {expr}");
            records.push(json!({ "record": format!("dashboard:panel_{}_{}", panel["id"], t["refId"].as_str().unwrap()), "expr": expr }));
        }
    }
    assert!(records.len() >= 10, "{records:?}");

    // promtool parses every query as the expression of a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let rules = json!({ "groups": [{ "name": "dashboard", "rules": records }] });
    std::fs::write(&file, serde_json::to_string(&rules).unwrap()).unwrap();
    let check = run_output(Command::new(promtool()).args(["check", "rules"]).arg(&file).output().unwrap());
    assert_eq!(check.code, 0, "{check:?}");

    // And the check can fail: a query that is not PromQL.
    let bad =
        json!({ "groups": [{ "name": "d", "rules": [{ "record": "x", "expr": "sum by (env (cfgsync_leader)" }] }] });
    std::fs::write(&file, serde_json::to_string(&bad).unwrap()).unwrap();
    assert_ne!(Command::new(promtool()).args(["check", "rules"]).arg(&file).output().unwrap().status.code(), Some(0));
}

/// Every panel, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn config(etcd: &Etcd, vault: &Vault) -> String {
    format!(
        r#"interval = "1m"

[etcd]
endpoints = ["{}"]

[vault]
address = "{}"
auth = {{ method = "token", token_file = "vault-token" }}

[envs.prod]

[[output]]
name = "db"
[output.entries]
PASSWORD = "{{{{ secret(path='db', field='password') }}}}"
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "file"
path = "out/db.env"
"#,
        etcd.endpoint, vault.addr
    )
}

/// etcd, OpenBao and `cfgsync run` on one env that reads both, once its
/// first pass wrote the file and was recorded, and its watch is up.
fn observed_service() -> (Etcd, Vault, Project, Service) {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/host", "db-1.prod");
    vault.kv_put("prod/db", &[("password", "CANARY-metrics-contract")]);
    let p = Project::new(&config(&etcd, &vault));
    p.write("vault-token", &vault.root_token);
    let svc = Service::start(&p, &[], &[]);
    wait_until("the first pass", Duration::from_secs(30), || {
        read_or_empty(&p.path("out/db.env")).contains("HOST=db-1.prod").then_some(())
    });
    // The pass is recorded in the metrics after its writes: wait for that too.
    wait_until("the etcd watch and the first pass's metrics", Duration::from_secs(30), || {
        let text = svc.metrics();
        let watching = metric_value(&text, "cfgsync_watch_up{env=\"prod\",kind=\"etcd\"}") == Some(1.0);
        let passed =
            metric_value(&text, "cfgsync_reconcile_duration_seconds_count{env=\"prod\"}").is_some_and(|n| n >= 1.0);
        (watching && passed).then_some(())
    });
    (etcd, vault, p, svc)
}

#[test]
fn rules_and_dashboard_name_only_metrics_labels_and_values_cfgsync_serves() {
    let metrics_rs = read("src/metrics.rs");
    for (_, _, value) in EVENT_ONLY {
        assert!(metrics_rs.contains(&format!("\"{value}\"")), "src/metrics.rs no longer writes {value:?}");
    }
    let (_etcd, _vault, _p, svc) = observed_service();
    let served = Served::parse(&svc.metrics());

    let mut queries = Vec::new();
    for rule in alerts() {
        let texts =
            rule["annotations"].as_object().unwrap().values().chain(rule["labels"].as_object().unwrap().values());
        queries.push(Query {
            origin: format!("alert {}", rule["alert"].as_str().unwrap()),
            expr: rule["expr"].as_str().unwrap().to_owned(),
            used: texts.flat_map(|t| template_labels(t.as_str().unwrap(), "$labels.", "")).collect(),
            required: Vec::new(),
        });
    }
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    for panel in panels(&dashboard) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                origin: format!("panel {:?} query {}", panel["title"].as_str().unwrap(), t["refId"].as_str().unwrap()),
                expr: t["expr"].as_str().unwrap().to_owned(),
                used: template_labels(t["legendFormat"].as_str().unwrap_or(""), "{{", "}}"),
                required: Vec::new(),
            });
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let query = var["query"]["query"].as_str().unwrap();
        let (selector, label) =
            query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')?.rsplit_once(',')).unwrap();
        queries.push(Query {
            origin: format!("variable {}", var["name"].as_str().unwrap()),
            expr: selector.to_owned(),
            used: Vec::new(),
            required: vec![label.trim().to_owned()],
        });
    }

    let mut problems = Vec::new();
    for q in &queries {
        q.check(&served, &mut problems);
    }
    assert!(problems.is_empty(), "{}\n--- served:\n{}", problems.join("\n"), svc.metrics());

    // The checks can fail.
    let mut found = Vec::new();
    Query {
        origin: "typo".into(),
        expr: r#"sum by (env, reason) (increase(cfgsync_vault_credential_events_total{event="renewal_failed"}[5m])) or cfgsync_leeder"#.into(),
        used: vec!["instance".into()],
        required: Vec::new(),
    }
    .check(&served, &mut found);
    // renewal_failed, cfgsync_leeder, grouping by env and by reason, printing instance.
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn watch_up_follows_the_etcd_watch_and_secret_reads_are_counted() {
    let (mut etcd, _vault, p, svc) = observed_service();
    let reads = |svc: &Service| metric_value(&svc.metrics(), "cfgsync_secret_reads_total{env=\"prod\"}").unwrap();
    let before = reads(&svc);
    assert!(before >= 1.0, "{}", svc.metrics());

    // A change: the pass it triggers reuses the secret version held
    // (`[vault] refresh`, 10 minutes by default): no Vault read.
    etcd.put("/cfgsync/prod/host", "db-2.prod");
    wait_until("the change", Duration::from_secs(30), || {
        read_or_empty(&p.path("out/db.env")).contains("HOST=db-2.prod").then_some(())
    });
    assert_eq!(reads(&svc), before, "{}", svc.metrics());

    let up = |svc: &Service| metric_value(&svc.metrics(), "cfgsync_watch_up{env=\"prod\",kind=\"etcd\"}");
    etcd.stop();
    wait_until("the watch to be down", Duration::from_secs(30), || (up(&svc) == Some(0.0)).then_some(()));
    etcd.restart();
    wait_until("the watch to be back", Duration::from_secs(30), || (up(&svc) == Some(1.0)).then_some(()));
}

/// What `/metrics` serves: sample name → label name → the values seen.
struct Served(BTreeMap<String, BTreeMap<String, BTreeSet<String>>>);

impl Served {
    fn parse(text: &str) -> Served {
        let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = out.entry(line[..end].to_owned()).or_default();
            if line[end..].starts_with('{') {
                let inner = &line[end + 1..line.rfind('}').unwrap()];
                for (k, v) in matchers(inner).into_iter().map(|m| (m.label, m.value)) {
                    labels.entry(k).or_default().insert(v);
                }
            }
        }
        Served(out)
    }
}

/// One PromQL expression of a rule or a panel: `used` are the labels its
/// templates (annotations, legend) print, `required` those it must have.
struct Query {
    origin: String,
    expr: String,
    used: Vec<String>,
    required: Vec<String>,
}

/// Labels every scraped series gets from Prometheus itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

impl Query {
    fn check(&self, served: &Served, problems: &mut Vec<String>) {
        let origin = &self.origin;
        let selected = selectors(&self.expr);
        if selected.is_empty() {
            problems.push(format!("{origin}: names no cfgsync metric: {}", self.expr));
        }
        let mut all: BTreeSet<String> = TARGET_LABELS.map(String::from).into();
        for (name, matchers) in &selected {
            let Some(labels) = served.0.get(name) else {
                problems.push(format!("{origin}: cfgsync run serves no {name}"));
                continue;
            };
            all.extend(labels.keys().cloned());
            for m in matchers.iter().filter(|m| !TARGET_LABELS.contains(&m.label.as_str())) {
                let Some(values) = labels.get(&m.label) else {
                    problems.push(format!("{origin}: {name} has no label {}", m.label));
                    continue;
                };
                // A dashboard variable, a negative matcher, a real regex: nothing to look up.
                if m.value.contains(['$', '.', '*', '+', '?', '[', '(']) || m.op.starts_with('!') {
                    continue;
                }
                for value in m.value.split('|') {
                    let event_only = EVENT_ONLY.contains(&(name.as_str(), m.label.as_str(), value));
                    if !values.contains(value) && !event_only {
                        problems.push(format!("{origin}: {name} never has {}={value:?}", m.label));
                    }
                }
            }
        }
        let grouped = groupings(&self.expr);
        for (_, labels) in &grouped {
            for l in labels.iter().filter(|l| !all.contains(*l)) {
                problems.push(format!("{origin}: groups by {l}, a label none of its metrics has"));
            }
        }
        // What the result carries: the labels aggregated by, else every label.
        let by: Vec<&BTreeSet<String>> = grouped.iter().filter(|(k, _)| k == "by").map(|(_, l)| l).collect();
        let result: BTreeSet<String> = match by.split_first() {
            Some((first, rest)) => first.iter().filter(|l| rest.iter().all(|r| r.contains(*l))).cloned().collect(),
            None => all.clone(),
        };
        for l in self.used.iter().filter(|l| !result.contains(*l)) {
            problems.push(format!("{origin}: prints label {l}, which its result does not have ({result:?})"));
        }
        for l in self.required.iter().filter(|l| !all.contains(*l)) {
            problems.push(format!("{origin}: needs label {l}, which none of its metrics has"));
        }
    }
}

#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `a="x", b=~"y|z"` as matchers (also a sample's label set).
fn matchers(inner: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let label = rest[..name_end].to_owned();
        rest = rest[name_end..].trim_start();
        let op_len = ["=~", "!~", "!=", "="].iter().find(|op| rest.starts_with(**op)).map_or(0, |op| op.len());
        let op = rest[..op_len].to_owned();
        rest = rest[op_len..]
            .trim_start()
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a matcher without a quoted value: {inner}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("an unterminated value: {inner}"),
            }
        };
        out.push(Matcher { label, op, value });
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// Every `cfgsync_*` metric an expression selects, with its matchers.
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = expr[at..].find("cfgsync_") {
        let start = at + found;
        let end = expr[start..].find(|c: char| !is_ident(c)).map_or(expr.len(), |e| start + e);
        at = end;
        if expr[..start].ends_with(is_ident) {
            continue;
        }
        let name = expr[start..end].to_owned();
        let after = expr[end..].trim_start();
        let matchers = match after.strip_prefix('{') {
            Some(body) => matchers(&body[..body.find('}').unwrap()]),
            None => Vec::new(),
        };
        out.push((name, matchers));
    }
    out
}

/// The label lists of `by`, `without`, `on`, `ignoring`, `group_left` and
/// `group_right`, outside selectors' braces.
fn groupings(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut bare = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut rest = bare.as_str();
    while let Some(i) = rest.find(|c: char| is_ident(c)) {
        let word_end = rest[i..].find(|c: char| !is_ident(c)).map_or(rest.len(), |e| i + e);
        let word = &rest[i..word_end];
        rest = &rest[word_end..];
        if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word)
            && let Some(list) = rest.trim_start().strip_prefix('(')
        {
            let close = list.find(')').unwrap();
            let labels = list[..close].split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            out.push((word.to_owned(), labels));
        }
    }
    out
}

/// The label names a template prints: `$labels.env` (`open` = "$labels.",
/// `close` = "") or `{{env}}` (Grafana's legend).
fn template_labels(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        rest = rest[i + open.len()..].trim_start();
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if rest[end..].trim_start().starts_with(close) && end > 0 {
            out.push(rest[..end].to_owned());
        }
        rest = &rest[end..];
    }
    out
}
