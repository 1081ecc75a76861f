//! The GitHub contract scenarios. `tests/github_contract.rs` runs each
//! against a fresh emulator; `tests/github_openapi.rs` runs all of them,
//! one after the other, through Prism against GitHub's OpenAPI description.
//! So each scenario uses its own owner/org names, and leaves no fault or
//! frozen clock behind. Each names the documented behaviour it pins
//! (GitHub's REST docs for Actions secrets and variables, and error bodies
//! GitHub was seen to send).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use kube_emulator::github::Limit;
use kube_emulator::{Fault, GithubEmulator, GithubScope};
use serde_json::{Value, json};

use crate::http::{Client, Resp};

/// Runs `$m!(scenario, ...)` with every scenario's name.
#[macro_export]
macro_rules! for_each_github_scenario {
    ($m:ident) => {
        $m!(
            public_keys_are_32_byte_x25519_keys_stable_per_scope,
            a_sealed_box_round_trips_for_a_repository,
            environment_secrets_have_their_own_key,
            organization_secrets_carry_visibility,
            a_value_that_does_not_open_with_the_current_key_is_422,
            secret_bodies_are_checked_against_the_schema,
            names_follow_githubs_rules_and_are_case_insensitive,
            updated_at_has_second_resolution_and_moves_on_every_write,
            secret_lists_paginate_with_total_count_and_link,
            variables_crud_for_repositories_and_environments,
            organization_variables_carry_visibility,
            missing_things_are_404_and_no_token_is_401,
            rate_limits_answer_429_or_403_with_retry_after,
            rate_limits_without_retry_after_carry_githubs_headers,
            environments_that_do_not_exist_are_404,
            values_over_48_kb_and_items_over_the_scope_limit_are_422,
        );
    };
}

pub fn headers() -> [(&'static str, &'static str); 3] {
    [
        ("authorization", "Bearer ghp_test"),
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ]
}

fn error_body(message: &str, docs: &str, status: u16) -> Value {
    json!({"message": message, "documentation_url": docs, "status": status.to_string()})
}

const SECRETS_DOCS: &str = "https://docs.github.com/rest/actions/secrets";
const VARIABLES_DOCS: &str = "https://docs.github.com/rest/actions/variables";
const IMPROPER: &str = "Bad request - validation failed due to an improperly encrypted secret";

