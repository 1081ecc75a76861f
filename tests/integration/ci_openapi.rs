//! Every GitHub request cfgsync sends, checked against GitHub's published
//! OpenAPI description: cfgsync's `api_url` is Prism (npm
//! `@stoplight/prism-cli`, a validating proxy loaded with
//! `@octokit/openapi`'s `api.github.com.json`) in front of the GitHub
//! emulator. Prism refuses a request the description does not allow (422,
//! never forwarded: cfgsync's pass fails) and turns an answer it does not
//! allow into a 500; every exchange must pass, and Prism's log must hold no
//! violation, not even a warning.
//!
//! Three passes over repository, organization (visibility `selected` and
//! `private`) and environment scopes: create secrets and variables, update
//! them, delete them (prune, with the destinations known only from the
//! record).
//!
//! Needs `CFGSYNC_TEST_PRISM` and `CFGSYNC_TEST_GITHUB_OPENAPI` (set by
//! scripts/test.sh); without them the test fails and says what to run.

use kube_emulator::GithubEmulator;
use kube_emulator::github::prism::Prism;

use crate::support::{Project, Run};

const SECRET: &str = "CANARY-openapi-secret";

fn output(name: &str, entries: &str, target: &str) -> String {
    format!(
        "\n[[output]]\nname = \"{name}\"\n[output.entries]\n{entries}\n[[output.target]]\nkind = \"github\"\napi_url = \"{{api}}\"\n{target}\n"
    )
}

fn config(api: &str, with_github: bool) -> String {
    let mut text = "instance = \"openapi\"\n[files]\n[envs.prod]\n\n[[output]]\nname = \"keep\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/keep.env\"\n".to_owned();
    if with_github {
        let secret = "PASSWORD = \"{{ secret(path='api/db', field='password') }}\"\nTOKEN = \"{{ key(name='token') }}-{{ secret(path='api/db', field='password') }}\"";
        let plain = "HOST = \"{{ key(name='host') }}\"\nPORT = \"{{ key(name='port') }}\"";
        for (name, entries, target) in [
            ("repo-secrets", secret, "repo = \"acme/app\""),
            ("repo-vars", plain, "repo = \"acme/app\""),
            ("env-secrets", secret, "repo = \"acme/app\"\nenvironment = \"{{ env }}\""),
            ("env-vars", plain, "repo = \"acme/app\"\nenvironment = \"{{ env }}\""),
            (
                "org-secrets",
                secret,
                "org = \"acme\"\nvisibility = \"selected\"\nselected_repository_ids = [1296269, 42]",
            ),
            ("org-vars", plain, "org = \"acme\"\nvisibility = \"private\""),
        ] {
            text.push_str(&output(name, entries, target).replace("{api}", api));
        }
    }
    text
}

fn source(version: u32) -> String {
    format!(
        "[keys]\nhost = \"db-{version}.internal\"\nport = \"54{version:02}\"\ntoken = \"t{version}\"\n\n[secrets.\"api/db\"]\npassword = \"{SECRET}-{version}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key\"\n"
    )
}

fn ok(run: Run, step: &str, prism: &Prism) -> Run {
    assert_eq!(run.code, 0, "{step}: {run:?}\n--- Prism's log (tail)\n{}", tail(&prism.log()));
    assert!(!run.all().contains(SECRET), "{step}: {run:?}");
    run
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("[CLI]")).collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn every_github_request_cfgsync_sends_is_valid_against_githubs_openapi_description() {
    let github = GithubEmulator::start();
    github.create_environment("acme", "app", "prod");
    let prism = Prism::from_env(&github.url()).unwrap_or_else(|e| panic!("{e}"));
    let project = Project::new(&config(prism.url(), true)).with_env("GITHUB_TOKEN", "openapi-test-token");
    project.write("source/prod.toml", &source(1));

    ok(project.run(&["reconcile", "--once"]), "create", &prism);
    let repo = kube_emulator::GithubScope::repo("acme", "app");
    let org = kube_emulator::GithubScope::org("acme");
    let env = kube_emulator::GithubScope::environment("acme", "app", "prod");
    for scope in [&repo, &org, &env] {
        assert_eq!(github.secret_plaintext(scope, "PASSWORD"), Some(format!("{SECRET}-1")), "{scope:?}");
        assert_eq!(github.variable(scope, "PORT").map(|v| v.value).as_deref(), Some("5401"), "{scope:?}");
    }
    let org_secret = github.secret(&org, "TOKEN").unwrap();
    assert_eq!(org_secret.visibility.as_deref(), Some("selected"));
    assert_eq!(org_secret.selected_repository_ids, [serde_json::json!(1296269), serde_json::json!(42)]);
    assert_eq!(github.variable(&org, "HOST").unwrap().visibility.as_deref(), Some("private"));

    github.advance_clock(std::time::Duration::from_secs(2));
    project.write("source/prod.toml", &source(2));
    ok(project.run(&["reconcile", "--once"]), "update", &prism);
    for scope in [&repo, &org, &env] {
        assert_eq!(github.secret_plaintext(scope, "TOKEN"), Some(format!("t2-{SECRET}-2")), "{scope:?}");
        assert_eq!(github.variable(scope, "HOST").map(|v| v.value).as_deref(), Some("db-2.internal"));
    }

    // Every GitHub target removed: the record names where to prune.
    project.write("cfgsync.toml", &config(prism.url(), false));
    ok(project.run(&["reconcile", "--once", "--allow-mass-prune"]), "delete", &prism);
    for scope in [&repo, &org, &env] {
        assert!(github.secret_names(scope).is_empty(), "{scope:?}");
        assert!(github.variable_names(scope).is_empty(), "{scope:?}");
    }

    // Each kind of request went through Prism and reached the emulator.
    let counts = github.requests();
    let mut missing = Vec::new();
    for prefix in [
        "/repos/{owner}/{repo}/actions",
        "/orgs/{org}/actions",
        "/repos/{owner}/{repo}/environments/{environment_name}",
    ] {
        for (method, route) in [
            ("GET", "/secrets"),
            ("GET", "/secrets/public-key"),
            ("PUT", "/secrets/{secret_name}"),
            ("DELETE", "/secrets/{secret_name}"),
            ("GET", "/variables"),
            ("POST", "/variables"),
            ("PATCH", "/variables/{name}"),
            ("DELETE", "/variables/{name}"),
        ] {
            let route = format!("{prefix}{route}");
            if counts.get(method, &route) == 0 {
                missing.push(format!("{method} {route}"));
            }
        }
    }
    assert!(missing.is_empty(), "not exercised: {missing:?}\n{counts:?}");
    let log = github.request_log();
    let failed: Vec<_> = log.iter().filter(|r| !r.status.is_some_and(|s| (200..300).contains(&s))).collect();
    assert!(failed.is_empty(), "{failed:?}");

    // Prism judged every exchange and found nothing, not even a warning.
    let plog = prism.log();
    let received = plog.matches("Request received").count();
    let forwarded = plog.matches("> Forwarding").count();
    assert_eq!(received, log.len(), "every request went through Prism:\n{}", tail(&plog));
    assert_eq!(forwarded, received, "Prism forwarded every request (refused none):\n{}", tail(&plog));
    let findings: Vec<&str> =
        plog.lines().filter(|l| l.contains("[VALIDATOR]") || l.contains("✖") || l.contains("⚠")).collect();
    assert!(findings.is_empty(), "Prism found violations:\n{}", findings.join("\n"));
    eprintln!("{received} GitHub requests judged by Prism against GitHub's OpenAPI description; {counts}");
}
