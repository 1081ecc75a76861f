//! Vault's Kubernetes auth, for real: OpenBao's `kubernetes` auth method
//! configured against kube-emulator's TokenReview (served over TLS with a
//! CA Vault is given), and cfgsync logging in with a projected
//! service-account token file, then renewing the token and logging in
//! again as `cfgsync run` does. A token of another service account, or one
//! revoked, is refused: the env fails closed.

use std::time::Duration;

use kube_emulator::auth::TokenReviewer;
use kube_emulator::tls::{TlsFront, TlsIdentity};

use crate::service::{Service, read_or_empty};
use crate::support::pki::{Pki, Validity};
use crate::support::{Etcd, Project, Vault, wait_until};

const CANARY: &str = "CANARY-2f7c-k8s-auth";

fn config(etcd: &Etcd, vault: &Vault) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]

[vault]
address = "{}"
timeout = "3s"
auth = {{ method = "kubernetes", role = "cfgsync", token_file = "run/serviceaccount/token" }}
# Every pass reads Vault: reading with the rotated login is the point.
refresh = "1ms"

[service]
debounce = "20ms"

[envs.prod]

[[output]]
name = "app"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        etcd.endpoint, vault.addr
    )
}

#[test]
fn openbao_kubernetes_auth_against_the_emulators_token_review_logs_in_and_renews() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/db_host", "db.prod.internal");
    vault.kv_put("prod/api/db", &[("password", CANARY)]);
    let policy = "path \"secret/data/prod/*\" {\n  capabilities = [\"read\"]\n}\n";
    vault.token_with_policy("cfgsync-reconciler-prod", policy, "1h");

    // The API server's TokenReview, over TLS with a private CA.
    let pki = Pki::new("kube");
    let reviewer = TokenReviewer::start().unwrap();
    let server = pki.server("apiserver", &[], Validity::Current);
    let identity = TlsIdentity {
        cert_pem: std::fs::read(&server.cert).unwrap(),
        key_pem: std::fs::read(&server.key).unwrap(),
        client_ca_pem: None,
    };
    let front = TlsFront::start(reviewer.addr(), &identity).unwrap();
    let reviewer_jwt = reviewer.issue("kube-system", "vault-token-reviewer", &["https://kubernetes.default.svc"], 3600);
    vault.bao_ok(&["auth", "enable", "kubernetes"]);
    vault.bao_ok(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", front.url()),
        &format!("kubernetes_ca_cert=@{}", pki.ca_file.display()),
        &format!("token_reviewer_jwt={reviewer_jwt}"),
    ]);
    vault.bao_ok(&[
        "write",
        "auth/kubernetes/role/cfgsync",
        "bound_service_account_names=cfgsync",
        "bound_service_account_namespaces=cfgsync-system",
        "audience=vault",
        "token_policies=cfgsync-reconciler-prod",
        "token_ttl=3s",
        "token_max_ttl=7s",
    ]);

    let p = Project::new(&config(&etcd, &vault));
    // Another service account's token: refused, nothing written.
    p.write("run/serviceaccount/token", &reviewer.issue("cfgsync-system", "intruder", &["vault"], 600));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(
            "vault: cannot authenticate with kubernetes auth: kubernetes login at auth/kubernetes as role \"cfgsync\""
        ),
        "{r:?}"
    );
    assert!(!p.path("out").exists());

    // The projected token of cfgsync-system/cfgsync: logged in, read.
    let token = reviewer.issue("cfgsync-system", "cfgsync", &["vault"], 600);
    p.write("run/serviceaccount/token", &token);
    let before = reviewer.reviews();
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), format!("DB=db.prod.internal:{CANARY}\n"));
    assert!(reviewer.reviews() > before, "Vault asked the TokenReview");

    // The service renews the 3 s token, and logs in again at the 7 s max
    // TTL with the token file as it is then (the kubelet rotated it).
    let svc = Service::start(&p, &["--replica-id", "K1"], &[("RUST_LOG", "cfgsync=info")]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("a renewal", Duration::from_secs(20), || svc.log().contains("vault: token renewed").then_some(()));
    let rotated = reviewer.issue("cfgsync-system", "cfgsync", &["vault"], 600);
    p.write("run/serviceaccount/token", &rotated);
    reviewer.revoke(&token);
    let logins = |log: &str| log.matches("vault: logged in").count();
    let first = logins(&svc.log());
    wait_until("a login with the rotated token", Duration::from_secs(30), || {
        (logins(&svc.log()) > first).then_some(())
    });
    // Still reading with it.
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-2"))]);
    etcd.put("/cfgsync/prod/db_host", "db2.prod.internal");
    wait_until("a pass with the new login", Duration::from_secs(20), || {
        (read_or_empty(&p.path("out/prod/app.env")) == format!("DB=db2.prod.internal:{CANARY}-2\n")).then_some(())
    });
    assert!(!svc.log().contains(&rotated) && !svc.log().contains(CANARY), "tokens and values never logged");
}