/// Fetches the scope's public key as a client does: `(key_id, key)`.
async fn public_key(c: &Client, base: &str) -> (String, PublicKey) {
    let r = c.req("GET", &format!("{base}/secrets/public-key")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let raw = B64.decode(v["key"].as_str().expect("key")).expect("base64 key");
    let raw: [u8; 32] = raw.try_into().expect("32 bytes");
    (v["key_id"].as_str().expect("key_id").to_string(), PublicKey::from(raw))
}

/// Seals `plaintext` for `key` as libsodium's crypto_box_seal does.
fn seal(key: &PublicKey, plaintext: &[u8]) -> String {
    B64.encode(key.seal(&mut OsRng, plaintext).expect("seal"))
}

async fn put_secret(c: &Client, base: &str, name: &str, plaintext: &[u8], extra: Value) -> Resp {
    let (key_id, key) = public_key(c, base).await;
    let mut body = json!({"encrypted_value": seal(&key, plaintext), "key_id": key_id});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    c.req("PUT", &format!("{base}/secrets/{name}")).json(&body).send().await
}

pub async fn public_keys_are_32_byte_x25519_keys_stable_per_scope(c: &Client, gh: &GithubEmulator) {
    // Docs "Get a repository/organization/environment public key": key_id + Base64 key.
    let repo = "/repos/pk-owner/app/actions";
    let (id1, k1) = public_key(c, repo).await;
    let (id2, k2) = public_key(c, repo).await;
    assert_eq!((id1.clone(), k1.as_bytes()), (id2, k2.as_bytes()), "stable");
    assert!(!id1.is_empty() && id1.bytes().all(|b| b.is_ascii_digit()), "{id1:?}");
    let (_, org) = public_key(c, "/orgs/pk-org/actions").await;
    gh.create_environment("pk-owner", "app", "production");
    let (_, env) = public_key(c, "/repos/pk-owner/app/environments/production").await;
    assert_ne!(k1.as_bytes(), org.as_bytes());
    assert_ne!(k1.as_bytes(), env.as_bytes());
    let (emu_id, emu_key) = gh.public_key(&GithubScope::repo("pk-owner", "app"));
    assert_eq!((emu_id, &emu_key), (id1, k1.as_bytes()));
    let (_, upper) = public_key(c, "/repos/PK-Owner/App/actions").await;
    assert_eq!(upper.as_bytes(), k1.as_bytes(), "owner and repository names are case-insensitive");
}

pub async fn a_sealed_box_round_trips_for_a_repository(c: &Client, gh: &GithubEmulator) {
    // Docs "Create or update a repository secret": 201 on create, 204 on update; the value is a
    // libsodium sealed box of the repository's public key.
    let base = "/repos/seal-owner/app/actions";
    let scope = GithubScope::repo("seal-owner", "app");
    let r = put_secret(c, base, "DB_PASSWORD", b"canary-1 \xe2\x9c\x93", json!({})).await;
    assert_eq!((r.status, r.json()), (201, json!({})));
    assert_eq!(gh.secret(&scope, "DB_PASSWORD").map(|s| s.plaintext), Some("canary-1 \u{2713}".as_bytes().to_vec()));
    let r = put_secret(c, base, "DB_PASSWORD", b"canary-2", json!({})).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(gh.secret_plaintext(&scope, "db_password").as_deref(), Some("canary-2"));
    let got = c.req("GET", &format!("{base}/secrets/DB_PASSWORD")).send().await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["name", "created_at", "updated_at"]);
    assert_eq!(v["name"], "DB_PASSWORD");
    assert!(!got.text().contains("canary"), "a secret's value is never returned");
    let del = c.req("DELETE", &format!("{base}/secrets/DB_PASSWORD")).send().await;
    assert_eq!(del.status, 204);
    assert_eq!(gh.secret(&scope, "DB_PASSWORD"), None);
}

pub async fn environment_secrets_have_their_own_key(c: &Client, gh: &GithubEmulator) {
    // Docs "Create or update an environment secret": sealed with the environment's key
    // (`/repos/{owner}/{repo}/environments/{environment_name}/secrets/...`).
    let env = "/repos/env-owner/app/environments/production";
    let repo = "/repos/env-owner/app/actions";
    gh.create_environment("env-owner", "app", "production");
    let r = put_secret(c, env, "API_TOKEN", b"env-canary", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        gh.secret_plaintext(&GithubScope::environment("env-owner", "app", "production"), "API_TOKEN").as_deref(),
        Some("env-canary")
    );
    assert_eq!(gh.secret(&GithubScope::repo("env-owner", "app"), "API_TOKEN"), None, "not a repository secret");
    // Sealed for the repository's key but sent to the environment: refused.
    let (_, repo_key) = public_key(c, repo).await;
    let (env_key_id, _) = public_key(c, env).await;
    let body = json!({"encrypted_value": seal(&repo_key, b"x"), "key_id": env_key_id});
    let r = c.req("PUT", &format!("{env}/secrets/OTHER")).json(&body).send().await;
    assert_eq!(
        (r.status, r.json()),
        (422, error_body(IMPROPER, &format!("{SECRETS_DOCS}#create-or-update-an-environment-secret"), 422))
    );
    let list = c.req("GET", &format!("{env}/secrets")).send().await;
    assert_eq!(list.json()["total_count"], 1);
    assert_eq!(list.json()["secrets"][0]["name"], "API_TOKEN");
}

