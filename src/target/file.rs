//! File targets: observe a file's content and mode; write atomically.
//!
//! ```toml
//! [[output.target]]
//! kind = "file"
//! path = "out/{{ env }}/api.env"      # relative to the config's directory
//! format = "dotenv"                   # dotenv | json | yaml | raw | dir
//! mode = "0640"                       # default 0600 if the output read a secret, else 0644
//! check_cmd = "envcheck {{src}}"      # run on the staged file before it replaces the old one
//! reload_cmd = "systemctl reload api" # run after a real change only
//! ```
//!
//! A write is a temp file in the destination's directory (created 0600, so a
//! secret is never world-readable, not even for a moment), fsync, `chmod`,
//! optional `check_cmd`, rename over the destination, fsync of the
//! directory. A reader sees the old file or the new one, never a mix; a
//! crash leaves at most a `.cfgsync-*` temp file behind.
//!
//! Output of `check_cmd`/`reload_cmd` is shown only for outputs that read no
//! secret: a checker that echoes the offending line could print one.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::TargetError;
use crate::plan::{DesiredFile, ObservedFile};

/// How long a `check_cmd` or `reload_cmd` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The file at `path` now, or `None` when there is none.
pub fn observe(path: &Path) -> Result<Option<ObservedFile>, TargetError> {
    let err = |source| TargetError::Observe { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(content) => {
            let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o7777;
            Ok(Some(ObservedFile { content, mode }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// Writes `file` atomically, running `check_cmd` on the staged copy first.
pub async fn write(file: &DesiredFile, check_cmd: Option<&str>, tainted: bool) -> Result<(), TargetError> {
    let shown = file.path.display().to_string();
    let err = |source| TargetError::Write { path: shown.clone(), source };
    let dir = file.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut staged = tempfile::Builder::new().prefix(".cfgsync-").tempfile_in(dir).map_err(err)?;
    staged.write_all(file.content.expose()).map_err(err)?;
    staged.as_file().sync_all().map_err(err)?;
    staged.as_file().set_permissions(std::fs::Permissions::from_mode(file.mode)).map_err(err)?;
    if let Some(cmd) = check_cmd {
        let src = shell_quote(&staged.path().display().to_string());
        let cmd = cmd.replace("{{src}}", &src).replace("{{ src }}", &src);
        run(&cmd, tainted).await.map_err(|detail| TargetError::Check { path: shown.clone(), detail })?;
    }
    staged.persist(&file.path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Changes only the mode of an existing file whose content is right.
pub fn chmod(path: &Path, mode: u32) -> Result<(), TargetError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| TargetError::Write { path: path.display().to_string(), source })
}

/// Runs `reload_cmd` after a real change.
pub async fn reload(cmd: &str, path: &Path, tainted: bool) -> Result<(), TargetError> {
    run(cmd, tainted).await.map_err(|detail| TargetError::Reload { path: path.display().to_string(), detail })
}

async fn run(cmd: &str, tainted: bool) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Err(_) => return Err(format!("`{cmd}` timed out after {} s", COMMAND_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run `{cmd}`: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let mut detail = format!("`{cmd}` exited with {}", out.status);
    if tainted {
        detail.push_str(" (its output is not shown: the file holds secrets)");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        if !tail.is_empty() {
            detail.push_str(": ");
            detail.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
        }
    }
    Err(detail)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn desired(path: PathBuf, content: &str, mode: u32) -> DesiredFile {
        DesiredFile { path, content: crate::secret::Content::plain(content), mode }
    }

    #[tokio::test]
    async fn writes_atomically_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/app.env");
        write(&desired(path.clone(), "A=1\n", 0o600), None, true).await.unwrap();
        let seen = observe(&path).unwrap().unwrap();
        assert_eq!(seen, ObservedFile { content: b"A=1\n".to_vec(), mode: 0o600 });
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["app.env"]);
        assert!(observe(&dir.path().join("none")).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failing_check_keeps_the_old_file_and_hides_output_when_tainted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        std::fs::write(&path, "OLD\n").unwrap();
        let check = "grep -q NEVER {{src}} || { cat {{src}} >&2; exit 3; }";
        let e =
            write(&desired(path.clone(), "CANARY-value\n", 0o600), Some(check), true).await.unwrap_err().to_string();
        assert!(e.contains("exited with exit status: 3"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
        let e =
            write(&desired(path.clone(), "plain-value\n", 0o644), Some(check), false).await.unwrap_err().to_string();
        assert!(e.contains("plain-value"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "OLD\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write(&desired(path.clone(), "NEVER\n", 0o644), Some("grep -q NEVER {{ src }}"), false).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "NEVER\n");
    }
}
