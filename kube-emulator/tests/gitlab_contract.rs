//! The GitLab emulator's contract suite: what GitLab's REST v4 CI/CD
//! variable endpoints do, tested over real HTTP. Each test names the
//! documented (or source-read) behaviour it pins; the sources are GitLab's
//! `doc/api/project_level_variables.md`, `group_level_variables.md`,
//! `doc/ci/variables/_index.md` and `lib/api/{ci/variables,group_variables}.rb`,
//! `lib/api/helpers/variables_helpers.rb`, `app/models/concerns/ci/*.rb`.

#[path = "api/http.rs"]
mod http;

use std::time::{Duration, Instant};

use kube_emulator::{Fault, GitlabEmulator, GitlabOwner, GitlabVariable, Verb};
use serde_json::{Value, json};

use http::{Client, Resp};

const PROJECT: &str = "/api/v4/projects/group%2Fapp/variables";
const GROUP: &str = "/api/v4/groups/group/variables";

fn client(gl: &GitlabEmulator) -> Client {
    Client::direct(&gl.url(), &[("PRIVATE-TOKEN", "glpat-test")])
}

async fn create(c: &Client, base: &str, body: Value) -> Resp {
    c.req("POST", base).json(&body).send().await
}

fn app() -> GitlabOwner {
    GitlabOwner::project("group/app")
}

#[tokio::test]
async fn create_answers_201_with_the_documented_shape_and_defaults() {
    // Docs "Create a variable": defaults env_var, scope `*`, flags false, description null.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let r = create(&c, PROJECT, json!({"key": "NEW_VARIABLE", "value": "new value"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"variable_type": "env_var", "key": "NEW_VARIABLE", "value": "new value", "hidden": false,
               "protected": false, "masked": false, "raw": false, "environment_scope": "*", "description": null})
    );
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["variable_type", "key", "value", "hidden", "protected", "masked", "raw", "environment_scope", "description"],
        "Entities::Ci::Variable's field order"
    );
    let got = c.req("GET", &format!("{PROJECT}/NEW_VARIABLE")).send().await;
    assert_eq!((got.status, got.json()), (200, r.json()));
    assert_eq!(gl.variable(&app(), "NEW_VARIABLE", "*").map(|v| v.value), Some("new value".into()));
}

#[tokio::test]
async fn every_attribute_is_stored_and_returned() {
    // Docs "Create a variable": variable_type, protected, masked, raw, environment_scope, description.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let r = create(
        &c,
        PROJECT,
        json!({"key": "KUBECONFIG", "value": "apiVersion: v1\n", "variable_type": "file", "protected": true,
               "raw": true, "environment_scope": "review/*", "description": "cluster access"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["variable_type"], &v["protected"], &v["raw"], &v["environment_scope"], &v["description"]),
        (&json!("file"), &json!(true), &json!(true), &json!("review/*"), &json!("cluster access"))
    );
    // Form bodies and query parameters work too (docs use --form).
    let r = c
        .req("POST", PROJECT)
        .raw_body("application/x-www-form-urlencoded", b"key=FORM_KEY&value=a+b%26c&masked=false&protected=true")
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!((r.json()["value"].clone(), r.json()["protected"].clone()), (json!("a b&c"), json!(true)));
}

#[tokio::test]
async fn the_project_id_is_a_number_or_the_url_encoded_path() {
    // Docs: `id` is "ID or URL-encoded path of the project"; paths are case-insensitive.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    assert_eq!(create(&c, PROJECT, json!({"key": "A", "value": "1"})).await.status, 201);
    let by_case = c.req("GET", "/api/v4/projects/Group%2FApp/variables/A").send().await;
    assert_eq!(by_case.status, 200);
    assert_eq!(c.req("GET", "/api/v4/projects/42/variables/A").send().await.status, 404, "not linked yet");
    gl.link_project(42, "group/app");
    let by_id = c.req("GET", "/api/v4/projects/42/variables/A").send().await;
    assert_eq!((by_id.status, by_id.json()["value"].clone()), (200, json!("1")));
    // An unencoded slash is another route, which GitLab does not have.
    let r = c.req("GET", "/api/v4/projects/group/app/variables").send().await;
    assert_eq!((r.status, r.json()), (404, json!({"error": "404 Not Found"})));
}

