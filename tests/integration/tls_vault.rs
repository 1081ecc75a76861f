//! Vault (OpenBao) over TLS and mutual TLS: a listener with certificates
//! made at test time, `ca_file`/`cert_file`/`key_file` and the vault CLI's
//! variables, each failure one line naming the address (the env fails
//! closed), `VAULT_SKIP_VERIFY` refused unless the config allows it, and a
//! CA rotated on disk followed without a restart.

use crate::support::pki::{CertFiles, Pki, Validity, replace_file};
use crate::support::servers::VaultTls;
use crate::support::{Etcd, Project, Run, Vault};

const CANARY: &str = "CANARY-7d1e-vault-tls";

fn config(etcd: &Etcd, address: &str, tls: &str) -> String {
    format!(
        r#"[etcd]
endpoints = ["{}"]

[vault]
address = "{address}"
timeout = "3s"
auth = {{ method = "token", token_file = "vault-token" }}
{tls}

[envs.prod]

[[output]]
name = "app"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        etcd.endpoint
    )
}

fn files(ca: &std::path::Path, client: Option<&CertFiles>) -> String {
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

fn project(etcd: &Etcd, vault: &Vault, address: &str, tls: &str) -> Project {
    let p = Project::new(&config(etcd, address, tls));
    p.write("vault-token", &vault.root_token);
    p
}

fn seed(etcd: &Etcd, vault: &Vault) {
    etcd.put("/cfgsync/prod/db_host", "db.prod.internal");
    vault.kv_put("prod/api/db", &[("password", CANARY)]);
}

/// The one `error:` line of the failed env.
fn failed(r: &Run, p: &Project) -> String {
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!p.path("out").exists(), "fails closed: nothing written: {r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("env prod")).collect();
    assert_eq!(lines.len(), 1, "{r:?}");
    lines[0].to_owned()
}

#[test]
fn mutual_tls_to_vault_from_the_config_and_from_the_vault_cli_variables() {
    let pki = Pki::new("vault");
    let client = pki.client("cfgsync", "cfgsync", Validity::Current);
    let vault = Vault::start_tls(VaultTls {
        server: pki.server("vault-server", &["vault.internal"], Validity::Current),
        client_ca: Some(pki.ca_file.clone()),
    });
    let etcd = Etcd::start();
    seed(&etcd, &vault);
    let address = vault.tls_addr.clone().unwrap();

    let p = project(&etcd, &vault, &address, &files(&pki.ca_file, Some(&client)));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), format!("DB=db.prod.internal:{CANARY}\n"));

    // The same from VAULT_CACERT, VAULT_CLIENT_CERT and VAULT_CLIENT_KEY.
    let p = project(&etcd, &vault, &address, "")
        .with_env("VAULT_CACERT", pki.ca_file.to_str().unwrap())
        .with_env("VAULT_CLIENT_CERT", client.cert.to_str().unwrap())
        .with_env("VAULT_CLIENT_KEY", client.key.to_str().unwrap());
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), format!("DB=db.prod.internal:{CANARY}\n"));

    // Each mistake: one line naming the address; nothing written.
    let other = Pki::new("other");
    let cases = [
        (
            files(&other.ca_file, Some(&client)),
            format!(
                "vault: TLS to {address}: the server's certificate is not signed by a CA in ca_file {} (wrong CA?)",
                other.ca_file.display()
            ),
        ),
        (
            files(&pki.ca_file, None),
            format!("vault: TLS to {address}: the server requires a client certificate: set cert_file and key_file"),
        ),
        (
            files(&pki.ca_file, Some(&other.client("stranger", "cfgsync", Validity::Current))),
            format!("vault: TLS to {address}: the server refused our client certificate"),
        ),
    ];
    for (tls, expected) in cases {
        let p = project(&etcd, &vault, &address, &tls);
        let line = failed(&p.run(&["reconcile", "--once"]), &p);
        assert!(line.contains(&expected), "expected {expected:?} in {line:?}");
    }

    // A CA rotated on disk: a `pull`-style one-shot reads it anew anyway;
    // here a wrong CA file replaced by the right one turns failure into success.
    let rotating = p_dir_file(&pki, "rotating-ca.pem", &other.ca_file);
    let p = project(&etcd, &vault, &address, &files(&rotating, Some(&client)));
    failed(&p.run(&["reconcile", "--once"]), &p);
    replace_file(&pki.ca_file, &rotating);
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A copy of `from` at `name` in the PKI's directory.
fn p_dir_file(pki: &Pki, name: &str, from: &std::path::Path) -> std::path::PathBuf {
    let path = pki.dir().join(name);
    std::fs::copy(from, &path).unwrap();
    path
}

#[test]
fn server_name_and_skip_verify() {
    let pki = Pki::new("vault");
    let vault =
        Vault::start_tls(VaultTls { server: pki.server_named_only("named", "vault.internal"), client_ca: None });
    let etcd = Etcd::start();
    seed(&etcd, &vault);
    let address = vault.tls_addr.clone().unwrap();

    let p = project(&etcd, &vault, &address, &files(&pki.ca_file, None));
    let line = failed(&p.run(&["reconcile", "--once"]), &p);
    assert!(
        line.contains(&format!(
            "vault: TLS to {address}: the server's certificate is not valid for the name \"127.0.0.1\" (set server_name to the name it carries)"
        )),
        "{line}"
    );
    for p in [
        project(&etcd, &vault, &address, &format!("{}server_name = \"vault.internal\"\n", files(&pki.ca_file, None))),
        project(&etcd, &vault, &address, &files(&pki.ca_file, None))
            .with_env("VAULT_TLS_SERVER_NAME", "vault.internal"),
    ] {
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(p.read("out/prod/app.env"), format!("DB=db.prod.internal:{CANARY}\n"));
    }

    // VAULT_SKIP_VERIFY: refused (exit 2, nothing read) ...
    let p = project(&etcd, &vault, &address, "").with_env("VAULT_SKIP_VERIFY", "true");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("VAULT_SKIP_VERIFY is set: cfgsync does not turn off Vault's certificate verification unless the config allows it with `[vault] allow_skip_verify = true`"), "{r:?}");
    assert!(!p.path("out").exists());
    // ... unless allowed, and then warned about on every pass.
    let p = project(&etcd, &vault, &address, "allow_skip_verify = true\n")
        .with_env("VAULT_SKIP_VERIFY", "1")
        .with_env("RUST_LOG", "warn");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("the server's certificate is not verified"), "{r:?}");
    assert_eq!(p.read("out/prod/app.env"), format!("DB=db.prod.internal:{CANARY}\n"));
}