pub async fn organization_secrets_carry_visibility(c: &Client, gh: &GithubEmulator) {
    // Docs "Create or update an organization secret": visibility all|private|selected (required),
    // selected_repository_ids; listed with visibility and selected_repositories_url.
    let org = "/orgs/vis-org/actions";
    let r = put_secret(
        c,
        org,
        "SHARED",
        b"org-canary",
        json!({"visibility": "selected", "selected_repository_ids": [1296269]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = put_secret(c, org, "ALL", b"org-canary-2", json!({"visibility": "all"})).await;
    assert_eq!(r.status, 201);
    let s = gh.secret(&GithubScope::org("vis-org"), "SHARED").unwrap();
    assert_eq!((s.visibility.as_deref(), s.selected_repository_ids), (Some("selected"), vec![json!(1296269)]));
    let list = c.req("GET", &format!("{org}/secrets")).send().await;
    let v = list.json();
    assert_eq!(v["total_count"], 2);
    assert_eq!((&v["secrets"][0]["name"], &v["secrets"][0]["visibility"]), (&json!("ALL"), &json!("all")));
    assert!(v["secrets"][0].get("selected_repositories_url").is_none());
    let url = format!("{}/orgs/vis-org/actions/secrets/SHARED/repositories", c.url());
    assert_eq!(
        (&v["secrets"][1]["visibility"], &v["secrets"][1]["selected_repositories_url"]),
        (&json!("selected"), &json!(url))
    );
    let got = c.req("GET", &format!("{org}/secrets/shared")).send().await;
    assert_eq!(got.json()["visibility"], "selected");
    let r = put_secret(c, org, "SHARED", b"org-canary-3", json!({"visibility": "private"})).await;
    assert_eq!(r.status, 204);
    assert_eq!(gh.secret(&GithubScope::org("vis-org"), "SHARED").unwrap().visibility.as_deref(), Some("private"));
}

pub async fn a_value_that_does_not_open_with_the_current_key_is_422(c: &Client, gh: &GithubEmulator) {
    // Seen from GitHub: 422 "Bad request - validation failed due to an improperly encrypted secret".
    let base = "/repos/key-owner/app/actions";
    let docs = format!("{SECRETS_DOCS}#create-or-update-a-repository-secret");
    let (key_id, key) = public_key(c, base).await;
    let stranger = SecretKey::generate(&mut OsRng).public_key();
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": seal(&stranger, b"x"), "key_id": key_id}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (422, error_body(IMPROPER, &docs, 422)));
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": seal(&key, b"x"), "key_id": "1"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (422, error_body(IMPROPER, &docs, 422)), "another key_id");
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": "c2VjcmV0", "key_id": key_id}))
        .send()
        .await;
    assert_eq!(r.status, 422, "Base64 but no sealed box");
    // After a rotation, what was sealed for the old key is refused.
    let old = seal(&key, b"x");
    let scope = GithubScope::repo("key-owner", "app");
    gh.rotate_public_key(&scope);
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": old, "key_id": key_id}))
        .send()
        .await;
    assert_eq!(r.status, 422);
    assert!(gh.secret_names(&scope).is_empty(), "nothing stored");
    let r = put_secret(c, base, "S", b"fresh", json!({})).await;
    assert_eq!(r.status, 201, "a client that fetches the new key succeeds");
}

pub async fn secret_bodies_are_checked_against_the_schema(c: &Client, gh: &GithubEmulator) {
    // The OpenAPI schema: encrypted_value and key_id required (repo/env), visibility (org);
    // encrypted_value must match the Base64 pattern. GitHub's words for both seen in the wild.
    let base = "/repos/schema-owner/app/actions";
    let docs = format!("{SECRETS_DOCS}#create-or-update-a-repository-secret");
    let (key_id, key) = public_key(c, base).await;
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": seal(&key, b"x")}))
        .spec_invalid()
        .send()
        .await;
    assert_eq!((r.status, r.json()), (422, error_body("Invalid request.\n\n\"key_id\" wasn't supplied.", &docs, 422)));
    let r = c.req("PUT", &format!("{base}/secrets/S")).json(&json!({})).spec_invalid().send().await;
    assert_eq!(r.json()["message"], "Invalid request.\n\n\"encrypted_value\", \"key_id\" weren't supplied.");
    let r = c
        .req("PUT", &format!("{base}/secrets/S"))
        .json(&json!({"encrypted_value": "ainsdr-34234vsdf-dfdf", "key_id": key_id}))
        .spec_invalid()
        .send()
        .await;
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (
            422,
            json!(
                "Invalid request.\n\nainsdr-34234vsdf-dfdf does not match /^(?:[A-Za-z0-9+\\/]{4})*(?:[A-Za-z0-9+\\/]{2}==|[A-Za-z0-9+\\/]{3}=|[A-Za-z0-9+\\/]{4})$/."
            )
        )
    );
    let org = "/orgs/schema-org/actions";
    let (org_key_id, org_key) = public_key(c, org).await;
    let r = c
        .req("PUT", &format!("{org}/secrets/S"))
        .json(&json!({"encrypted_value": seal(&org_key, b"x"), "key_id": org_key_id}))
        .spec_invalid()
        .send()
        .await;
    assert_eq!(r.json()["message"], "Invalid request.\n\n\"visibility\" wasn't supplied.");
    assert!(gh.secret_names(&GithubScope::repo("schema-owner", "app")).is_empty());
    assert!(gh.secret_names(&GithubScope::org("schema-org")).is_empty());
}

pub async fn names_follow_githubs_rules_and_are_case_insensitive(c: &Client, gh: &GithubEmulator) {
    // Docs "Naming your secrets"/"Naming conventions for configuration variables": [A-Za-z0-9_],
    // not starting with a digit, not starting with GITHUB_, case-insensitive, stored upper-case.
    let base = "/repos/name-owner/app/actions";
    let scope = GithubScope::repo("name-owner", "app");
    let secret_docs = format!("{SECRETS_DOCS}#create-or-update-a-repository-secret");
    let only = "Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed. Must start with a letter ([a-z], [A-Z]) or underscores (_).";
    for bad in ["1ABC", "A-B", "A%20B"] {
        let r = put_secret(c, base, bad, b"x", json!({})).await;
        assert_eq!((r.status, r.json()), (422, error_body(only, &secret_docs, 422)), "secret name {bad:?}");
    }
    let r = put_secret(c, base, "github_token", b"x", json!({})).await;
    assert_eq!((r.status, r.json()), (422, error_body("Secret names must not start with GITHUB_.", &secret_docs, 422)));
    let r = put_secret(c, base, "lower_case", b"x", json!({})).await;
    assert_eq!(r.status, 201);
    assert_eq!(gh.secret_names(&scope), ["LOWER_CASE"]);
    let got = c.req("GET", &format!("{base}/secrets/Lower_Case")).send().await;
    assert_eq!((got.status, got.json()["name"].clone()), (200, json!("LOWER_CASE")));
    assert_eq!(put_secret(c, base, "LOWER_CASE", b"y", json!({})).await.status, 204, "the same secret");

    let var_docs = format!("{VARIABLES_DOCS}#create-a-repository-variable");
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "9LIVES", "value": "v"})).send().await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["documentation_url"], json!(var_docs));
    assert!(r.json()["message"].as_str().unwrap().starts_with("Variable names can only contain"));
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "GITHUB_SHA", "value": "v"})).send().await;
    assert_eq!((r.status, r.json()), (422, error_body("Variable names must not start with GITHUB_.", &var_docs, 422)));
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "mixed_Case", "value": "v"})).send().await;
    assert_eq!(r.status, 201);
    assert_eq!(gh.variable_names(&scope), ["MIXED_CASE"]);
    let dup =
        c.req("POST", &format!("{base}/variables")).json(&json!({"name": "MIXED_case", "value": "w"})).send().await;
    assert_eq!(dup.status, 409, "case-insensitive");
}