#[tokio::test]
async fn lists_paginate_with_gitlabs_headers() {
    // Docs "List project variables" + REST offset pagination: per_page (default 20, max 100),
    // page, X-Next-Page, X-Page, X-Per-Page, X-Prev-Page, X-Total, X-Total-Pages, Link.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    for i in 1..=5 {
        assert_eq!(create(&c, PROJECT, json!({"key": format!("K{i}"), "value": "v"})).await.status, 201);
    }
    let r = c.req("GET", &format!("{PROJECT}?per_page=2&page=2")).send().await;
    assert_eq!(r.status, 200);
    let keys: Vec<Value> = r.json().as_array().unwrap().iter().map(|v| v["key"].clone()).collect();
    assert_eq!(keys, [json!("K3"), json!("K4")], "creation order");
    let h = |n: &str| r.header(n).unwrap_or("<missing>").to_string();
    assert_eq!(
        (h("x-page"), h("x-per-page"), h("x-total"), h("x-total-pages"), h("x-next-page"), h("x-prev-page")),
        ("2".into(), "2".into(), "5".into(), "3".into(), "3".into(), "1".into())
    );
    let link = h("link");
    let base = gl.url();
    assert_eq!(
        link,
        format!(
            "<{base}{PROJECT}?page=1&per_page=2>; rel=\"prev\", <{base}{PROJECT}?page=3&per_page=2>; rel=\"next\", \
             <{base}{PROJECT}?page=1&per_page=2>; rel=\"first\", <{base}{PROJECT}?page=3&per_page=2>; rel=\"last\""
        )
    );
    let last = c.req("GET", &format!("{PROJECT}?per_page=2&page=3")).send().await;
    assert_eq!(last.json().as_array().unwrap().len(), 1);
    assert_eq!(last.header("x-next-page"), Some(""), "empty on the last page");
    let beyond = c.req("GET", &format!("{PROJECT}?per_page=2&page=9")).send().await;
    assert_eq!((beyond.status, beyond.json()), (200, json!([])));
    let default = c.req("GET", PROJECT).send().await;
    assert_eq!((default.header("x-per-page"), default.header("x-total-pages")), (Some("20"), Some("1")));
    let clamped = c.req("GET", &format!("{PROJECT}?per_page=1000")).send().await;
    assert_eq!(clamped.header("x-per-page"), Some("100"));
    let bad = c.req("GET", &format!("{PROJECT}?page=abc")).send().await;
    assert_eq!((bad.status, bad.json()), (400, json!({"error": "page is invalid"})));
    let empty = c.req("GET", "/api/v4/projects/other/variables").send().await;
    assert_eq!(
        (empty.json(), empty.header("x-total"), empty.header("x-total-pages")),
        (json!([]), Some("0"), Some("1"))
    );
}

#[tokio::test]
async fn a_duplicate_key_and_scope_is_400_but_another_scope_is_fine() {
    // Docs "Create a variable": same key needs another environment_scope, else "has already been taken".
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    assert_eq!(create(&c, PROJECT, json!({"key": "DB", "value": "a"})).await.status, 201);
    let dup = create(&c, PROJECT, json!({"key": "DB", "value": "b"})).await;
    assert_eq!((dup.status, dup.json()), (400, json!({"message": {"key": ["(DB) has already been taken"]}})));
    let other = create(&c, PROJECT, json!({"key": "DB", "value": "b", "environment_scope": "production"})).await;
    assert_eq!(other.status, 201);
    // Keys are case-sensitive.
    assert_eq!(create(&c, PROJECT, json!({"key": "db", "value": "c"})).await.status, 201);
    // Group variables follow the same rule.
    assert_eq!(create(&c, GROUP, json!({"key": "DB", "value": "a"})).await.status, 201);
    let dup = create(&c, GROUP, json!({"key": "DB", "value": "a"})).await;
    assert_eq!((dup.status, dup.json()), (400, json!({"message": {"key": ["(DB) has already been taken"]}})));
}

