//! etcd over TLS and mutual TLS, with certificates made at test time: a
//! good chain, etcd's certificate-CN-as-user auth with the shipped
//! reconciler role, and each way TLS goes wrong (wrong CA, expired, name
//! mismatch, client certificate missing) as one line naming the endpoint,
//! failing the env closed. And a certificate rotated on disk while `run`
//! runs: the next pass uses the new one.

use std::time::Duration;

use crate::service::{Service, read_or_empty};
use crate::support::pki::{Pki, Validity, replace_file};
use crate::support::servers::EtcdTls;
use crate::support::{Etcd, Project, Run, wait_until};

fn policies_dir() -> String {
    format!("{}/policies", env!("CARGO_MANIFEST_DIR"))
}

/// etcd serving TLS with a certificate from `pki` (made by `server`), and
/// etcdctl presenting CN `root`.
fn etcd_tls(pki: &Pki, server: crate::support::pki::CertFiles, client_cert_auth: bool) -> Etcd {
    let ctl_client = pki.client("etcdctl-root", "root", Validity::Current);
    Etcd::start_tls(EtcdTls {
        trusted_ca: pki.ca_file.clone(),
        server,
        client_cert_auth,
        ctl_ca: pki.ca_file.clone(),
        ctl_client,
    })
}

/// A config for envs staging and prod reading `etcd`, with `tls` lines in
/// `[etcd]`; one file output per env.
fn config(etcd: &Etcd, tls: &str) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "3s"
{tls}

[service]
debounce = "20ms"
[service.election]
ttl = "3s"

[envs.staging]
[envs.prod]

[[output]]
name = "app"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        etcd.endpoint
    )
}

fn tls_lines(ca: &std::path::Path, client: Option<&crate::support::pki::CertFiles>) -> String {
    let mut s = format!("ca_file = {:?}\n", ca.display().to_string());
    if let Some(c) = client {
        s.push_str(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            c.cert.display().to_string(),
            c.key.display().to_string()
        ));
    }
    s
}

fn seed(etcd: &Etcd) {
    for env in ["staging", "prod"] {
        etcd.put(&format!("/cfgsync/{env}/db_host"), &format!("db.{env}.internal"));
    }
}

/// The one `error:` line of a failed pass for env `env`.
fn error_line(r: &Run, env: &str) -> String {
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&format!("env {env}"))).collect();
    assert_eq!(lines.len(), 1, "one line for env {env}: {r:?}");
    lines[0].to_owned()
}

#[test]
fn mutual_tls_with_the_certificate_cn_as_the_etcd_user_and_the_reconciler_role() {
    let pki = Pki::new("etcd");
    let etcd = etcd_tls(&pki, pki.server("etcd-server", &["etcd.internal"], Validity::Current), true);
    seed(&etcd);
    // Auth on: CN `root` (etcdctl's certificate) is root.
    etcd.enable_auth_with_reader("rootpw", "nobody", "nobodypw", &[]);

    // `policy apply` as root by certificate: no password anywhere.
    let root = pki.client("cfgsync-root", "root", Validity::Current);
    let admin = Project::new(&config(&etcd, &tls_lines(&pki.ca_file, Some(&root))));
    let r = admin.run(&["policy", "apply", "--dir", &policies_dir()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("etcd role cfgsync-reconciler-prod: create, grant read /cfgsync/prod/*"), "{r:?}");

    // A user named like the reconciler's certificate, with the prod role.
    etcd.ctl_ok(&["user", "add", "reconciler-prod", "--new-user-password=unused-by-certificate-auth"]);
    etcd.ctl_ok(&["user", "grant-role", "reconciler-prod", "cfgsync-reconciler-prod"]);
    let reconciler = pki.client("reconciler-prod", "reconciler-prod", Validity::Current);
    let p = Project::new(&config(&etcd, &tls_lines(&pki.ca_file, Some(&reconciler))));

    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), "DB=db.prod.internal\n");

    // Staging is not its env: denied, named with the certificate's CN, nothing written.
    let r = p.run(&["reconcile", "--once", "--env", "staging"]);
    assert_eq!(r.code, 1, "{r:?}");
    let line = error_line(&r, "staging");
    assert!(
        line.contains("etcd: permission denied reading /cfgsync/staging/ as certificate CN \"reconciler-prod\""),
        "{line}"
    );
    assert!(!p.path("out/staging").exists(), "nothing written for staging");

    // The same server, each client-side mistake: one line naming the endpoint.
    let other = Pki::new("other");
    let cases: Vec<(String, String)> = vec![
        (
            tls_lines(&other.ca_file, Some(&reconciler)),
            format!(
                "etcd: TLS to {}: the server's certificate is not signed by a CA in ca_file {} (wrong CA?)",
                etcd.endpoint,
                other.ca_file.display()
            ),
        ),
        (
            tls_lines(&pki.ca_file, None),
            format!(
                "etcd: TLS to {}: the server requires a client certificate: set cert_file and key_file",
                etcd.endpoint
            ),
        ),
        (
            tls_lines(&pki.ca_file, Some(&other.client("stranger", "reconciler-prod", Validity::Current))),
            format!("etcd: TLS to {}: the server refused our client certificate", etcd.endpoint),
        ),
        (
            tls_lines(&pki.ca_file, Some(&pki.client("old", "reconciler-prod", Validity::Expired))),
            format!("etcd: TLS to {}: the client certificate {}", etcd.endpoint, pki.dir().join("old.pem").display()),
        ),
    ];
    for (tls, expected) in cases {
        let bad = Project::new(&config(&etcd, &tls));
        let r = bad.run(&["reconcile", "--once", "--env", "prod"]);
        assert_eq!(r.code, 1, "{r:?}");
        let line = error_line(&r, "prod");
        assert!(line.contains(&expected), "expected {expected:?} in {line:?}");
        assert!(!bad.path("out").exists(), "fails closed: nothing written: {r:?}");
    }
}

