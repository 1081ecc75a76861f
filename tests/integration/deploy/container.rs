//! deploy/Containerfile, linted: there is no container engine where these
//! tests run, so the image is never built here. And the command lines that
//! deploy/ ships (image, Deployment, systemd unit) parse.

use std::process::Command;

use super::{read, yaml_docs};
use crate::support::run_output;

/// One instruction, continuation lines joined: (line, KEYWORD, arguments).
fn instructions() -> Vec<(usize, String, String)> {
    let mut out: Vec<(usize, String, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in read("deploy/Containerfile").lines().enumerate() {
        let trimmed = line.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part);
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(trimmed);
                let (keyword, args) = text.split_once(char::is_whitespace).unwrap();
                out.push((start, keyword.to_ascii_uppercase(), args.trim().to_owned()));
            }
        }
    }
    out
}

/// The instructions of the last stage, the image that ships.
fn final_stage() -> Vec<(usize, String, String)> {
    let all = instructions();
    let last_from = all.iter().rposition(|(_, k, _)| k == "FROM").unwrap();
    all[last_from..].to_vec()
}

/// `USER` of the shipped image, e.g. `65532:65532`.
pub(super) fn final_user() -> String {
    final_stage().into_iter().rfind(|(_, k, _)| k == "USER").expect("the image sets USER").2
}

fn exec_form(args: &str, what: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{what} is not in exec form (a JSON array): {args}: {e}"))
}

#[test]
fn containerfile_pins_its_bases_and_runs_as_a_numeric_non_root_user() {
    let all = instructions();
    for (line, keyword, args) in &all {
        assert_ne!(keyword, "ADD", "Containerfile:{line}: ADD fetches URLs and unpacks archives; use COPY");
        if keyword == "FROM" {
            let image = args.split_whitespace().next().unwrap();
            let (name, pin) = match image.split_once('@') {
                Some((name, digest)) => (name, digest),
                None => image.rsplit_once(':').unwrap_or_else(|| panic!("Containerfile:{line}: {image} has no tag")),
            };
            assert!(!pin.is_empty() && pin != "latest", "Containerfile:{line}: {image} is not pinned");
            let registry = name.split('/').next().unwrap();
            assert!(registry.contains('.'), "Containerfile:{line}: {image} does not name its registry");
        }
        if keyword == "RUN" && args.contains("cargo build") {
            assert!(args.contains("--locked"), "Containerfile:{line}: cargo build without --locked");
        }
    }

    // The toolchain image is at least the crate's rust-version.
    let cargo_toml: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let msrv = cargo_toml["package"]["rust-version"].as_str().unwrap();
    let version = |v: &str| -> (u32, u32) {
        let mut parts = v.split(['.', '-']).map(|p| p.parse().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let rust =
        all.iter().find_map(|(_, k, a)| (k == "FROM").then(|| a.strip_prefix("docker.io/library/rust:")).flatten());
    let rust = rust.expect("the build stage is docker.io/library/rust").split_whitespace().next().unwrap();
    assert!(version(rust) >= version(msrv), "rust:{rust} is older than rust-version {msrv}");

    // The shipped stage: a numeric, non-root user (Kubernetes can check
    // runAsNonRoot only against a number), the binary it copies as the
    // exec-form entrypoint (distroless has no shell to run a string).
    let user = final_user();
    let (uid, gid) = user.split_once(':').unwrap_or((&user, ""));
    let uid: u32 = uid.parse().unwrap_or_else(|_| panic!("USER {user} is not numeric"));
    assert!(uid != 0 && gid.parse::<u32>().is_ok_and(|g| g != 0), "USER {user} is root or has no numeric group");
    let stage = final_stage();
    let binary = stage
        .iter()
        .find_map(|(_, k, a)| (k == "COPY").then(|| a.split_whitespace().last().unwrap().to_owned()))
        .unwrap();
    let entrypoint = exec_form(&stage.iter().find(|(_, k, _)| k == "ENTRYPOINT").unwrap().2, "ENTRYPOINT");
    assert_eq!(entrypoint, [binary]);
    exec_form(&stage.iter().find(|(_, k, _)| k == "CMD").unwrap().2, "CMD");

    // The build context leaves out the build output.
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "/target"), ".dockerignore");
}

/// The arguments after the binary in the image, the Deployment and the unit.
fn shipped_command_lines() -> Vec<(&'static str, Vec<String>)> {
    let stage = final_stage();
    let mut image = exec_form(&stage.iter().find(|(_, k, _)| k == "ENTRYPOINT").unwrap().2, "ENTRYPOINT");
    image.remove(0);
    image.extend(exec_form(&stage.iter().find(|(_, k, _)| k == "CMD").unwrap().2, "CMD"));

    let deployment = yaml_docs(&read("deploy/kubernetes/management/deployment.yaml"), "deployment.yaml").remove(0);
    let pod_args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();

    let unit = read("deploy/systemd/cfgsync.service");
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let unit_args: Vec<String> = exec_start.split_whitespace().skip(1).map(String::from).collect();
    vec![("deploy/Containerfile", image), ("deployment.yaml", pod_args), ("cfgsync.service", unit_args)]
}

/// Runs `cfgsync ARGS` with `--config` pointed at a file that does not
/// exist: a command line that parses fails on reading the config, one that
/// does not fails in clap first.
fn parse_error(args: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let mut args = args.to_vec();
    let at = args.iter().position(|a| a == "--config").expect("the command line names its --config");
    args[at + 1] = missing.to_str().unwrap().to_owned();
    let run = run_output(Command::new(env!("CARGO_BIN_EXE_cfgsync")).args(&args).output().unwrap());
    assert_eq!(run.code, 2, "{run:?}");
    run.stderr.replace(missing.to_str().unwrap(), "MISSING")
}

#[test]
fn every_shipped_command_line_parses() {
    for (origin, args) in shipped_command_lines() {
        assert!(args.iter().any(|a| a == "run"), "{origin}: {args:?}");
        let error = parse_error(&args);
        assert!(
            error.starts_with("error: cannot read config file MISSING"),
            "{origin}: cfgsync {}: {error}",
            args.join(" ")
        );
    }
    let wrong: Vec<String> = ["--config", "x", "--log-format", "xml", "run"].map(String::from).into();
    assert!(parse_error(&wrong).contains("invalid value 'xml'"), "a bad command line fails in clap");
}
