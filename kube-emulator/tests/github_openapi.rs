//! The GitHub emulator checked against GitHub's published OpenAPI
//! description (npm `@octokit/openapi`): every scenario of the contract
//! suite runs again with its requests sent through Prism (npm
//! `@stoplight/prism-cli`) as a validating proxy. A request the description
//! allows must reach the emulator and come back without violations; the
//! requests the suite sends broken on purpose must be refused by Prism too.
//!
//! Needs `CFGSYNC_TEST_PRISM` and `CFGSYNC_TEST_GITHUB_OPENAPI` (set by
//! scripts/test.sh); without them the test fails and says what to run.

#[path = "api/http.rs"]
mod http;
#[path = "api/github_scenarios.rs"]
mod scenarios;

use kube_emulator::GithubEmulator;
use kube_emulator::github::prism::Prism;

use http::Client;

macro_rules! run_all {
    ($($name:ident),* $(,)?) => {
        async fn run_all(c: &Client, gh: &GithubEmulator) -> Vec<&'static str> {
            let mut ran = Vec::new();
            $(
                scenarios::$name(c, gh).await;
                ran.push(stringify!($name));
            )*
            ran
        }
    };
}

for_each_github_scenario!(run_all);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_of_the_contract_suite_is_valid_against_githubs_openapi_description() {
    let gh = GithubEmulator::start();
    let prism = Prism::from_env(&gh.url()).unwrap_or_else(|e| panic!("{e}"));
    let c = Client::through_prism(prism.url(), &gh.url(), &scenarios::headers());
    let ran = run_all(&c, &gh).await;
    let judged = c.judged.lock().unwrap();
    let rejected = judged.iter().filter(|(_, v)| !v.request_rejected.is_empty()).count();
    eprintln!(
        "{} scenarios, {} exchanges judged by Prism ({} refused on purpose); emulator saw {}",
        ran.len(),
        judged.len(),
        rejected,
        gh.requests()
    );
    assert!(judged.len() > 100, "the scenarios went through Prism: {}", judged.len());
    assert!(rejected >= 6, "the on-purpose broken requests were judged: {rejected}");
    // Every route pattern the emulator serves was exercised through Prism.
    let counts = gh.requests();
    for (method, route) in [
        ("GET", "/repos/{owner}/{repo}/actions/secrets"),
        ("GET", "/repos/{owner}/{repo}/actions/secrets/public-key"),
        ("PUT", "/repos/{owner}/{repo}/actions/secrets/{secret_name}"),
        ("GET", "/repos/{owner}/{repo}/actions/secrets/{secret_name}"),
        ("DELETE", "/repos/{owner}/{repo}/actions/secrets/{secret_name}"),
        ("GET", "/repos/{owner}/{repo}/actions/variables"),
        ("POST", "/repos/{owner}/{repo}/actions/variables"),
        ("GET", "/repos/{owner}/{repo}/actions/variables/{name}"),
        ("PATCH", "/repos/{owner}/{repo}/actions/variables/{name}"),
        ("DELETE", "/repos/{owner}/{repo}/actions/variables/{name}"),
        ("GET", "/orgs/{org}/actions/secrets"),
        ("GET", "/orgs/{org}/actions/secrets/public-key"),
        ("PUT", "/orgs/{org}/actions/secrets/{secret_name}"),
        ("GET", "/orgs/{org}/actions/secrets/{secret_name}"),
        ("GET", "/orgs/{org}/actions/variables"),
        ("POST", "/orgs/{org}/actions/variables"),
        ("GET", "/orgs/{org}/actions/variables/{name}"),
        ("PATCH", "/orgs/{org}/actions/variables/{name}"),
        ("GET", "/repos/{owner}/{repo}/environments/{environment_name}/secrets"),
        ("GET", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key"),
        ("PUT", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}"),
        ("GET", "/repos/{owner}/{repo}/environments/{environment_name}/variables"),
        ("POST", "/repos/{owner}/{repo}/environments/{environment_name}/variables"),
        ("GET", "/repos/{owner}/{repo}/environments/{environment_name}/variables/{name}"),
        ("PATCH", "/repos/{owner}/{repo}/environments/{environment_name}/variables/{name}"),
        ("DELETE", "/repos/{owner}/{repo}/environments/{environment_name}/variables/{name}"),
    ] {
        assert!(counts.get(method, route) > 0, "{method} {route} was never exercised through Prism");
    }
}
