//! `cfgsync completions SHELL` and `cfgsync man`: generated from the clap
//! definitions in [`crate::cli`], so they can never disagree with the
//! binary.
//!
//! Decision: both are subcommands of the binary rather than a build script
//! or an xtask. A packager runs `cfgsync completions bash > …` and
//! `cfgsync man --out-dir share/man/man1` after building; a user of a
//! plain `cargo install` gets them too; and nothing extra is compiled into
//! every build. Neither needs a config file.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::CmdError;
use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CmdError> {
    let mut command = Cli::command();
    command.set_bin_name("cfgsync");
    command.build();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    // try_generate: `generate` panics when stdout is closed (`| head`).
    clap_complete::Generator::try_generate(&shell, &command, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints cfgsync(1), or writes it and one page per subcommand
/// (`cfgsync-diff.1`, …) into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> Result<ExitCode, CmdError> {
    let command = Cli::command();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(command, dir)?;
            writeln!(io::stdout().lock(), "man pages written to {}", dir.display())?;
        }
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            clap_mangen::Man::new(command).render(&mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
