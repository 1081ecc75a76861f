//! `cfgsync completions SHELL` and `cfgsync man`: generated from the clap
//! definitions in [`crate::cli`], so they can never disagree with the
//! binary.
//!
//! Decision: both are subcommands of the binary rather than a build script
//! or an xtask. A packager runs `cfgsync completions bash > …` and
//! `cfgsync man --out-dir share/man/man1` after building; a user of a
//! plain `cargo install` gets them too; and nothing extra is compiled into
//! every build. Neither needs a config file.
//!
//! Completion of names from the config (envs after `--env` and as the env
//! arguments of `diff`, `explain`, `set`, `set-secret`; outputs after
//! `--from`): clap's dynamic completion is unstable (and would add crates),
//! so the static bash, zsh and fish scripts get a small hook
//! (`hook.bash`, `hook.zsh`, `hook.fish`) that asks the hidden
//! `cfgsync complete-names envs|outputs`, with the `--config` of the
//! command line being completed. It prints nothing when the config cannot
//! be loaded, so completion never shows an error.
//!
//! The man pages: clap_mangen's sections, then EXIT STATUS, ENVIRONMENT and
//! FILES on every page and EXAMPLES on cfgsync(1). A page refers to
//! another (`cfgsync-diff(1)`) only when it is written: `cfgsync man`
//! alone prints one page and lists the commands by name.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::CmdError;
use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout, with the hook that
/// completes names from the config where the shell has one.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CmdError> {
    let mut command = Cli::command();
    command.set_bin_name("cfgsync");
    command.build();
    let mut script = Vec::new();
    clap_complete::Generator::try_generate(&shell, &command, &mut script)?;
    let script = with_hook(shell, &String::from_utf8_lossy(&script));
    let stdout = io::stdout();
    let mut out = stdout.lock();
    out.write_all(script.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `script` with the name-completion hook of `shell` wired in.
fn with_hook(shell: clap_complete::Shell, script: &str) -> String {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => {
            let script = script.replace("complete -F _cfgsync ", "complete -F _cfgsync_dynamic ");
            format!("{script}{}", include_str!("hook.bash"))
        }
        Shell::Zsh => {
            let mut out = String::with_capacity(script.len() + 1024);
            for line in script.lines() {
                let env_arg = line.starts_with("':") && line.contains(" -- The env") && line.ends_with(":_default' \\");
                let line = if line.contains(":ENV:_default'") || env_arg {
                    line.replace(":_default'", ":_cfgsync_envs'")
                } else {
                    line.replace(":FROM:_default'", ":FROM:_cfgsync_outputs'")
                };
                out.push_str(&line);
                out.push('\n');
                if line.starts_with("autoload -U is-at-least") {
                    out.push_str(include_str!("hook.zsh"));
                }
            }
            out
        }
        Shell::Fish => format!("{script}{}", include_str!("hook.fish")),
        _ => script.to_owned(),
    }
}

/// `cfgsync complete-names envs|outputs`: one name a line, for the hooks;
/// nothing (and success) when the config cannot be loaded.
pub fn names(config: &Path, what: crate::cli::NameKind) -> ExitCode {
    let Ok(config) = crate::config::load(config, &crate::config::ProcessEnv) else { return ExitCode::SUCCESS };
    let names: Vec<&str> = match what {
        crate::cli::NameKind::Envs => config.envs.iter().map(String::as_str).collect(),
        crate::cli::NameKind::Outputs => config.outputs.iter().map(|o| o.name.as_str()).collect(),
    };
    let mut out = io::stdout().lock();
    for n in names {
        if writeln!(out, "{n}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Prints cfgsync(1), or writes it and one page per command
/// (`cfgsync-diff.1`, `cfgsync-policy-apply.1`, …) into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> Result<ExitCode, CmdError> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let mut written = Vec::new();
            write_pages(&command, dir, true, &mut written)?;
            writeln!(io::stdout().lock(), "{} man pages written to {}", written.len(), dir.display())?;
        }
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            page(&command, true, false, &mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `command` and of each visible subcommand, recursively.
fn write_pages(command: &clap::Command, dir: &Path, top: bool, written: &mut Vec<String>) -> io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, false, written)?;
    }
    let name = clap_mangen::Man::new(command.clone()).get_filename();
    let mut file = io::BufWriter::new(std::fs::File::create(dir.join(&name))?);
    page(command, top, true, &mut file)?;
    file.flush()?;
    written.push(name);
    Ok(())
}

/// One page: clap_mangen's sections, the commands (as page references only
/// when `refs`: the pages are written), then ours.
fn page(command: &clap::Command, top: bool, refs: bool, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    let subs: Vec<&clap::Command> = command.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() {
        if refs {
            man.render_subcommands_section(out)?;
        } else {
            writeln!(out, ".SH COMMANDS")?;
            let name = command.get_display_name().unwrap_or(command.get_name()).replace('-', " ");
            for sub in subs {
                writeln!(out, ".TP\n\\fB{} {}\\fR", roff_text(&name), roff_text(sub.get_name()))?;
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                writeln!(out, "{}", roff_text(&about))?;
            }
        }
    }
    if command.get_after_help().is_some() || command.get_after_long_help().is_some() {
        man.render_extra_section(out)?;
    }
    if top {
        out.write_all(include_str!("examples.roff").as_bytes())?;
    }
    out.write_all(include_str!("sections.roff").as_bytes())?;
    if !top {
        writeln!(out, ".SH \"SEE ALSO\"\ncfgsync(1)")?;
    }
    if command.get_version().is_some() || command.get_long_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Text for a roff line: backslashes and hyphens escaped, no line starting
/// with a control character.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
}