#[tokio::test]
async fn a_key_shared_by_several_scopes_needs_the_filter_on_a_project() {
    // Docs "The filter parameter" + find_variable: GET/PUT/DELETE answer 409 when several match.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    for scope in ["*", "production"] {
        let r = create(&c, PROJECT, json!({"key": "API", "value": scope, "environment_scope": scope})).await;
        assert_eq!(r.status, 201);
    }
    let conflict = json!({"message": "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"});
    let item = format!("{PROJECT}/API");
    let get = c.req("GET", &item).send().await;
    assert_eq!((get.status, get.json()), (409, conflict.clone()));
    let put = c.req("PUT", &item).json(&json!({"value": "x"})).send().await;
    assert_eq!((put.status, put.json()), (409, conflict.clone()));
    let del = c.req("DELETE", &item).send().await;
    assert_eq!((del.status, del.json()), (409, conflict));

    let filtered = format!("{item}?filter%5Benvironment_scope%5D=production");
    let get = c.req("GET", &filtered).send().await;
    assert_eq!((get.status, get.json()["value"].clone()), (200, json!("production")));
    let put = c.req("PUT", &filtered).json(&json!({"value": "new"})).send().await;
    assert_eq!((put.status, put.json()["environment_scope"].clone()), (200, json!("production")));
    assert_eq!(gl.variable(&app(), "API", "production").unwrap().value, "new");
    assert_eq!(gl.variable(&app(), "API", "*").unwrap().value, "*", "the other scope is untouched");
    // The filter can also travel in a JSON body (Grape reads it from any source).
    let put = c.req("PUT", &item).json(&json!({"value": "body", "filter": {"environment_scope": "*"}})).send().await;
    assert_eq!((put.status, put.json()["environment_scope"].clone()), (200, json!("*")));
    let missing = c.req("GET", &format!("{item}?filter[environment_scope]=staging")).send().await;
    assert_eq!((missing.status, missing.json()), (404, json!({"message": "404 Variable Not Found"})));
    let del = c.req("DELETE", &filtered).send().await;
    assert_eq!(del.status, 204);
    assert!(del.body.is_empty());
    let get = c.req("GET", &item).send().await;
    assert_eq!((get.status, get.json()["environment_scope"].clone()), (200, json!("*")), "one left: no filter needed");
}

#[tokio::test]
async fn group_put_without_a_filter_updates_the_first_variable_with_the_key() {
    // lib/api/group_variables.rb: PUT uses find_variable (409) only when `filter` is given,
    // otherwise the service's find_by!(key) — kept for compatibility (MR 136475).
    // GET and DELETE use find_variable (409).
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    for scope in ["staging", "production"] {
        assert_eq!(
            create(&c, GROUP, json!({"key": "G", "value": scope, "environment_scope": scope})).await.status,
            201
        );
    }
    let put = c.req("PUT", &format!("{GROUP}/G")).json(&json!({"value": "changed"})).send().await;
    assert_eq!((put.status, put.json()["environment_scope"].clone()), (200, json!("staging")), "the first created");
    let owner = GitlabOwner::group("group");
    assert_eq!(gl.variable(&owner, "G", "staging").unwrap().value, "changed");
    assert_eq!(gl.variable(&owner, "G", "production").unwrap().value, "production");
    let put = c
        .req("PUT", &format!("{GROUP}/G?filter[environment_scope]=production"))
        .json(&json!({"value": "p"}))
        .send()
        .await;
    assert_eq!((put.status, put.json()["environment_scope"].clone()), (200, json!("production")));
    assert_eq!(c.req("GET", &format!("{GROUP}/G")).send().await.status, 409);
    assert_eq!(c.req("DELETE", &format!("{GROUP}/G")).send().await.status, 409);
    let missing = c.req("GET", &format!("{GROUP}/NOPE")).send().await;
    assert_eq!((missing.status, missing.json()), (404, json!({"message": "404 GroupVariable Not Found"})));
    let missing = c.req("PUT", &format!("{GROUP}/NOPE")).json(&json!({"value": "x"})).send().await;
    assert_eq!((missing.status, missing.json()), (404, json!({"message": "404 GroupVariable Not Found"})));
}