#[test]
fn an_expired_server_certificate_and_a_name_mismatch_are_named() {
    let pki = Pki::new("etcd");
    let client = pki.client("client", "anyone", Validity::Current);
    {
        let etcd = etcd_tls(&pki, pki.server("expired", &[], Validity::Expired), false);
        let p = Project::new(&config(&etcd, &tls_lines(&pki.ca_file, None)));
        let r = p.run(&["reconcile", "--once", "--env", "prod"]);
        assert_eq!(r.code, 1, "{r:?}");
        let line = error_line(&r, "prod");
        assert!(
            line.contains(&format!("etcd: TLS to {}: the server's certificate has expired", etcd.endpoint)),
            "{line}"
        );
    }
    let etcd = etcd_tls(&pki, pki.server_named_only("named", "etcd.internal"), false);
    seed(&etcd);
    let p = Project::new(&config(&etcd, &tls_lines(&pki.ca_file, Some(&client))));
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    let line = error_line(&r, "prod");
    assert!(
        line.contains(&format!(
            "etcd: TLS to {}: the server's certificate is not valid for the name \"127.0.0.1\" (set server_name to the name it carries)",
            etcd.endpoint
        )),
        "{line}"
    );
    // With the name it carries, it works.
    let p = Project::new(&config(
        &etcd,
        &format!("{}server_name = \"etcd.internal\"\n", tls_lines(&pki.ca_file, Some(&client))),
    ));
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), "DB=db.prod.internal\n");
}

#[test]
fn a_certificate_rotated_on_disk_is_used_by_the_next_pass_of_run() {
    let pki = Pki::new("etcd");
    let etcd = etcd_tls(&pki, pki.server("etcd-server", &[], Validity::Current), true);
    seed(&etcd);
    etcd.enable_auth_with_reader("rootpw", "nobody", "nobodypw", &[]);
    let admin =
        Project::new(&config(&etcd, &tls_lines(&pki.ca_file, Some(&pki.client("adm", "root", Validity::Current)))));
    let r = admin.run(&["policy", "apply", "--dir", &policies_dir()]);
    assert_eq!(r.code, 0, "{r:?}");
    etcd.ctl_ok(&["user", "add", "reconciler", "--new-user-password=unused"]);
    for env in ["staging", "prod"] {
        etcd.ctl_ok(&["user", "grant-role", "reconciler", &format!("cfgsync-reconciler-{env}")]);
    }

    // The files the service reads: first a certificate for `nobody`, which may read nothing.
    let live = pki.client("live", "nobody", Validity::Current);
    let p = Project::new(&config(&etcd, &tls_lines(&pki.ca_file, Some(&live))));
    let svc = Service::start(&p, &["--replica-id", "R1"], &[]);
    wait_until("/readyz to say etcd denies", Duration::from_secs(30), || {
        let (ready, body) = svc.readyz();
        (!ready && body["envs"]["prod"]["code"] == "etcd_denied").then_some(body)
    });
    assert!(!p.path("out").exists());

    // Rotated in place (new files renamed over the old): CN `reconciler`.
    let next = pki.client("next", "reconciler", Validity::Current);
    replace_file(&next.key, &live.key);
    replace_file(&next.cert, &live.cert);
    // The next pass (a change triggers one) connects with the new certificate.
    etcd.put("/cfgsync/prod/db_host", "db2.prod.internal");
    wait_until("the pass with the new certificate", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/prod/app.env")) == "DB=db2.prod.internal\n").then_some(())
    });
    svc.wait_ready(Duration::from_secs(30));
    assert!(svc.log().contains("a TLS file changed on disk"), "{}", svc.log());
}
