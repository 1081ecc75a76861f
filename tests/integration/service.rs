//! `cfgsync run` as a child process: metrics, health, config reload and
//! graceful shutdown, with the file source. The harness ([`Service`]) is
//! used by the other `service_*` modules too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, wait_until};

/// A running `cfgsync run`, killed (SIGKILL) on drop, also when a test
/// panics. Its stderr goes to a log file outside the project, so project
/// state comparisons do not see it.
pub struct Service {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Service {
    /// Starts `cfgsync run --listen 127.0.0.1:0 ARGS` in `project` with
    /// extra environment `env`, and waits until it serves HTTP.
    pub fn start(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Service {
        let log_dir = tempfile::Builder::new().prefix("cfgsync-service-").tempdir().unwrap();
        let log = log_dir.path().join("service.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut all = vec!["run", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut cmd = project.command(&all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        let pid = child.id();
        let mut service =
            Service { child: Some(child), pid, addr: "127.0.0.1:0".parse().unwrap(), log, _log_dir: log_dir };
        service.addr = wait_until("the service to log its listen address", Duration::from_secs(30), || {
            if let Some(status) = service.try_exit() {
                panic!("cfgsync run exited ({status}) before listening:\n{}", service.log());
            }
            let log = service.log();
            let at = log.find("listening addr=")?;
            let rest = &log[at + "listening addr=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        });
        service
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` over HTTP/1.0: (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").unwrap();
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The value of the sample `name{labels}` exactly as written in the
    /// exposition, e.g. `cfgsync_leader{env="a"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics(), sample)
    }

    /// `/readyz`: (ready, JSON body).
    pub fn readyz(&self) -> (bool, serde_json::Value) {
        let (code, body) = self.get("/readyz").unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(code == 200, json["ready"] == true, "status code and body agree: {code} {body}");
        (code == 200, json)
    }

    pub fn wait_ready(&self, deadline: Duration) -> serde_json::Value {
        wait_until("/readyz to say ready", deadline, || {
            let (ready, body) = self.readyz();
            ready.then_some(body)
        })
    }

    pub fn signal(&self, name: &str) {
        let status =
            std::process::Command::new("kill").arg(format!("-{name}")).arg(self.pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -{name} {}", self.pid);
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        wait_until("the service to exit", deadline, || self.try_exit())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of cfgsync run (pid {}):\n{}", self.pid, self.log());
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// The value of one sample line of an exposition.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// Writes `text` to `path` the way editors save: a new file renamed over
/// the old one.
pub fn save_like_an_editor(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The file's content, or "" when it does not exist (yet).
pub fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every `.cfgsync-*` temp file under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".cfgsync-")) {
                out.push(p);
            }
        }
    }
    out
}

const FILES_CONFIG: &str = r#"
interval = "1h"

[files]
dir = "source"

[service]
debounce = "50ms"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DATABASE_URL = "postgres://{{ key(name='db_user') }}:{{ secret(path='db', field='password') }}@{{ key(name='db_host') }}/api"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"
"#;

const CANARY: &str = "CANARY-5e1f-service";

fn files_project() -> Project {
    let p = Project::new(FILES_CONFIG);
    for env in ["staging", "prod"] {
        p.write(
            &format!("source/{env}.toml"),
            &format!(
                "[keys]\ndb_user = \"api\"\ndb_host = \"db.{env}\"\n[secrets.db]\npassword = \"{CANARY}-{env}\"\n"
            ),
        );
    }
    p
}

#[test]
fn broken_config_is_rejected_and_the_last_good_one_keeps_working() {
    let p = files_project();
    let svc = Service::start(&p, &[], &[("RUST_LOG", "debug")]);
    let body = svc.wait_ready(Duration::from_secs(20));
    assert_eq!(body["envs"]["prod"]["role"], "standalone", "{body}");
    assert_eq!(p.read("out/prod/api.env"), format!("DATABASE_URL=postgres://api:{CANARY}-prod@db.prod/api\n"));

    // A broken config, saved by rename: rejected and logged with file:line.
    let good = p.read("cfgsync.toml");
    save_like_an_editor(&p.path("cfgsync.toml"), &good.replace("[envs.prod]", "[envs.prod]\ncolour = 1"));
    wait_until("the rejected reload to be counted", Duration::from_secs(10), || {
        (svc.metric("cfgsync_config_reloads_total{result=\"rejected\"}") == Some(1.0)).then_some(())
    });
    let log = svc.log();
    let line = log.lines().find(|l| l.contains("rejected the changed configuration")).expect("a rejection line");
    assert!(line.contains("cfgsync.toml:12:1: unknown field `colour`"), "{line}");
    assert!(line.contains("still running the last good one"), "{line}");

    // The old config keeps working: a source change still reaches the target.
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("db.prod", "db2.prod"));
    wait_until("the old config to render the changed source", Duration::from_secs(10), || {
        read_or_empty(&p.path("out/prod/api.env")).contains("@db2.prod/").then_some(())
    });
    assert!(svc.readyz().0, "still ready");

    // A fixed config is picked up.
    let fixed = good.replace("/api\"\n", "/api2\"\n");
    assert_ne!(fixed, good);
    save_like_an_editor(&p.path("cfgsync.toml"), &fixed);
    wait_until("the fixed config to be used", Duration::from_secs(10), || {
        read_or_empty(&p.path("out/prod/api.env")).ends_with("@db2.prod/api2\n").then_some(())
    });
    wait_until("staging too", Duration::from_secs(10), || {
        read_or_empty(&p.path("out/staging/api.env")).ends_with("@db.staging/api2\n").then_some(())
    });
    assert_eq!(svc.metric("cfgsync_config_reloads_total{result=\"ok\"}"), Some(1.0));
    assert!(!svc.log().contains(CANARY), "no secret in the log at debug level");
}

#[test]
fn sigterm_during_a_pass_exits_0_after_the_in_flight_writes() {
    let p = files_project();
    // A slow check: the pass is in flight while it runs. The marker proves
    // the check started before SIGTERM was sent.
    let config = p.read("cfgsync.toml").replace(
        "path = \"out/{{ env }}/api.env\"",
        "path = \"out/{{ env }}/api.env\"\ncheck_cmd = \"touch {{src}}.checking; sleep 1\"",
    );
    p.write("cfgsync.toml", &config);
    let mut svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    for f in temp_files(p.dir.path()) {
        std::fs::remove_file(f).unwrap();
    }

    p.write("source/prod.toml", &p.read("source/prod.toml").replace("db.prod", "db-new.prod"));
    wait_until("the check of the new write to start", Duration::from_secs(10), || {
        temp_files(p.dir.path()).iter().any(|f| f.to_string_lossy().ends_with(".checking")).then_some(())
    });
    let sent = Instant::now();
    svc.signal("TERM");
    let status = svc.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    assert!(took < Duration::from_secs(10), "exited well within the 20 s grace: {took:?}");
    // The in-flight write finished: the new content, complete, nothing staged left behind.
    assert_eq!(p.read("out/prod/api.env"), format!("DATABASE_URL=postgres://api:{CANARY}-prod@db-new.prod/api\n"));
    let left: Vec<_> =
        temp_files(p.dir.path()).into_iter().filter(|f| !f.to_string_lossy().ends_with(".checking")).collect();
    assert!(left.is_empty(), "no partial or staged files: {left:?}");
    let log = svc.log();
    assert!(log.contains("shutting down: no new passes") && log.contains("signal=\"SIGTERM\""), "{log}");
    assert!(log.contains("stopped cleanly"), "every task stopped within the grace period: {log}");
}

#[test]
fn sigint_stops_an_idle_service_at_once() {
    let p = files_project();
    let mut svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    let (code, body) = svc.get("/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let sent = Instant::now();
    svc.signal("INT");
    let status = svc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    assert!(sent.elapsed() < Duration::from_secs(3), "no task kept it waiting: {:?}", sent.elapsed());
    assert!(svc.log().contains("stopped cleanly"));
}

#[test]
fn a_failing_target_backs_off_without_delaying_the_others() {
    let p = files_project();
    let config = format!(
        "{FILES_CONFIG}\n[[output]]\nname = \"broken\"\n[output.entries]\nX = \"{{{{ key(name='db_host') }}}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/broken.env\"\ncheck_cmd = \"false\"\n"
    );
    p.write("cfgsync.toml", &config);
    let svc = Service::start(&p, &[], &[]);
    let body = wait_until("/readyz to name the failing target", Duration::from_secs(20), || {
        let (ready, body) = svc.readyz();
        (!ready && body["envs"]["prod"]["targets"]["prod/broken/0"]["code"] == "check_rejected").then_some(body)
    });
    assert_eq!(body["envs"]["prod"]["state"], "failing", "{body}");
    assert_eq!(body["envs"]["prod"]["code"], "check_rejected", "{body}");
    assert!(body["envs"]["prod"]["targets"].get("prod/api/0").is_none(), "only the failing target: {body}");
    // The healthy output was written all the same.
    assert!(p.read("out/prod/api.env").contains("@db.prod/"));
    // A change reaches the healthy target while the broken one backs off.
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("db.prod", "db3.prod"));
    wait_until("the healthy target to converge", Duration::from_secs(10), || {
        read_or_empty(&p.path("out/prod/api.env")).contains("@db3.prod/").then_some(())
    });
    // The broken one is retried on its own timer (1 s, 2 s, ...).
    wait_until("three attempts of the broken target", Duration::from_secs(15), || {
        (svc.metric("cfgsync_target_writes_total{kind=\"file\",result=\"error\"}")? >= 6.0).then_some(())
    });
    assert!(svc.log().contains("target failed; backing off"));
}

/// After a restart nothing is written (the targets are as they should
/// be), and nothing recorded when they were: "last change" says since when
/// they are unchanged instead of nothing; targets are named by output and
/// destination.
#[test]
fn the_status_page_fills_last_change_after_a_restart() {
    let p = files_project();
    let rows = |svc: &Service| -> Vec<String> {
        let (_, html) = svc.get("/").unwrap();
        html.split("<tr class=\"target\"").skip(1).map(|r| r.split("</tr>").next().unwrap().to_owned()).collect()
    };
    let mut svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(20));
    for row in rows(&svc) {
        assert!(row.contains("<td><code>api</code></td><td>file <code>out/"), "{row}");
        assert!(row.ends_with("ago</time></td>") && !row.contains("none since"), "written now: {row}");
    }
    svc.kill();
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(20));
    let rows = rows(&svc);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert!(row.contains("<td>none since <time title="), "unchanged since the first pass: {row}");
    }
}
