//! The targets over TLS: a GitLab and a GitHub Enterprise Server behind a
//! private CA (`ca_file` on the target), and a Kubernetes API server that
//! requires a client certificate, reached with a kubeconfig holding the CA
//! and the client certificate (kube reads it; cfgsync adds nothing). The
//! emulators get an `https://` address from kube-emulator's TLS front.

use base64::Engine;
use kube_emulator::tls::{TlsFront, TlsIdentity};
use kube_emulator::{Emulator, GithubEmulator, GithubScope, GitlabEmulator, GitlabOwner, Kind};

use crate::support::Project;
use crate::support::pki::{CertFiles, Pki, Validity};

const PASSWORD: &str = "CANARY-31c8-tls-targets";

fn identity(files: &CertFiles, client_ca: Option<&std::path::Path>) -> TlsIdentity {
    TlsIdentity {
        cert_pem: std::fs::read(&files.cert).unwrap(),
        key_pem: std::fs::read(&files.key).unwrap(),
        client_ca_pem: client_ca.map(|ca| std::fs::read(ca).unwrap()),
    }
}

fn source() -> String {
    format!(
        "[keys]\n\"host\" = \"web-1.internal\"\n\n[secrets.\"api/db\"]\npassword = \"{PASSWORD}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key-prod\"\n"
    )
}

#[test]
fn gitlab_and_github_enterprise_behind_a_private_ca() {
    let pki = Pki::new("ci");
    let (gitlab, github) = (GitlabEmulator::start(), GithubEmulator::start());
    // GitHub answers 404 for an environment that does not exist.
    github.create_environment("acme", "app", "prod");
    let server = pki.server("ci", &[], Validity::Current);
    let gitlab_tls = TlsFront::start(gitlab.addr(), &identity(&server, None)).unwrap();
    let github_tls = TlsFront::start(github.addr(), &identity(&server, None)).unwrap();
    let config = |ca: &str| {
        format!(
            r#"instance = "tls-tests"
[files]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{{{ secret(path='api/db', field='password') }}}}"
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "gitlab"
url = "{}"
project = "group/app"
{ca}
[[output.target]]
kind = "github"
api_url = "{}"
repo = "acme/app"
environment = "{{{{ env }}}}"
{ca}
"#,
            gitlab_tls.url(),
            github_tls.url()
        )
    };
    // Without the CA: the servers are not trusted; nothing is written.
    let p = Project::new(&config("")).with_env("GITLAB_TOKEN", "glpat-x").with_env("GITHUB_TOKEN", "ghp-x");
    p.write("source/prod.toml", &source());
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("UnknownIssuer") || r.stderr.contains("certificate"), "{r:?}");
    assert!(gitlab.variable(&GitlabOwner::project("group/app"), "HOST", "prod").is_none());

    // With `ca_file` (relative to the config's directory).
    std::fs::copy(&pki.ca_file, p.path("ci-ca.pem")).unwrap();
    p.write("cfgsync.toml", &config("ca_file = \"ci-ca.pem\""));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let host = gitlab.variable(&GitlabOwner::project("group/app"), "HOST", "prod").expect("written over TLS");
    assert_eq!(host.value, "web-1.internal");
    assert!(github.secret_names(&GithubScope::environment("acme", "app", "prod")).contains(&"DB_PASSWORD".to_owned()));
    assert!(!r.all().contains(PASSWORD), "{r:?}");

    // Two CAs for one server: which would be right? Refused.
    let other = Pki::new("other");
    std::fs::copy(&other.ca_file, p.path("other-ca.pem")).unwrap();
    let two = config("ca_file = \"ci-ca.pem\"").replacen("ca_file = \"ci-ca.pem\"", "ca_file = \"other-ca.pem\"", 1);
    let two = two.replace(&github_tls.url(), &gitlab_tls.url());
    p.write("cfgsync.toml", &two);
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is given two CAs"), "{r:?}");
}

#[test]
fn a_client_certificate_kubeconfig_against_an_api_server_over_mutual_tls() {
    let pki = Pki::new("kube");
    let emulator = Emulator::start("prod");
    emulator.create_namespace("api");
    let front = TlsFront::start(
        emulator.addr(),
        &identity(&pki.server("apiserver", &[], Validity::Current), Some(&pki.ca_file)),
    )
    .unwrap();
    let client = pki.client("cfgsync", "system:serviceaccount:cfgsync:cfgsync", Validity::Current);
    let b64 = |path: &std::path::Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
    let kubeconfig = |user: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: cfgsync\ncurrent-context: prod\nusers:\n- name: cfgsync\n  user:\n{user}",
            front.url(),
            b64(&pki.ca_file)
        )
    };
    let config = "instance = \"tls-tests\"\n[files]\n[envs.prod]\n\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n\n[[output]]\nname = \"api\"\n[output.entries]\nDB_PASSWORD = \"{{ secret(path='api/db', field='password') }}\"\n[[output.target]]\nkind = \"kubernetes-secret\"\ncontext = \"prod\"\nnamespace = \"api\"\nname = \"api\"\n";
    let p = Project::new(config);
    p.write("source/prod.toml", &source());

    // No client certificate: the API server refuses the handshake; nothing written.
    p.write("kubeconfig", &kubeconfig("    token: not-a-certificate\n"));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(emulator.get_object(Kind::Secret, "api", "api").is_none());

    p.write(
        "kubeconfig",
        &kubeconfig(&format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&client.cert),
            b64(&client.key)
        )),
    );
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let secret = emulator.get_object(Kind::Secret, "api", "api").expect("written over mutual TLS");
    let value = secret["data"]["DB_PASSWORD"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(value).unwrap(), PASSWORD.as_bytes());
}
