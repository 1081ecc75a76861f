//! The GitHub emulator's contract suite: each scenario of
//! `api/github_scenarios.rs` against a fresh emulator, over real HTTP, plus
//! the plumbing that only makes sense directly (dropped connections,
//! latency, request counts, the binary). `github_openapi.rs` runs the same
//! scenarios through Prism against GitHub's OpenAPI description.

#[path = "api/http.rs"]
mod http;
#[path = "api/github_scenarios.rs"]
mod scenarios;

use std::time::{Duration, Instant};

use kube_emulator::{Fault, GithubEmulator, Verb};
use serde_json::json;

use http::Client;

fn client(gh: &GithubEmulator) -> Client {
    Client::direct(&gh.url(), &scenarios::headers())
}

macro_rules! one_test_per_scenario {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let gh = GithubEmulator::start();
                scenarios::$name(&client(&gh), &gh).await;
            }
        )*
    };
}

for_each_github_scenario!(one_test_per_scenario);

#[tokio::test]
async fn requests_are_logged_and_counted_by_route_pattern() {
    let gh = GithubEmulator::start();
    let c = client(&gh);
    c.req("GET", "/repos/o/r/actions/secrets/public-key").send().await;
    c.req("GET", "/repos/o/r/environments/prod/secrets/X").send().await;
    c.req("POST", "/orgs/o/actions/variables")
        .json(&json!({"name": "A", "value": "b", "visibility": "all"}))
        .send()
        .await;
    c.req("GET", "/repos/o/r/actions/runs").send().await;
    let counts = gh.requests();
    assert_eq!(counts.get("GET", "/repos/{owner}/{repo}/actions/secrets/public-key"), 1);
    assert_eq!(counts.get("GET", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}"), 1);
    assert_eq!(counts.get("POST", "/orgs/{org}/actions/variables"), 1);
    assert_eq!(counts.get("GET", "unrouted"), 1);
    assert_eq!((counts.writes(), counts.total()), (1, 4));
    let log = gh.request_log();
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [Some(200), Some(404), Some(201), Some(404)]);
    assert_eq!(log[1].path, "/repos/o/r/environments/prod/secrets/X");
    gh.reset_requests();
    assert_eq!(gh.requests().total(), 0);
}

#[tokio::test]
async fn errors_drops_latency_and_down_then_recovery() {
    let gh = GithubEmulator::start();
    let c = client(&gh);
    let path = "/repos/o/r/actions/variables";
    gh.set_fault(Fault::Errors { count: 2 });
    for _ in 0..2 {
        let r = c.req("GET", path).send().await;
        assert_eq!((r.status, r.json()["message"].clone()), (500, json!("Server Error")));
    }
    assert_eq!(c.req("GET", path).send().await.status, 200);
    gh.set_fault_on(&Verb::WRITES, Fault::DropConnections { count: 1 });
    assert_eq!(c.req("GET", path).send().await.status, 200, "reads pass");
    assert!(c.req("POST", path).json(&json!({"name": "A", "value": "b"})).try_send().await.is_err());
    assert_eq!(c.req("POST", path).json(&json!({"name": "A", "value": "b"})).send().await.status, 201);
    gh.set_fault(Fault::Latency(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(c.req("GET", path).send().await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "answered after {:?}", t.elapsed());
    gh.set_fault(Fault::Down);
    assert!(c.req("GET", path).try_send().await.is_err(), "refused while down");
    gh.clear_fault();
    assert_eq!(c.req("GET", path).send().await.status, 200);
}

#[test]
fn the_binary_prints_its_url_and_serves_until_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_github-emulator"))
        .args(["--listen", "127.0.0.1:0", "--environment", "o/r/prod"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start github-emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("first line");
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let auth = [("authorization".to_string(), "Bearer x".to_string())];
    let r = rt.block_on(http::send(&url, "GET", "/orgs/o/actions/secrets/public-key", &auth, None)).unwrap();
    assert_eq!(r.status, 200);
    let r = rt.block_on(http::send(&url, "GET", "/repos/o/r/environments/prod/variables", &auth, None)).unwrap();
    assert_eq!(r.status, 200, "--environment creates it");
    let r = rt.block_on(http::send(&url, "GET", "/repos/o/r/environments/qa/variables", &auth, None)).unwrap();
    assert_eq!(r.status, 404, "any other does not exist");
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exits 0 on SIGTERM: {status}");
}
