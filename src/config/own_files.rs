//! A file target must never write over what cfgsync itself reads: its own
//! config file, a credential file (`password_file`, `token_file`,
//! `role_id_file`, `secret_id_file`, the kubeconfig), a template, the
//! embedded source, the policies, or its state. One bad path would replace
//! the config with a rendering, or a credential with a secret of an env,
//! and the next pass would run on that.
//!
//! Decisions:
//! - **Checked when the config is loaded** (every command, `validate`
//!   included, exit 2 with the target's file:line): target paths are
//!   rendered per env at load time, so every path a pass could write is
//!   known here. `dir` targets are checked file by file (their entries are
//!   the config's).
//! - **Several spellings compared**: lexically (made absolute, normalised),
//!   with the symlinked directories on the way resolved, and (for what
//!   cfgsync reads) the file a symlink points to, so `out/../cfgsync.toml`,
//!   a path through a link to the config's directory and the real file
//!   behind a linked config are all caught.
//! - Defaults count when they apply: `~/.kube/config` (or `KUBECONFIG`)
//!   once a Kubernetes target exists, `~/.vault-token` for token auth
//!   without `token_file`. A `--kubeconfig` given on the command line is
//!   not known here.

use std::path::{Path, PathBuf};

use super::{Config, Environment, KeysSource, Problem, SecretsSource, VaultAuth};
use crate::format::Format;
use crate::targets::TargetKind;
use crate::targets::file::state::{normalize, resolve_existing};

/// What cfgsync reads, by kind: a file, or everything below a directory.
enum Own {
    File(&'static str, PathBuf),
    Dir(&'static str, PathBuf),
}

impl Own {
    fn describe(&self) -> (&'static str, &Path) {
        match self {
            Own::File(what, p) | Own::Dir(what, p) => (what, p),
        }
    }

    /// Whether `written` (one spelling of a target path) is this, or below it.
    fn covers(&self, own: &Path, written: &Path) -> bool {
        match self {
            Own::File(..) => written == own,
            Own::Dir(..) => written.starts_with(own),
        }
    }
}

/// Every file target path (per env, per written file) that is one of
/// cfgsync's own files, as a problem at the target.
pub(super) fn problems(config: &Config, env: &dyn Environment) -> Vec<Problem> {
    let own: Vec<(Own, Vec<PathBuf>)> = own_files(config, env)
        .into_iter()
        .map(|o| {
            let path = o.describe().1.to_path_buf();
            // A config or credential file that is itself a symlink: its target too.
            let mut forms = spellings(&path);
            forms.extend(std::fs::canonicalize(&path).ok());
            (o, forms)
        })
        .collect();
    let mut problems = Vec::new();
    for output in &config.outputs {
        for target in &output.targets {
            let TargetKind::File(file) = &target.kind else { continue };
            for (env_name, path) in &file.paths {
                let written: Vec<PathBuf> = match file.format {
                    Format::Dir => output.entries.iter().map(|e| path.join(&e.name)).collect(),
                    _ => vec![path.clone()],
                };
                let hit = written.iter().find_map(|w| {
                    let forms = spellings(w);
                    own.iter()
                        .find(|(o, own_forms)| forms.iter().any(|f| own_forms.iter().any(|g| o.covers(g, f))))
                        .map(|(o, _)| (w, o))
                });
                if let Some((w, o)) = hit {
                    let (what, at) = o.describe();
                    problems.push(Problem::at(
                        target.location.clone(),
                        format!(
                            "output {:?}: file target {} (env {env_name:?}) would write over {what} {}: cfgsync never writes what it reads itself; choose another path",
                            output.name,
                            w.display(),
                            at.display()
                        ),
                    ));
                }
            }
        }
    }
    problems
}

/// What cfgsync reads (or keeps) while it runs.
fn own_files(config: &Config, env: &dyn Environment) -> Vec<Own> {
    let mut own = vec![
        Own::File("the config file", config.path.clone()),
        Own::Dir("the state directory", config.state_dir.clone()),
        Own::Dir("the policies directory", config.dir.join("policies")),
    ];
    // A `templates` that is itself a link is refused when the templates are
    // read (with a message about the link); resolving it here would blame
    // every target below where it points instead.
    let templates_linked = std::fs::symlink_metadata(&config.templates_dir).is_ok_and(|m| m.file_type().is_symlink());
    if !templates_linked {
        own.push(Own::Dir("the templates directory", config.templates_dir.clone()));
    }
    let home = env.var("HOME").map(PathBuf::from);
    match &config.keys {
        KeysSource::Files(dir) => own.push(Own::Dir("the file source", dir.clone())),
        KeysSource::Etcd(etcd) => {
            own.extend(etcd.password_file.iter().map(|f| Own::File("the etcd password_file", f.clone())));
        }
    }
    match &config.secrets {
        Some(SecretsSource::Files(dir)) => own.push(Own::Dir("the file source", dir.clone())),
        Some(SecretsSource::Vault(vault)) => match &vault.auth {
            VaultAuth::Token { token_file: Some(f), .. } => own.push(Own::File("the vault token_file", f.clone())),
            VaultAuth::Token { token: None, token_file: None } => {
                own.extend(home.as_ref().map(|h| Own::File("the vault token file", h.join(".vault-token"))));
            }
            VaultAuth::Token { .. } => {}
            VaultAuth::AppRole { role_id_file, secret_id_file, .. } => {
                own.extend(role_id_file.iter().map(|f| Own::File("the vault role_id_file", f.clone())));
                own.extend(secret_id_file.iter().map(|f| Own::File("the vault secret_id_file", f.clone())));
            }
            VaultAuth::Kubernetes { token_file, .. } | VaultAuth::Jwt { token_file, .. } => {
                own.push(Own::File("the vault token_file", token_file.clone()));
            }
        },
        None => {}
    }
    own.extend(config.kubernetes.kubeconfig.iter().map(|k| Own::File("the kubeconfig", k.clone())));
    let kubernetes =
        config.outputs.iter().flat_map(|o| &o.targets).any(|t| matches!(t.kind, TargetKind::Kubernetes(_)));
    if kubernetes {
        match env.var("KUBECONFIG") {
            Some(list) => own.extend(
                list.split(':').filter(|p| !p.is_empty()).map(|p| Own::File("the kubeconfig (KUBECONFIG)", p.into())),
            ),
            None => own.extend(home.as_ref().map(|h| Own::File("the kubeconfig", h.join(".kube/config")))),
        }
    }
    own
}

/// `path` made absolute and normalised, and (when different) with the
/// symlinks of its existing directories resolved.
fn spellings(path: &Path) -> Vec<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let lexical = normalize(&cwd.join(path));
    let mut out = vec![lexical.clone()];
    if let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name()) {
        let resolved = resolve_existing(parent).join(name);
        if resolved != lexical {
            out.push(resolved);
        }
    }
    out
}