#[tokio::test]
async fn gitlab_free_groups_ignore_environment_scope_and_answer_as_if_not() {
    // spec/requests/api/group_variables_spec.rb, `group_scoped_ci_variables` not licensed:
    // POST with environment_scope creates the variable with scope `*` (201); a second one with
    // the same key and another scope is then a duplicate of `*` (400); PUT with
    // environment_scope keeps `*` (200). Projects scope variables on every tier.
    let gl = GitlabEmulator::start();
    gl.set_free_tier(true);
    let c = client(&gl);
    let r = create(&c, GROUP, json!({"key": "G", "value": "prod", "environment_scope": "production"})).await;
    assert_eq!((r.status, r.json()["environment_scope"].clone()), (201, json!("*")));
    let r = create(&c, GROUP, json!({"key": "G", "value": "staging", "environment_scope": "staging"})).await;
    assert_eq!((r.status, r.json()), (400, json!({"message": {"key": ["(G) has already been taken"]}})));
    let put = c.req("PUT", &format!("{GROUP}/G")).json(&json!({"environment_scope": "staging"})).send().await;
    assert_eq!((put.status, put.json()["environment_scope"].clone()), (200, json!("*")));
    let owner = GitlabOwner::group("group");
    let all: Vec<(String, String)> = gl.variables(&owner).into_iter().map(|v| (v.environment_scope, v.value)).collect();
    assert_eq!(all, [("*".to_owned(), "prod".to_owned())]);
    let r = create(&c, PROJECT, json!({"key": "P", "value": "v", "environment_scope": "production"})).await;
    assert_eq!((r.status, r.json()["environment_scope"].clone()), (201, json!("production")), "projects scope");
    gl.set_free_tier(false);
    let r = create(&c, GROUP, json!({"key": "G", "value": "staging", "environment_scope": "staging"})).await;
    assert_eq!((r.status, r.json()["environment_scope"].clone()), (201, json!("staging")), "Premium");
}

#[tokio::test]
async fn keys_are_validated_with_gitlabs_messages() {
    // Docs: key "must have no more than 255 characters; only A-Z, a-z, 0-9, and _ are allowed".
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let r = create(&c, PROJECT, json!({"key": "MY-KEY", "value": "v"})).await;
    assert_eq!((r.status, r.json()), (400, json!({"message": {"key": ["can contain only letters, digits and '_'."]}})));
    let r = create(&c, PROJECT, json!({"key": "K".repeat(256), "value": "v"})).await;
    assert_eq!((r.status, r.json()), (400, json!({"message": {"key": ["is too long (maximum is 255 characters)"]}})));
    assert_eq!(create(&c, PROJECT, json!({"key": "K".repeat(255), "value": "v"})).await.status, 201);
    let r = create(&c, PROJECT, json!({"key": "", "value": "v"})).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": {"key": ["can't be blank", "can contain only letters, digits and '_'."]}}))
    );
    let r = create(&c, PROJECT, json!({})).await;
    assert_eq!((r.status, r.json()), (400, json!({"error": "key is missing, value is missing"})));
    let r = create(&c, PROJECT, json!({"key": "T", "value": "v", "variable_type": "secret"})).await;
    assert_eq!((r.status, r.json()), (400, json!({"error": "variable_type does not have a valid value"})));
    let r = create(&c, PROJECT, json!({"key": "T", "value": "v", "masked": "maybe"})).await;
    assert_eq!((r.status, r.json()), (400, json!({"error": "masked is invalid"})));
    let r = c.req("POST", PROJECT).raw_body("application/json", b"{not json").send().await;
    assert_eq!(r.status, 400);
    assert!(gl.variables(&app()).iter().all(|v| v.key.len() == 255), "only the valid one was stored");
}

