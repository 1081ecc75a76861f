//! `cfgsync run-with --env E [--from OUTPUT] -- CMD ARGS…`: run a command
//! with an output's entries as environment variables, nothing on disk.
//!
//! Decisions:
//! - **cfgsync becomes the command** (`execvp`, as `exec` in a shell,
//!   `envconsul -exec` style tools without a supervisor, or `chpst`). There
//!   is no cfgsync parent left that could forget to forward a signal — the
//!   known bug of peer tools that wrap the child: SIGTERM from a supervisor,
//!   Ctrl-C, SIGHUP and every other signal reach the command itself, its
//!   PID is the one the caller started, and its exit status (or the signal
//!   that ended it) is the process's own. The rendered values live only in
//!   the new process's environment; nothing is written anywhere.
//! - The output is chosen with `--from`; without it, the env must have
//!   exactly one output (no guessing between several).
//! - Entry names must be valid environment variable names
//!   (`[A-Za-z_][A-Za-z0-9_]*`) and values must not contain NUL; otherwise
//!   the command is not started and the offending entry is named.
//! - The inherited environment is passed on (as `env VAR=… CMD` does); the
//!   output's entries override variables of the same name.
//! - Except cfgsync's own credentials ([`CREDENTIAL_VARS`]): the command
//!   gets the output, not the token cfgsync read it with. A developer's
//!   `VAULT_TOKEN` (or `ETCDCTL_USER=name:password`) would otherwise reach
//!   every tool run this way, its logs, crash dumps and children. An entry
//!   of the output with that name is the user's explicit choice and is
//!   passed. This is hygiene, not a boundary: the command runs as the same
//!   user and could read `~/.vault-token` or a `password_file` itself.
//! - Exit codes of cfgsync itself, before the command runs: 2 for usage and
//!   config errors, 1 when a read is denied or rendering fails, 127 when the
//!   command is not found, 126 when it cannot be executed (as shells do).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::sync::Arc;

use super::inventory::{Clients, SecretScope, read_env};
use super::{CmdError, Context, check_env, outputs_for};
use crate::cli::RunWithArgs;
use crate::config::{self, Config, Output};
use crate::source::vault_admin::one_line;

/// The environment variables through which cfgsync itself is given a
/// credential (read in `config.rs`, and by vaultrs): removed from the
/// command's environment unless an entry of the output sets them. A test
/// below fails when cfgsync starts reading a variable that is in neither
/// this list nor its list of non-credentials.
pub const CREDENTIAL_VARS: &[&str] = &[
    // The Vault token; wins over the configured auth method.
    "VAULT_TOKEN",
    // `name:password` for etcd.
    "ETCDCTL_USER",
    // The CI targets' default tokens (a target may name another variable
    // with `token_env`: that one is removed too, see `config_credentials`).
    "GITLAB_TOKEN",
    "GITHUB_TOKEN",
];

/// The credential variables the config's targets name (the CI kinds' `token_env`).
fn config_credentials(config: &crate::config::Config) -> Vec<String> {
    config.outputs.iter().flat_map(|o| &o.targets).filter_map(|t| t.kind.credential_var().map(str::to_owned)).collect()
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `cfgsync run-with`. Returns only when the command could not be started.
pub async fn run(ctx: &Context<'_>, args: &RunWithArgs) -> Result<ExitCode, CmdError> {
    let env = args.env.as_str();
    check_env(ctx.config, env)?;
    let (index, output) = choose_output(ctx.config, env, args.from.as_deref())?;

    let paths = ctx.templates.analysis(index).secret_paths.clone();
    let clients = Clients::new(ctx.config);
    let inventory = match read_env(&clients, env, &SecretScope::Paths(paths.clone()), &paths, &|| {}).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: env {env}: {}", one_line(&e.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    let blockers = inventory.blockers(ctx.templates.analysis(index));
    if !blockers.is_empty() {
        for d in &blockers {
            eprintln!("error: env {env}: {}; needed by output {:?}", one_line(&d.error.to_string()), output.name);
        }
        eprintln!("error: command not started");
        return Ok(ExitCode::from(1));
    }
    let sandbox = crate::render::sandbox::Sandbox::global();
    let result = sandbox.render(ctx.templates, &Arc::new(inventory.snapshot()), &[index]).await.pop();
    let rendered = match result.expect("one result per output") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            eprintln!("error: command not started");
            return Ok(ExitCode::from(1));
        }
    };
    check_entries(&rendered)?;

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut command = std::process::Command::new(program);
    command.args(rest);
    for var in CREDENTIAL_VARS.iter().map(|v| v.to_string()).chain(config_credentials(ctx.config)) {
        command.env_remove(var);
    }
    command.envs(rendered.entries.iter().map(|(k, v)| (k, std::ffi::OsStr::from_bytes(v.expose()))));
    // Only returns on failure.
    let error = command.exec();
    eprintln!("error: cannot run {}: {error}", program.to_string_lossy());
    Ok(ExitCode::from(match error.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }))
}