pub async fn updated_at_has_second_resolution_and_moves_on_every_write(c: &Client, gh: &GithubEmulator) {
    // Docs: created_at/updated_at are ISO 8601 `YYYY-MM-DDTHH:MM:SSZ` — second resolution, so two
    // writes within one second leave the same updated_at (as on GitHub); a write in a later second
    // moves it; created_at never moves.
    let base = "/repos/time-owner/app/actions";
    gh.freeze_clock(1_767_225_600); // 2026-01-01T00:00:00Z
    assert_eq!(put_secret(c, base, "T", b"1", json!({})).await.status, 201);
    let first = c.req("GET", &format!("{base}/secrets/T")).send().await.json();
    assert_eq!(
        (&first["created_at"], &first["updated_at"]),
        (&json!("2026-01-01T00:00:00Z"), &json!("2026-01-01T00:00:00Z"))
    );
    assert_eq!(put_secret(c, base, "T", b"2", json!({})).await.status, 204);
    let same_second = c.req("GET", &format!("{base}/secrets/T")).send().await.json();
    assert_eq!(same_second["updated_at"], first["updated_at"], "second resolution: indistinguishable");
    gh.advance_clock(Duration::from_secs(1));
    assert_eq!(put_secret(c, base, "T", b"3", json!({})).await.status, 204);
    let later = c.req("GET", &format!("{base}/secrets/T")).send().await.json();
    assert_eq!(
        (&later["created_at"], &later["updated_at"]),
        (&json!("2026-01-01T00:00:00Z"), &json!("2026-01-01T00:00:01Z"))
    );

    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "V", "value": "1"})).send().await;
    assert_eq!(r.status, 201);
    gh.advance_clock(Duration::from_secs(60));
    let r = c.req("PATCH", &format!("{base}/variables/V")).json(&json!({"value": "2"})).send().await;
    assert_eq!(r.status, 204);
    let v = c.req("GET", &format!("{base}/variables/V")).send().await.json();
    assert_eq!(
        (&v["value"], &v["created_at"], &v["updated_at"]),
        (&json!("2"), &json!("2026-01-01T00:00:01Z"), &json!("2026-01-01T00:01:01Z"))
    );
    gh.real_clock();
}