#[tokio::test]
async fn masked_values_follow_the_documented_rules() {
    // doc/ci/variables/_index.md "Mask a CI/CD variable" + Ci::Maskable: single line, no spaces,
    // at least 8 characters, Base64 alphabet plus @ : . ~ (raw masked: any non-space characters);
    // a value that cannot be masked answers {"message":{"value":["is invalid"]}}.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let invalid = json!({"message": {"value": ["is invalid"]}});
    for bad in ["short7c", "has a space", "dollar$VARIABLE", "two\nlines!", "percent%sign", "ünïcödé!!"] {
        let r = create(&c, PROJECT, json!({"key": "M", "value": bad, "masked": true})).await;
        assert_eq!((r.status, r.json()), (400, invalid.clone()), "masked value {bad:?}");
    }
    for (i, good) in ["abcdEFGH", "a+b/c=d@e:f.g~h-i_j", "12345678"].into_iter().enumerate() {
        let r = create(
            &c,
            PROJECT,
            json!({"key": "OK", "value": good, "masked": true, "environment_scope": format!("s{i}")}),
        )
        .await;
        assert_eq!(r.status, 201, "masked value {good:?}: {}", r.text());
        assert_eq!(r.json()["value"], json!(good), "a masked (not hidden) value is still returned");
    }
    // Raw masked values may use any non-whitespace character.
    for (i, good) in ["dollar$VARIABLE", "HelloWorld%#^", "ünïcödé!!"].into_iter().enumerate() {
        let r = create(
            &c,
            PROJECT,
            json!({"key": "RAW", "value": good, "masked": true, "raw": true, "environment_scope": format!("s{i}")}),
        )
        .await;
        assert_eq!(r.status, 201, "raw masked value {good:?}: {}", r.text());
    }
    for bad in ["two\nlines!!", "has a space", "short"] {
        let r = create(&c, PROJECT, json!({"key": "RAW2", "value": bad, "masked": true, "raw": true})).await;
        assert_eq!((r.status, r.json()), (400, invalid.clone()), "raw masked value {bad:?}");
    }
    // Masking an existing variable checks its value too; unmasked values are free.
    assert_eq!(create(&c, PROJECT, json!({"key": "PLAIN", "value": "x y"})).await.status, 201);
    let r = c.req("PUT", &format!("{PROJECT}/PLAIN")).json(&json!({"masked": true})).send().await;
    assert_eq!((r.status, r.json()), (400, invalid));
}