/// The output whose entries the command gets: `--from`, or the env's
/// only one.
fn choose_output<'c>(config: &'c Config, env: &str, from: Option<&str>) -> Result<(usize, &'c Output), CmdError> {
    let candidates: Vec<_> = outputs_for(config, env).collect();
    let chosen = match from {
        Some(name) => match candidates.iter().find(|(_, o)| o.name == name) {
            Some(c) => *c,
            None => {
                let names: Vec<String> = candidates.iter().map(|(_, o)| o.name.clone()).collect();
                let hint = config::suggest(name, &names).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
                return Err(CmdError::UnknownOutput {
                    name: name.to_owned(),
                    env: env.to_owned(),
                    hint,
                    defined: names.join(", "),
                });
            }
        },
        None => match candidates.as_slice() {
            [one] => *one,
            [] => return Err(CmdError::NoOutput { env: env.to_owned() }),
            many => {
                return Err(CmdError::AmbiguousOutput {
                    env: env.to_owned(),
                    count: many.len(),
                    outputs: many.iter().map(|(_, o)| o.name.as_str()).collect::<Vec<_>>().join(", "),
                });
            }
        },
    };
    Ok(chosen)
}

/// Every entry can be an environment variable: a valid name, no NUL.
fn check_entries(rendered: &crate::render::Rendered) -> Result<(), CmdError> {
    for (name, value) in &rendered.entries {
        if !valid_env_name(name) {
            return Err(CmdError::InvalidName {
                what: "environment variable name (entry of the output)",
                name: name.clone(),
                why: "use [A-Za-z_][A-Za-z0-9_]*; run-with passes entries as environment variables",
            });
        }
        if value.expose().contains(&0) {
            return Err(CmdError::InvalidName {
                what: "entry",
                name: name.clone(),
                why: "its value holds a NUL character, which no environment variable can carry",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{CREDENTIAL_VARS, valid_env_name};

    /// Variables cfgsync reads that carry no credential, and why.
    const NOT_CREDENTIALS: &[&str] = &[
        "CFGSYNC_CONFIG",     // a path
        "CFGSYNC_LISTEN",     // an address
        "CFGSYNC_REPLICA_ID", // a name
        "ETCDCTL_ENDPOINTS",  // URLs
        "VAULT_ADDR",         // a URL
        "RUST_LOG",           // a log filter
        "NO_COLOR",           // a switch
        "HOME",               // where ~/.vault-token is
        "KUBECONFIG",         // a path (checked: no file target may write over it)
        "HOSTNAME",           // the default replica name
        // TLS: paths to files (the key stays in its file) and switches.
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
        "VAULT_CACERT",
        "VAULT_CAPATH",
        "VAULT_CLIENT_CERT",
        "VAULT_CLIENT_KEY",
        "VAULT_TLS_SERVER_NAME",
        "VAULT_SKIP_VERIFY",
    ];

    /// Every variable name given as a string literal to `.var(…)`,
    /// `var_os(…)` or clap's `env = …` in the Rust files under `dir`.
    fn variables_read(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                variables_read(&path, found);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for opener in [".var(\"", "var_os(\"", "env = \""] {
                for (at, _) in text.match_indices(opener) {
                    let rest = &text[at + opener.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && rest[name.len()..].starts_with('"') {
                        found.insert(name);
                    }
                }
            }
        }
    }

    #[test]
    fn every_variable_cfgsync_reads_is_classified_as_credential_or_not() {
        let mut found = BTreeSet::new();
        variables_read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        for known in ["VAULT_TOKEN", "ETCDCTL_USER", "VAULT_ADDR", "CFGSYNC_CONFIG"] {
            assert!(found.contains(known), "the scan no longer finds {known}: {found:?}");
        }
        let unclassified: Vec<_> = found
            .iter()
            .filter(|v| !CREDENTIAL_VARS.contains(&v.as_str()) && !NOT_CREDENTIALS.contains(&v.as_str()))
            .collect();
        assert!(
            unclassified.is_empty(),
            "cfgsync reads {unclassified:?}: add each to CREDENTIAL_VARS (run-with removes it from the command's environment) or to NOT_CREDENTIALS"
        );
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_x", "DATABASE_URL", "a1"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "config.yaml", "A-B", "A=B"] {
            assert!(!valid_env_name(bad), "{bad}");
        }
    }
}
