//! `kind = "file"` in the config: the fields as written, and the typed
//! target built from them with every problem `validate` can know (paths
//! per env, modes, commands, entry names) rather than at the first pass.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::state::normalize;
use crate::config::Entry;
use crate::format::{self, Dialect, Format};
use crate::targets::registry::{Problems, SpecInput};

/// The target as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileTarget {
    path: String,
    #[serde(default = "default_format")]
    format: Format,
    /// Which reader a dotenv file is for; only with `format = "dotenv"`.
    dialect: Option<Dialect>,
    mode: Option<String>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    /// A directory whose own path may contain symlinks (below it, none).
    trusted_dir: Option<PathBuf>,
}

fn default_format() -> Format {
    Format::Dotenv
}

/// A file target, rendered for each env.
#[derive(Debug)]
pub struct FileTarget {
    /// The path for each env, rendered and resolved against the config dir.
    pub paths: BTreeMap<String, PathBuf>,
    pub format: Format,
    /// The reader a dotenv file is quoted for; the default ([`Dialect::Portable`])
    /// for every other format, which has no dialects.
    pub dialect: Dialect,
    /// Explicit mode; otherwise 0600 for tainted outputs, 0644 for others.
    pub mode: Option<u32>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    /// Symlinks are followed only in this directory's own path.
    pub trusted_dir: Option<PathBuf>,
}

/// Builds the typed target; every problem, at an entry's location when it
/// is about one entry (else `None`: the target's).
pub fn build(raw: RawFileTarget, input: &SpecInput<'_>) -> Result<FileTarget, Problems> {
    let mut problems = Problems::new();
    let output = input.output;
    let mut problem = |message: String| problems.push((None, format!("output {output:?}: {message}")));
    let mode = raw.mode.as_deref().and_then(|m| match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
        Ok(v) if v <= 0o777 => Some(v),
        _ => {
            problem(format!("invalid file mode {m:?}: use octal like \"0640\""));
            None
        }
    });
    if raw.format == Format::Raw && input.entries.len() != 1 {
        problem(format!("format \"raw\" writes a single entry, but the output has {}", input.entries.len()));
    }
    if raw.dialect.is_some() && raw.format != Format::Dotenv {
        problem("`dialect` applies to format \"dotenv\" only".to_owned());
    }
    // Commands are rendered per env when they run: any error shows now.
    for (what, cmd, src) in [("check_cmd", &raw.check_cmd, Some("'/staged'")), ("reload_cmd", &raw.reload_cmd, None)] {
        let Some(cmd) = cmd else { continue };
        if let Some(e) = input.envs.iter().find_map(|e| crate::render::render_command(cmd, e, src).err()) {
            problem(format!("{what} {cmd:?}: {e}"));
        }
    }
    let paths = paths(&raw.path, input, &mut problem);
    let trusted_dir = raw.trusted_dir.map(|d| normalize(&d));
    if let Some(d) = &trusted_dir {
        if !d.is_absolute() {
            problem(format!("trusted_dir {:?} must be an absolute path", d.display()));
        } else if let Some(p) = paths.values().find(|p| !p.starts_with(d)) {
            problem(format!("path {} is not below trusted_dir {}", p.display(), d.display()));
        }
    }
    problems.extend(entry_problems(raw.format, input.entries, output));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(FileTarget {
        paths,
        format: raw.format,
        dialect: raw.dialect.unwrap_or_default(),
        mode,
        check_cmd: raw.check_cmd,
        reload_cmd: raw.reload_cmd,
        trusted_dir,
    })
}

/// `template` rendered and resolved for each env: relative to the
/// config's directory (never above it), or absolute for every env; not
/// through cfgsync's own names; one env's path is not another's.
fn paths(template: &str, input: &SpecInput<'_>, problem: &mut dyn FnMut(String)) -> BTreeMap<String, PathBuf> {
    let absolute_in_config = Path::new(template).is_absolute();
    let mut paths = BTreeMap::new();
    for env in input.envs {
        let rendered = match crate::config::render_field(template, env) {
            Ok(p) => p,
            Err(e) => {
                problem(format!("file target path {template:?}: {e}"));
                break;
            }
        };
        match resolve(&rendered, env, absolute_in_config, input.dir) {
            Ok(path) => {
                paths.insert(env.clone(), path);
            }
            Err(message) => problem(message),
        }
    }
    let mut by_path: BTreeMap<&PathBuf, Vec<&str>> = BTreeMap::new();
    for (env, p) in &paths {
        by_path.entry(p).or_default().push(env);
    }
    for (p, envs) in by_path.into_iter().filter(|(_, envs)| envs.len() > 1) {
        problem(format!("envs {} would all write {}; put {{{{ env }}}} in the path", envs.join(", "), p.display()));
    }
    paths
}

/// One env's rendered path, resolved against `dir`.
fn resolve(rendered: &str, env: &str, absolute_in_config: bool, dir: &Path) -> Result<PathBuf, String> {
    if rendered.trim().is_empty() {
        return Err(format!("file target path is empty for env {env:?}"));
    }
    let path = Path::new(rendered);
    if let Some(name) = super::io::reserved_component(path) {
        return Err(format!(
            "path {rendered:?} (env {env:?}) goes through {:?}: names starting with .cfgsync are cfgsync's own state and temp files",
            name.to_string_lossy()
        ));
    }
    if path.is_absolute() != absolute_in_config {
        return Err(format!("path {rendered:?} must not change between relative and absolute per env"));
    }
    if path.is_absolute() {
        return Ok(normalize(path));
    }
    match normalize_within(path) {
        // `./out/x` shown as `out/x`: paths look the same everywhere.
        Some(p) if dir == Path::new(".") => Ok(p),
        Some(p) => Ok(dir.join(p)),
        None => Err(format!(
            "path {rendered:?} (env {env:?}) leaves the config's directory; write an absolute path to allow that"
        )),
    }
}

/// What the first pass would refuse of the entries' names, refused now
/// (names are config, not data).
fn entry_problems(format: Format, entries: &[Entry], output: &str) -> Problems {
    entries
        .iter()
        .filter_map(|e| {
            let why = match format {
                Format::Dir => format::check_file_name(&e.name)
                    .err()
                    .map(|why| format!("cannot be a file name in a dir target: {why}")),
                Format::Dotenv if !format::dotenv::is_env_name(&e.name) => {
                    Some("cannot be written to a dotenv file: names must match [A-Za-z_][A-Za-z0-9_]*".to_owned())
                }
                _ => None,
            }?;
            Some((Some(e.location.clone()), format!("output {output:?}: entry {:?} {why}", e.name)))
        })
        .collect()
}

/// Lexically normalizes a relative path; `None` when it climbs above its start.
pub fn normalize_within(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
                out.pop();
            }
            Component::Normal(p) => {
                depth += 1;
                out.push(p);
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (depth > 0).then_some(out)
}