pub async fn secret_lists_paginate_with_total_count_and_link(c: &Client, gh: &GithubEmulator) {
    // Docs "List repository secrets": per_page (default 30, max 100), page, total_count,
    // secrets sorted by name; Link header with next/last/prev/first when there are more pages.
    let base = "/repos/page-owner/app/actions";
    let scope = GithubScope::repo("page-owner", "app");
    for name in ["E", "C", "A", "D", "B"] {
        assert_eq!(put_secret(c, base, name, b"v", json!({})).await.status, 201);
    }
    let r = c.req("GET", &format!("{base}/secrets?per_page=2")).send().await;
    let v = r.json();
    assert_eq!(v["total_count"], 5);
    let names: Vec<&str> = v["secrets"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["A", "B"]);
    let path = format!("{}{base}/secrets", c.url());
    assert_eq!(
        r.header("link"),
        Some(format!("<{path}?per_page=2&page=2>; rel=\"next\", <{path}?per_page=2&page=3>; rel=\"last\"").as_str())
    );
    let r = c.req("GET", &format!("{base}/secrets?per_page=2&page=3")).send().await;
    assert_eq!(r.json()["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(
        r.header("link"),
        Some(format!("<{path}?per_page=2&page=2>; rel=\"prev\", <{path}?per_page=2&page=1>; rel=\"first\"").as_str())
    );
    let all = c.req("GET", &format!("{base}/secrets")).send().await;
    assert_eq!((all.json()["secrets"].as_array().unwrap().len(), all.header("link")), (5, None), "one page: no Link");
    let beyond = c.req("GET", &format!("{base}/secrets?page=4")).send().await.json();
    assert_eq!((beyond["total_count"].clone(), beyond["secrets"].clone()), (json!(5), json!([])));
    for i in 0..35 {
        gh.put_variable(&scope, &format!("V{i:02}"), "x");
    }
    let vars = c.req("GET", &format!("{base}/variables")).send().await;
    assert_eq!(
        (vars.json()["total_count"].clone(), vars.json()["variables"].as_array().unwrap().len()),
        (json!(35), 10),
        "default 10"
    );
    let vars = c.req("GET", &format!("{base}/variables?per_page=100")).send().await;
    assert_eq!(vars.json()["variables"].as_array().unwrap().len(), 30, "variables: at most 30 per page");
}

pub async fn variables_crud_for_repositories_and_environments(c: &Client, gh: &GithubEmulator) {
    // Docs "Create/Get/Update/Delete a repository (environment) variable": POST 201 (409 if it
    // exists: "Already exists - Variable already exists"), GET {name,value,created_at,updated_at},
    // PATCH 204 (may rename), DELETE 204.
    gh.create_environment("var-owner", "app", "staging");
    for base in ["/repos/var-owner/app/actions", "/repos/var-owner/app/environments/staging"] {
        let r = c
            .req("POST", &format!("{base}/variables"))
            .json(&json!({"name": "REGION", "value": "eu-west-1"}))
            .send()
            .await;
        assert_eq!((r.status, r.json()), (201, json!({})), "{base}");
        let dup =
            c.req("POST", &format!("{base}/variables")).json(&json!({"name": "REGION", "value": "x"})).send().await;
        assert_eq!(dup.status, 409);
        assert_eq!(dup.json()["message"], "Already exists - Variable already exists");
        let got = c.req("GET", &format!("{base}/variables/REGION")).send().await;
        assert_eq!(got.status, 200);
        let keys: Vec<String> = got.json().as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["name", "value", "created_at", "updated_at"]);
        assert_eq!(got.json()["value"], "eu-west-1");
        let r = c.req("PATCH", &format!("{base}/variables/REGION")).json(&json!({"value": "us-east-1"})).send().await;
        assert_eq!(r.status, 204);
        let r = c.req("PATCH", &format!("{base}/variables/REGION")).json(&json!({"name": "AWS_REGION"})).send().await;
        assert_eq!(r.status, 204);
        let list = c.req("GET", &format!("{base}/variables")).send().await.json();
        assert_eq!(
            (list["total_count"].clone(), list["variables"][0]["name"].clone(), list["variables"][0]["value"].clone()),
            (json!(1), json!("AWS_REGION"), json!("us-east-1"))
        );
        let missing = c.req("GET", &format!("{base}/variables/REGION")).send().await;
        assert_eq!(missing.status, 404);
        assert_eq!(c.req("DELETE", &format!("{base}/variables/AWS_REGION")).send().await.status, 204);
        assert_eq!(c.req("DELETE", &format!("{base}/variables/AWS_REGION")).send().await.status, 404);
    }
    let r = c
        .req("POST", "/repos/var-owner/app/actions/variables")
        .json(&json!({"name": "ONLY_NAME"}))
        .spec_invalid()
        .send()
        .await;
    assert_eq!((r.status, r.json()["message"].clone()), (422, json!("Invalid request.\n\n\"value\" wasn't supplied.")));
    assert!(gh.variable_names(&GithubScope::repo("var-owner", "app")).is_empty());
}

