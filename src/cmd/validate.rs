//! `cfgsync validate`: whether the config and its templates load, and
//! every problem with its location when they do not. With `--output json`,
//! stdout gets one JSON document either way (the problems go to stderr as
//! well, one `error:` line each).

use std::io::{self, Write};
use std::process::ExitCode;

use super::unless_closed;
use crate::cli::OutputFormat;
use crate::config::{Config, ConfigError};
use crate::render::Templates;
use crate::text::one_line;

/// What `main` reports: the problems (text output), or stdout failing.
#[derive(Debug)]
pub enum ValidateError {
    Config(ConfigError),
    Io(io::Error),
}

impl From<io::Error> for ValidateError {
    fn from(e: io::Error) -> Self {
        ValidateError::Io(e)
    }
}

/// One `error:` line per problem, on stderr.
pub fn print_problems(e: &ConfigError) {
    for p in &e.problems {
        eprintln!("error: {}", one_line(&p.to_string()));
    }
}

/// `loaded`: the config and its templates, or every problem found.
/// With `--output json`, stdout gets one JSON document either way.
pub fn run(loaded: Result<(Config, Templates), ConfigError>, format: OutputFormat) -> Result<ExitCode, ValidateError> {
    let (doc, code) = match loaded {
        Ok((config, templates)) => {
            let targets: usize = config.outputs.iter().map(|o| o.targets.len()).sum();
            if format == OutputFormat::Text {
                let line = format!(
                    "{}: ok ({} envs, {} outputs, {targets} targets)",
                    config.path.display(),
                    config.envs.len(),
                    config.outputs.len(),
                );
                unless_closed(writeln!(io::stdout().lock(), "{line}"))?;
                return Ok(ExitCode::SUCCESS);
            }
            let outputs: Vec<_> = config
                .outputs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    serde_json::json!({
                        "name": o.name,
                        "envs": o.envs,
                        "secret": templates.analysis(i).reads_secrets(),
                        "targets": o.targets.len(),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "ok": true,
                "config": config.path.display().to_string(),
                "envs": config.envs,
                "outputs": outputs,
                "targets": targets,
            });
            (doc, ExitCode::SUCCESS)
        }
        Err(e) if format == OutputFormat::Text => return Err(ValidateError::Config(e)),
        Err(e) => {
            print_problems(&e);
            let problems: Vec<_> = e
                .problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "file": p.location.as_ref().map(|l| l.file.display().to_string()),
                        "line": p.location.as_ref().map(|l| l.line),
                        "column": p.location.as_ref().map(|l| l.column),
                        "message": p.message,
                    })
                })
                .collect();
            (serde_json::json!({ "ok": false, "problems": problems }), ExitCode::from(2))
        }
    };
    let mut out = io::stdout().lock();
    unless_closed(serde_json::to_writer_pretty(&mut out, &doc).map_err(io::Error::from).and_then(|()| writeln!(out)))?;
    Ok(code)
}
