//! The Vault credentials lifecycle of `cfgsync run` against OpenBao:
//! renew-self before the TTL runs out, log in again when renewal fails
//! (AppRole), and JWT auth.

use std::time::Duration;

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, Vault, wait_until};

const CANARY: &str = "CANARY-9a7c-lifecycle";

fn config(etcd: &Etcd, vault: &Vault, auth: &str) -> String {
    format!(
        r#"interval = "1s"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[vault]
address = "{}"
auth = {auth}
timeout = "2s"
# Every pass reads Vault: the reads with the renewed token are the point.
refresh = "1ms"

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

fn write_policy(vault: &Vault) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.hcl");
    std::fs::write(&file, "path \"secret/data/*\" { capabilities = [\"read\"] }").unwrap();
    vault.bao_ok(&["policy", "write", "cfgsync-reader", file.to_str().unwrap()]);
}

fn password_is(p: &Project, n: u32) -> Option<()> {
    read_or_empty(&p.path("out/db.env")).contains(&format!("PASSWORD={CANARY}-{n}\n")).then_some(())
}

fn count(svc: &Service, method: &str, event: &str) -> f64 {
    svc.metric(&format!("cfgsync_vault_credential_events_total{{method=\"{method}\",event=\"{event}\"}}"))
        .unwrap_or(0.0)
}

#[test]
fn a_short_lived_token_is_renewed_and_approle_logs_in_again_when_renewal_fails() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/host", "db.prod");
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-1"))]);
    vault.bao_ok(&["auth", "enable", "approle"]);
    write_policy(&vault);
    // A 2 s token: without renewal it would be dead long before the end.
    vault.bao_ok(&[
        "write",
        "auth/approle/role/cfgsync",
        "token_policies=cfgsync-reader",
        "token_ttl=2s",
        "token_max_ttl=1h",
    ]);
    let role_id = vault.bao_ok(&["read", "-field=role_id", "auth/approle/role/cfgsync/role-id"]);
    let secret_id = vault.bao_ok(&["write", "-f", "-field=secret_id", "auth/approle/role/cfgsync/secret-id"]);
    let auth = format!("{{ method = \"approle\", role_id = \"{}\", secret_id_file = \"secret-id\" }}", role_id.trim());
    let p = Project::new(&config(&etcd, &vault, &auth));
    p.write("secret-id", secret_id.trim());
    let svc = Service::start(&p, &[], &[("RUST_LOG", "cfgsync=debug")]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, 1));

    // Renewed, more than once: the token outlives its 2 s TTL.
    wait_until("two renewals", Duration::from_secs(10), || (count(&svc, "approle", "renewed") >= 2.0).then_some(()));
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-2"))]);
    wait_until("a secret read with the renewed token", Duration::from_secs(5), || password_is(&p, 2));
    assert_eq!(count(&svc, "approle", "login"), 1.0, "no new login while renewal works");

    // Every token of the AppRole revoked: renewal fails, a new login follows.
    vault.bao_ok(&["token", "revoke", "-mode=path", "auth/approle"]);
    wait_until("a failed renewal and a second login", Duration::from_secs(10), || {
        (count(&svc, "approle", "renew_failed") >= 1.0 && count(&svc, "approle", "login") >= 2.0).then_some(())
    });
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-3"))]);
    wait_until("a secret read after the new login", Duration::from_secs(10), || password_is(&p, 3));
    svc.wait_ready(Duration::from_secs(5));
    let log = svc.log();
    assert!(log.contains("vault: token renewal failed; logging in again"), "{log}");
    assert!(!log.contains(CANARY) && !log.contains(secret_id.trim()), "no secret or secret_id in the log");
}

/// base64url without padding.
fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An RS256 JWT signed with `key` (PEM) by the openssl CLI.
fn sign_jwt(dir: &std::path::Path, claims: &str) -> String {
    let input = format!("{}.{}", b64url(br#"{"alg":"RS256","typ":"JWT"}"#), b64url(claims.as_bytes()));
    let data = dir.join("jwt-input");
    std::fs::write(&data, &input).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("key.pem"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    format!("{input}.{}", b64url(&out.stdout))
}

#[test]
fn jwt_auth_logs_in() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/host", "db.prod");
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-1"))]);
    write_policy(&vault);
    let keys = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(keys.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "key.pem"]);
    ok(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
    vault.bao_ok(&["auth", "enable", "jwt"]);
    let pubkey = format!("jwt_validation_pubkeys=@{}", keys.path().join("pub.pem").display());
    vault.bao_ok(&["write", "auth/jwt/config", &pubkey]);
    vault.bao_ok(&[
        "write",
        "auth/jwt/role/cfgsync",
        "role_type=jwt",
        "user_claim=sub",
        "bound_audiences=cfgsync",
        "token_policies=cfgsync-reader",
        "token_ttl=1h",
    ]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let jwt = sign_jwt(
        keys.path(),
        &format!(r#"{{"sub":"cfgsync-reconciler","aud":"cfgsync","iat":{now},"nbf":{now},"exp":{}}}"#, now + 3600),
    );
    let p = Project::new(&config(&etcd, &vault, "{ method = \"jwt\", role = \"cfgsync\", token_file = \"jwt\" }"));
    p.write("jwt", &jwt);
    let svc = Service::start(&p, &[], &[]);
    wait_until("a write with the JWT login's token", Duration::from_secs(20), || password_is(&p, 1));
    assert_eq!(count(&svc, "jwt", "login"), 1.0);
    assert!(!svc.log().contains(&jwt[jwt.len() - 20..]), "the JWT is not logged");

    // A JWT the role does not accept: the error names the method and mount, fails closed.
    let wrong = sign_jwt(keys.path(), &format!(r#"{{"sub":"x","aud":"other","iat":{now},"exp":{}}}"#, now + 3600));
    let p2 = Project::new(&config(&etcd, &vault, "{ method = \"jwt\", role = \"cfgsync\", token_file = \"jwt\" }"));
    p2.write("jwt", &wrong);
    let r = p2.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("vault: cannot authenticate with jwt auth: jwt login at auth/jwt: HTTP 400"), "{r:?}");
    assert!(!p2.path("out/db.env").exists());
}