pub async fn organization_variables_carry_visibility(c: &Client, gh: &GithubEmulator) {
    // Docs "Create an organization variable": name, value, visibility required.
    let org = "/orgs/var-org/actions";
    let r = c
        .req("POST", &format!("{org}/variables"))
        .json(&json!({"name": "SHARED", "value": "v", "visibility": "selected", "selected_repository_ids": [1, 2]}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let got = c.req("GET", &format!("{org}/variables/SHARED")).send().await.json();
    assert_eq!((&got["visibility"], &got["value"]), (&json!("selected"), &json!("v")));
    assert_eq!(
        got["selected_repositories_url"],
        json!(format!("{}/orgs/var-org/actions/variables/SHARED/repositories", c.url()))
    );
    let r = c.req("PATCH", &format!("{org}/variables/SHARED")).json(&json!({"visibility": "private"})).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(gh.variable(&GithubScope::org("var-org"), "SHARED").unwrap().visibility.as_deref(), Some("private"));
    let r = c
        .req("POST", &format!("{org}/variables"))
        .json(&json!({"name": "NO_VIS", "value": "v"}))
        .spec_invalid()
        .send()
        .await;
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (422, json!("Invalid request.\n\n\"visibility\" wasn't supplied."))
    );
    let list = c.req("GET", &format!("{org}/variables")).send().await.json();
    assert_eq!((list["total_count"].clone(), list["variables"][0]["visibility"].clone()), (json!(1), json!("private")));
}

pub async fn missing_things_are_404_and_no_token_is_401(c: &Client, gh: &GithubEmulator) {
    // GitHub's error bodies: {"message","documentation_url","status"}; 401 "Requires authentication".
    let base = "/repos/missing-owner/app/actions";
    let r = c.req("GET", &format!("{base}/secrets/NOPE")).send().await;
    assert_eq!(
        (r.status, r.json()),
        (404, error_body("Not Found", &format!("{SECRETS_DOCS}#get-a-repository-secret"), 404))
    );
    let r = c.req("DELETE", &format!("{base}/secrets/NOPE")).send().await;
    assert_eq!(
        (r.status, r.json()),
        (404, error_body("Not Found", &format!("{SECRETS_DOCS}#delete-a-repository-secret"), 404))
    );
    let r = c.req("GET", "/orgs/missing-org/actions/variables/NOPE").send().await;
    assert_eq!(
        (r.status, r.json()),
        (404, error_body("Not Found", &format!("{VARIABLES_DOCS}#get-an-organization-variable"), 404))
    );
    let r = c.req("PATCH", &format!("{base}/variables/NOPE")).json(&json!({"value": "x"})).send().await;
    assert_eq!(r.status, 404);
    let r = c.req("GET", &format!("{base}/secrets")).no_auth().send().await;
    assert_eq!((r.status, r.json()), (401, error_body("Requires authentication", "https://docs.github.com/rest", 401)));
    let r = c.req("GET", &format!("{base}/secrets")).header("authorization", "token ghp_classic").send().await;
    assert_eq!(r.status, 200, "the `token` scheme works too");
    let r =
        c.req("POST", &format!("{base}/variables")).no_auth().json(&json!({"name": "A", "value": "b"})).send().await;
    assert_eq!(r.status, 401);
    assert!(gh.variable_names(&GithubScope::repo("missing-owner", "app")).is_empty(), "nothing written");
}

pub async fn rate_limits_answer_429_or_403_with_retry_after(c: &Client, gh: &GithubEmulator) {
    // Docs "Rate limits for the REST API": secondary limits answer 403 or 429 with Retry-After.
    let base = "/repos/rate-owner/app/actions";
    gh.set_fault(Fault::RateLimited { count: 1, retry_after: Duration::from_secs(3) });
    let r = c.req("GET", &format!("{base}/secrets")).send().await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("3")));
    assert!(r.json()["message"].as_str().unwrap().starts_with("You have exceeded a secondary rate limit"));
    assert_eq!(r.json()["status"], "429");
    gh.set_fault(Fault::SecondaryRateLimited { count: 1, retry_after: Duration::from_secs(60) });
    let r = c.req("GET", &format!("{base}/secrets")).send().await;
    assert_eq!((r.status, r.header("retry-after"), r.json()["status"].clone()), (403, Some("60"), json!("403")));
    let r = c.req("GET", &format!("{base}/secrets")).send().await;
    assert_eq!(r.status, 200, "served again");
}