#[tokio::test]
async fn masked_and_hidden_values_are_never_returned_and_cannot_be_unhidden() {
    // Docs "Create a variable" (masked_and_hidden, GitLab 17.4) + Ci::HidableVariable:
    // hidden means masked, the API answers "value": null, and the visibility cannot change later.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let r = create(&c, PROJECT, json!({"key": "TOKEN", "value": "s3cr3t-canary", "masked_and_hidden": true})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        (r.json()["value"].clone(), r.json()["hidden"].clone(), r.json()["masked"].clone()),
        (Value::Null, json!(true), json!(true))
    );
    let got = c.req("GET", &format!("{PROJECT}/TOKEN")).send().await;
    assert_eq!(got.json()["value"], Value::Null);
    let listed = c.req("GET", PROJECT).send().await;
    assert_eq!(listed.json()[0]["value"], Value::Null);
    assert!(!listed.text().contains("s3cr3t-canary") && !got.text().contains("s3cr3t-canary"));
    let stored = gl.variable(&app(), "TOKEN", "*").expect("stored");
    assert_eq!((stored.value.as_str(), stored.hidden), ("s3cr3t-canary", true), "inspection sees the hidden value");
    assert!(!format!("{stored:?}").contains("s3cr3t-canary"), "Debug leaves the value out");

    let unmask = c.req("PUT", &format!("{PROJECT}/TOKEN")).json(&json!({"masked": false})).send().await;
    assert_eq!(
        (unmask.status, unmask.json()),
        (
            400,
            json!({"message": {"base": ["The visibility setting cannot be changed for masked and hidden variables."]}})
        )
    );
    let update = c.req("PUT", &format!("{PROJECT}/TOKEN")).json(&json!({"value": "n3w-canary-value"})).send().await;
    assert_eq!(
        (update.status, update.json()["value"].clone(), update.json()["hidden"].clone()),
        (200, Value::Null, json!(true))
    );
    assert_eq!(gl.variable(&app(), "TOKEN", "*").unwrap().value, "n3w-canary-value");
    let bad = c.req("PUT", &format!("{PROJECT}/TOKEN")).json(&json!({"value": "no good"})).send().await;
    assert_eq!((bad.status, bad.json()), (400, json!({"message": {"value": ["is invalid"]}})), "still masked");
    let hide_short = create(&c, PROJECT, json!({"key": "SHORT", "value": "abc", "masked_and_hidden": true})).await;
    assert_eq!((hide_short.status, hide_short.json()), (400, json!({"message": {"value": ["is invalid"]}})));
}

#[tokio::test]
async fn update_changes_attributes_and_delete_removes() {
    // Docs "Update a variable" (200 with the variable) and "Delete a variable" (204, then 404).
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    assert_eq!(create(&c, PROJECT, json!({"key": "U", "value": "1"})).await.status, 201);
    let r = c
        .req("PUT", &format!("{PROJECT}/U"))
        .json(&json!({"value": "2", "protected": true, "variable_type": "file", "environment_scope": "prod", "description": "d"}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"variable_type": "file", "key": "U", "value": "2", "hidden": false, "protected": true,
               "masked": false, "raw": false, "environment_scope": "prod", "description": "d"})
    );
    // Moving onto an occupied scope is a uniqueness error.
    assert_eq!(create(&c, PROJECT, json!({"key": "U", "value": "3"})).await.status, 201);
    let r = c
        .req("PUT", &format!("{PROJECT}/U?filter[environment_scope]=*"))
        .json(&json!({"environment_scope": "prod"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (400, json!({"message": {"key": ["(U) has already been taken"]}})));
    let del = c.req("DELETE", &format!("{PROJECT}/U?filter[environment_scope]=prod")).send().await;
    assert_eq!(del.status, 204);
    let del = c.req("DELETE", &format!("{PROJECT}/U?filter[environment_scope]=prod")).send().await;
    assert_eq!((del.status, del.json()), (404, json!({"message": "404 Variable Not Found"})));
    let put = c.req("PUT", &format!("{PROJECT}/NOPE")).json(&json!({"value": "x"})).send().await;
    assert_eq!((put.status, put.json()), (404, json!({"message": "404 Variable Not Found"})));
    let patch = c.req("PATCH", &format!("{PROJECT}/U")).json(&json!({"value": "x"})).send().await;
    assert_eq!((patch.status, patch.json()), (405, json!({"error": "405 Not Allowed"})));
}

#[tokio::test]
async fn a_request_without_a_token_is_401() {
    // REST authentication: no token answers 401 {"message":"401 Unauthorized"}; PRIVATE-TOKEN or
    // an OAuth/personal token as `Authorization: Bearer` both authenticate.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let r = c.req("GET", PROJECT).no_auth().send().await;
    assert_eq!((r.status, r.json()), (401, json!({"message": "401 Unauthorized"})));
    let r = c.req("POST", PROJECT).no_auth().json(&json!({"key": "A", "value": "b"})).send().await;
    assert_eq!(r.status, 401);
    assert!(gl.variables(&app()).is_empty(), "nothing written");
    let r = c.req("GET", PROJECT).no_auth().header("authorization", "Bearer ya29.x").send().await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_seeded_variable_is_served_like_a_created_one() {
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    let mut v = GitlabVariable::new("SEEDED", "by hand");
    v.environment_scope = "production".into();
    gl.put_variable(&GitlabOwner::group("42"), v);
    let r = c.req("GET", "/api/v4/groups/42/variables/SEEDED").send().await;
    assert_eq!((r.status, r.json()["environment_scope"].clone()), (200, json!("production")));
    assert_eq!(gl.requests().writes(), 0, "seeding is no request");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_then_recover() {
    // Rate limits (Rack::Attack): 429, plain-text "Retry later", Retry-After in seconds.
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    gl.set_fault(Fault::RateLimited { count: 2, retry_after: Duration::from_millis(1500) });
    for _ in 0..2 {
        let r = c.req("GET", PROJECT).send().await;
        assert_eq!((r.status, r.header("retry-after"), r.text().as_str()), (429, Some("2"), "Retry later\n"));
    }
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200);
    assert_eq!(gl.requests().get("GET", "/api/v4/projects/:id/variables"), 3, "throttled requests count too");
    let statuses: Vec<Option<u16>> = gl.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(200)]);
}

