//! The terminal: colours, confirmations, hidden prompts and progress.
//!
//! Decisions:
//! - Colour only when stdout is a terminal and `NO_COLOR` is unset
//!   ([`Style`]: anstream's rule, which clap's help follows too).
//! - Confirmations and secret prompts talk to `/dev/tty`, not stdin/stdout,
//!   so `printf %s "$pw" | cfgsync set-secret …` still asks on the terminal,
//!   and a script with no terminal gets a clear error instead of a hang
//!   (pass `--yes`), as `terraform apply` and `kubectl delete` users expect.
//! - Progress (indicatif) goes to stderr, only when stderr is a terminal,
//!   and only once the work has taken longer than [`PROGRESS_DELAY`]: a
//!   fast pull prints nothing extra.

use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::CmdError;
use crate::secret::SecretString;

/// How long work runs before a progress bar appears.
pub const PROGRESS_DELAY: Duration = Duration::from_millis(400);

pub use crate::report::Style;

fn tty() -> Result<std::fs::File, CmdError> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| CmdError::NoTerminal)
}

/// Asks `question [y/N]` on the terminal; true only for y/yes.
pub fn confirm(question: &str) -> Result<bool, CmdError> {
    let mut tty = tty()?;
    write!(tty, "{question} [y/N] ").map_err(CmdError::Terminal)?;
    tty.flush().map_err(CmdError::Terminal)?;
    let mut answer = String::new();
    io::BufReader::new(&tty).read_line(&mut answer).map_err(CmdError::Terminal)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// A secret value: from stdin when it is not a terminal (one trailing
/// newline removed, as `vault kv put field=-` does), else typed at a
/// prompt on the terminal with echo off.
pub fn read_secret_value(prompt: &str) -> Result<SecretString, CmdError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut value = String::new();
        io::Read::read_to_string(&mut stdin.lock(), &mut value).map_err(CmdError::Stdin)?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        return Ok(SecretString::new(value));
    }
    let tty = tty()?;
    let mut out = &tty;
    write!(out, "{prompt}").map_err(CmdError::Terminal)?;
    out.flush().map_err(CmdError::Terminal)?;
    let saved = rustix::termios::tcgetattr(&tty).map_err(|e| CmdError::Terminal(e.into()))?;
    let mut silent = saved.clone();
    silent.local_modes.remove(rustix::termios::LocalModes::ECHO);
    silent.local_modes.insert(rustix::termios::LocalModes::ECHONL);
    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Flush, &silent)
        .map_err(|e| CmdError::Terminal(e.into()))?;
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    // Restore echo before looking at the result.
    let restored = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Flush, &saved);
    read.map_err(CmdError::Terminal)?;
    restored.map_err(|e| CmdError::Terminal(e.into()))?;
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    Ok(SecretString::new(value))
}

/// A progress bar on stderr that shows up only when the work is slow and
/// stderr is a terminal.
pub struct Progress {
    bar: ProgressBar,
    /// Reveals the bar after [`PROGRESS_DELAY`]; aborted when done.
    reveal: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(len: u64, message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.to_owned());
        let reveal = io::stderr().is_terminal().then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PROGRESS_DELAY).await;
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(120));
            })
        });
        Self { bar, reveal }
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_owned());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.reveal.take() {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}