pub async fn rate_limits_without_retry_after_carry_githubs_headers(c: &Client, gh: &GithubEmulator) {
    // Docs "Rate limits for the REST API": a secondary limit may come without retry-after (wait
    // at least a minute); the primary limit is x-ratelimit-remaining 0 until x-ratelimit-reset.
    let base = "/repos/limit-owner/app/actions";
    gh.rate_limit_next(&[Limit::SecondaryWithoutRetryAfter, Limit::PrimaryExhausted { reset_unix: 1_767_229_200 }]);
    let r = c.req("GET", &format!("{base}/variables")).send().await;
    assert_eq!((r.status, r.header("retry-after")), (403, None));
    assert!(r.json()["message"].as_str().unwrap().starts_with("You have exceeded a secondary rate limit"));
    assert_ne!(r.header("x-ratelimit-remaining"), Some("0"));
    let r = c.req("GET", &format!("{base}/variables")).send().await;
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining"), r.header("x-ratelimit-reset")),
        (403, Some("0"), Some("1767229200"))
    );
    assert!(r.json()["message"].as_str().unwrap().starts_with("API rate limit exceeded"));
    assert_eq!(c.req("GET", &format!("{base}/variables")).send().await.status, 200, "served again");
}

pub async fn environments_that_do_not_exist_are_404(c: &Client, gh: &GithubEmulator) {
    // An environment is created by PUT /repos/{owner}/{repo}/environments/{name} (or a
    // deployment), never by writing a secret or variable into it: those answer 404 until then.
    let base = "/repos/noenv-owner/app/environments/qa";
    for (method, path) in [("GET", "secrets"), ("GET", "variables"), ("GET", "secrets/public-key")] {
        let r = c.req(method, &format!("{base}/{path}")).send().await;
        assert_eq!((r.status, r.json()["message"].clone()), (404, json!("Not Found")), "{method} {path}");
    }
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "A", "value": "b"})).send().await;
    assert_eq!(r.status, 404);
    assert!(gh.variable_names(&GithubScope::environment("noenv-owner", "app", "qa")).is_empty());
    gh.create_environment("noenv-owner", "app", "QA");
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "A", "value": "b"})).send().await;
    assert_eq!(r.status, 201, "created, names case-insensitive");
}