#[tokio::test]
async fn injected_errors_drops_and_latency_then_recovery() {
    let gl = GitlabEmulator::start();
    let c = client(&gl);
    gl.set_fault(Fault::Errors { count: 1 });
    let r = c.req("GET", PROJECT).send().await;
    assert_eq!((r.status, r.json()), (500, json!({"message": "500 Internal Server Error"})));
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200);

    gl.set_fault_on(&Verb::WRITES, Fault::ErrorRate { rate: 1.0 });
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200, "reads pass");
    assert_eq!(create(&c, PROJECT, json!({"key": "W", "value": "v"})).await.status, 500);
    gl.clear_fault();
    assert_eq!(create(&c, PROJECT, json!({"key": "W", "value": "v"})).await.status, 201);

    gl.set_fault(Fault::DropConnections { count: 1 });
    assert!(c.req("GET", PROJECT).try_send().await.is_err(), "dropped without an answer");
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200);
    assert_eq!(gl.request_log().iter().filter(|r| r.status.is_none()).count(), 1, "logged without a status");

    gl.set_fault(Fault::Latency(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "answered after {:?}", t.elapsed());
    gl.clear_fault();

    gl.set_fault(Fault::Down);
    assert!(std::net::TcpStream::connect(gl.addr()).is_err(), "refused while down");
    gl.clear_fault();
    assert_eq!(c.req("GET", PROJECT).send().await.status, 200);
}

#[test]
fn the_binary_prints_its_url_and_serves_until_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gitlab-emulator"))
        .args(["--listen", "127.0.0.1:0", "--free"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start gitlab-emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("first line");
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(http::send(&url, "GET", PROJECT, &[("PRIVATE-TOKEN".into(), "x".into())], None)).unwrap();
    assert_eq!(r.status, 200);
    // --free: GitLab Free's group variables.
    let headers = [("PRIVATE-TOKEN".into(), "x".into()), ("content-type".into(), "application/json".into())];
    let body = br#"{"key":"G","value":"v","environment_scope":"production"}"#.to_vec();
    let r = rt.block_on(http::send(&url, "POST", GROUP, &headers, Some(body))).unwrap();
    assert_eq!((r.status, r.json()["environment_scope"].clone()), (201, json!("*")));
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exits 0 on SIGTERM: {status}");
}
