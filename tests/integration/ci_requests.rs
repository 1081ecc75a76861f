//! Requests per pass across 20 GitLab projects and 20 GitHub repositories:
//! each gets a secret output (one secret shared by all) and a plain output
//! (a key of its own). Counted by the emulators, so exact; the numbers are
//! printed (`cargo test --test integration requests_per_pass -- --nocapture`)
//! and documented in docs/ci-targets.md.
//!
//! | pass                                   | GitLab                | GitHub                                         |
//! |----------------------------------------|-----------------------|------------------------------------------------|
//! | no-op                                  | 20 lists              | 40 lists (secrets + variables per repository)  |
//! | one plain key of one project changes   | 20 lists + 1 PUT      | 40 lists + 1 PATCH                             |
//! | the shared secret changes              | 20 lists + 20 PUT     | 40 lists + 20 × (public key, PUT, re-list)     |

use std::time::Instant;

use kube_emulator::{GithubEmulator, GitlabEmulator, RouteCounts};

use crate::support::Project;

const N: usize = 20;

fn config(gitlab: &str, github: &str) -> String {
    let mut text = "instance = \"fleet\"\n[files]\n[envs.prod]\n".to_owned();
    for i in 0..N {
        for (suffix, entry) in [
            ("secrets", "PASSWORD = \"{{ secret(path='shared/db', field='password') }}\"".to_owned()),
            ("plain", format!("HOST = \"{{{{ key(name='svc{i}/host') }}}}\"")),
        ] {
            text.push_str(&format!(
                "\n[[output]]\nname = \"svc{i}-{suffix}\"\n[output.entries]\n{entry}\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{gitlab}\"\nproject = \"fleet/svc{i}\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{github}\"\nrepo = \"fleet/svc{i}\"\n"
            ));
        }
    }
    text
}

fn source(password: &str, special: &str) -> String {
    let mut text = "[keys]\n".to_owned();
    for i in 0..N {
        let host = if i == 7 { special.to_owned() } else { format!("svc{i}.internal") };
        text.push_str(&format!("\"svc{i}/host\" = \"{host}\"\n"));
    }
    text.push_str(&format!(
        "\n[secrets.\"shared/db\"]\npassword = \"{password}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key\"\n"
    ));
    text
}

fn total(c: &RouteCounts, method: &str) -> u64 {
    c.iter().filter(|(m, _, _)| *m == method).map(|(_, _, n)| n).sum()
}

#[test]
fn requests_per_pass_across_20_projects_and_20_repositories() {
    let (gitlab, github) = (GitlabEmulator::start(), GithubEmulator::start());
    github.freeze_clock(1_767_225_600);
    let project = Project::new(&config(&gitlab.url(), &github.url()))
        .with_env("GITLAB_TOKEN", "token")
        .with_env("GITHUB_TOKEN", "token");
    let mut rows = Vec::new();
    let mut pass = |name: &str, source_text: String| {
        project.write("source/prod.toml", &source_text);
        gitlab.reset_requests();
        github.reset_requests();
        let start = Instant::now();
        let run = project.run(&["reconcile", "--once"]);
        let took = start.elapsed();
        assert_eq!(run.code, 0, "{name}: {run:?}");
        let (gl, gh) = (gitlab.requests(), github.requests());
        rows.push(format!(
            "{name:<38} GitLab {:>3} requests ({:>2} GET, {:>2} writes)   GitHub {:>3} requests ({:>2} GET, {:>2} writes)   {:>5} ms",
            gl.total(),
            total(&gl, "GET"),
            gl.writes(),
            gh.total(),
            total(&gh, "GET"),
            gh.writes(),
            took.as_millis()
        ));
        (gl, gh)
    };
    let (gl, gh) = pass("first pass (create)", source("pw-version-0001", "svc7.internal"));
    assert_eq!((gl.total(), gl.writes()), (20 + 40, 40));
    // 40 lists; per repository a second list of secrets right before
    // creating one (a secret made since must not be replaced), one public
    // key, 1 PUT + 1 POST, and one list to read the new secret's updated_at.
    assert_eq!((gh.total(), gh.writes()), (40 + 20 + 20 + 40 + 20, 40));

    let (gl, gh) = pass("no-op", source("pw-version-0001", "svc7.internal"));
    assert_eq!((gl.total(), gl.writes()), (20, 0));
    assert_eq!((gh.total(), gh.writes()), (40, 0));

    let (gl, gh) = pass("one key of one project changes", source("pw-version-0001", "svc7.moved"));
    assert_eq!((gl.total(), gl.writes()), (20 + 1, 1));
    assert_eq!(gl.get("PUT", "/api/v4/projects/:id/variables/:key"), 1);
    assert_eq!((gh.total(), gh.writes()), (40 + 1, 1));
    assert_eq!(gh.get("PATCH", "/repos/{owner}/{repo}/actions/variables/{name}"), 1);

    let (gl, gh) = pass("the secret all projects share changes", source("pw-version-0002", "svc7.moved"));
    assert_eq!((gl.total(), gl.writes()), (20 + 20, 20));
    assert_eq!((gh.total(), gh.writes()), (40 + 3 * 20, 20));
    eprintln!("requests per pass, {N} GitLab projects and {N} GitHub repositories (emulators, debug build):");
    for r in &rows {
        eprintln!("  {r}");
    }
}