pub async fn values_over_48_kb_and_items_over_the_scope_limit_are_422(c: &Client, gh: &GithubEmulator) {
    // Docs "Secrets reference" / "Variables reference": 48 KB a value; 100 secrets and 500
    // variables a repository (100 and 100 an environment, 1,000 and 1,000 an organization).
    let base = "/repos/big-owner/app/actions";
    let scope = GithubScope::repo("big-owner", "app");
    let at_limit = vec![b'x'; 48 * 1024];
    let r = put_secret(c, base, "JUST_FITS", &at_limit, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = put_secret(c, base, "TOO_BIG", &[at_limit.as_slice(), b"x"].concat(), json!({})).await;
    assert_eq!((r.status, r.json()["message"].clone()), (422, json!("Secret value is too large (48 KB max)")));
    assert_eq!(gh.secret(&scope, "TOO_BIG"), None);
    let big = "v".repeat(48 * 1024 + 1);
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "BIG", "value": big})).send().await;
    assert_eq!((r.status, r.json()["message"].clone()), (422, json!("Variable value is too large (48 KB max)")));
    let r = c.req("POST", &format!("{base}/variables")).json(&json!({"name": "SMALL", "value": "v"})).send().await;
    assert_eq!(r.status, 201);
    let r = c.req("PATCH", &format!("{base}/variables/SMALL")).json(&json!({"value": big})).send().await;
    assert_eq!(r.status, 422);
    assert_eq!(gh.variable(&scope, "SMALL").unwrap().value, "v", "unchanged");
    for i in 0..99 {
        gh.put_secret(&scope, &format!("S{i:03}"), b"x");
    }
    assert_eq!(gh.secret_names(&scope).len(), 100);
    let r = put_secret(c, base, "ONE_MORE", b"x", json!({})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("at most 100 secrets"), "{}", r.text());
    let r = put_secret(c, base, "S000", b"replaced", json!({})).await;
    assert_eq!(r.status, 204, "replacing one is not adding one");
}
