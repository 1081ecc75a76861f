//! The status page `/` of `cfgsync run`: every env and target of a two-env
//! test bed, with leaders and states, through a plain HTTP client and in a
//! real headless browser (Debian's chromium, `CFGSYNC_TEST_CHROMIUM`); no
//! secret, no script, names escaped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::service::Service;
use crate::support::{Etcd, Project, Vault, wait_until};

const CANARY: &str = "CANARY-4a7e-page";

fn config(etcd: &Etcd, vault: &Vault) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[vault]
address = "{}"
auth = {{ method = "token", token_file = "vault-token" }}

[service]
debounce = "20ms"
[service.election]
ttl = "3s"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/api.env"

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='db_host') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/web<i>.env"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/web-checked.env"
check_cmd = "grep -q staging {{{{src}}}}"
"#,
        etcd.endpoint, vault.addr
    )
}

/// `GET /` with headers: (status line and headers, body).
fn get_with_headers(svc: &Service) -> (String, String) {
    let mut s = TcpStream::connect(svc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {}\r\n\r\n", svc.addr).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

/// Everything the page must show for the test bed.
fn assert_page(html: &str, how: &str) {
    assert!(!html.contains(CANARY), "{how}: a secret on the page");
    for env in ["staging", "prod"] {
        assert!(html.contains(&format!("env <code>{env}</code>")), "{how}: env {env}:\n{html}");
        // Each target by its output and destination, its id as the tooltip.
        for (id, output, file) in
            [("api/0", "api", "api.env"), ("web/0", "web", "web&lt;i&gt;.env"), ("web/1", "web", "web-checked.env")]
        {
            let row = format!(
                "<tr class=\"target\" title=\"{env}/{id}\"><td><code>{output}</code></td><td>file <code>out/{env}/{file}</code></td>"
            );
            assert!(html.contains(&row), "{how}: target {env}/{id} as {row}:\n{html}");
        }
    }
    // Every target that was written says when.
    let rows: Vec<&str> = html.split("<tr class=\"target\"").skip(1).collect();
    let written = rows.iter().filter(|r| !r.contains("failing") && !r.contains("backing off"));
    for row in written {
        assert!(row.contains("ago</time></td></tr>"), "{how}: a last change:\n{row}");
    }
    assert!(!html.contains("web<i>"), "{how}: a name became markup");
    assert!(html.contains("<code>P1</code>"), "{how}: the leader");
    assert!(
        html.contains("failing (<code>check_rejected</code>)")
            || html.contains("backing off (<code>check_rejected</code>)"),
        "{how}: prod's checked target fails:\n{html}"
    );
    assert!(html.contains("href=\"/metrics\"") && html.contains("href=\"/readyz\""), "{how}: links");
    assert!(!html.contains("<script"), "{how}: no script");
}

/// Each env's secret reads of the last minute are on the page and in
/// `/readyz`, and agree with `cfgsync_secret_reads_total` (the service
/// started less than a minute ago, so the window holds every read).
fn secret_reads_shown(svc: &Service) {
    let total = |env: &str| svc.metric(&format!("cfgsync_secret_reads_total{{env=\"{env}\"}}")).unwrap();
    // Read the counter on both sides of the page: equal, no read came between.
    let (html, readyz, totals) = wait_until("a quiet moment", Duration::from_secs(10), || {
        let before = (total("staging"), total("prod"));
        let (_, html) = get_with_headers(svc);
        let (_, readyz) = svc.readyz();
        (before == (total("staging"), total("prod"))).then_some((html, readyz, before))
    });
    for (env, n) in [("staging", totals.0), ("prod", totals.1)] {
        assert!(n >= 1.0, "{env}: the first pass read its secret");
        let section = html.split(&format!("<section id=\"env-{env}\">")).nth(1).unwrap();
        let row =
            format!("<tr><th>secret reads</th><td>{n} in the last minute (sent to Vault by this replica)</td></tr>");
        assert!(section.split("</section>").next().unwrap().contains(&row), "{row} for {env}:\n{html}");
        assert_eq!(readyz["envs"][env]["secret_reads_last_minute"].as_f64(), Some(n), "{readyz}");
    }
}

#[test]
fn the_status_page_shows_every_env_and_target_in_plain_http_and_a_real_browser() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    for env in ["staging", "prod"] {
        etcd.put(&format!("/cfgsync/{env}/db_host"), &format!("db.{env}"));
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{env}"))]);
    }
    let p = Project::new(&config(&etcd, &vault));
    p.write("vault-token", &vault.root_token);
    let svc = Service::start(&p, &["--replica-id", "P1"], &[]);
    wait_until("staging ready and prod failing on its check", Duration::from_secs(30), || {
        let (_, body) = svc.readyz();
        (body["envs"]["staging"]["state"] == "ok" && body["envs"]["prod"]["code"] == "check_rejected").then_some(())
    });

    let (head, html) = get_with_headers(&svc);
    assert!(head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert_page(&html, "plain HTTP");
    secret_reads_shown(&svc);

    let chromium = std::env::var("CFGSYNC_TEST_CHROMIUM")
        .expect("CFGSYNC_TEST_CHROMIUM: run the tests with scripts/test.sh, which installs Debian's chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("http://{}/", svc.addr))
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {chromium}: {e}"));
    let started = Instant::now();
    let status = wait_until("chromium to dump the DOM", Duration::from_secs(90), || child.try_wait().unwrap());
    let mut dom = String::new();
    child.stdout.take().unwrap().read_to_string(&mut dom).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "chromium failed ({status}): {err}");
    eprintln!("chromium --dump-dom took {:?}", started.elapsed());
    // What the browser built from the page: the parsed and serialized DOM.
    assert!(dom.contains("<title>cfgsync status</title>"), "{dom}\n{err}");
    assert_page(&dom, "chromium");
    assert_eq!(dom.matches("<tr class=\"target\" title=").count(), 6, "six targets in the DOM:\n{dom}");
}
