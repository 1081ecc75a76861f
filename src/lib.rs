//! cfgsync: people are the source of truth; etcd (plain configuration) and
//! Vault (secrets) record it; cfgsync renders Tera templates from one
//! consistent snapshot per env and makes files, Kubernetes objects and CI
//! variables agree with it.
//!
//! # Layout
//!
//! - [`cli`]: the command line as plain data.
//! - [`config`]: `cfgsync.toml` → validated [`config::Config`]; every problem with file:line:col.
//! - [`source`]: the [`source::Source`] trait, [`source::Snapshot`], and the file, etcd and Vault sources, with their TLS clients ([`source::tls`]); cfgsync's key layout in etcd ([`source::etcd::keyspace`]).
//! - [`render`]: pure rendering with taint tracking; static checks of templates.
//! - [`format`]: dotenv / json / yaml / raw / dir encodings.
//! - [`plan`]: pure desired-vs-observed decisions.
//! - [`targets`]: the `Target` trait and its kinds (files, Kubernetes, GitLab, GitHub): observe, plan, apply; the one list of kinds ([`targets::registry`]); the CI kinds' record of what they wrote.
//! - [`reconcile`]: one pass, with failure isolation (fail closed per env).
//! - [`report`]: text and JSON presentation of a pass.
//! - [`secret`]: the redacting [`secret::SecretString`].
//! - [`telemetry`]: logging set-up that cannot print secrets.
//! - [`text`]: escaping values for a terminal; paths as shown.
//! - [`utc`]: points in time as people read them.
//! - [`cmd`]: the commands besides a pass (`validate`, `diff`, `pull`, `run-with`, `explain`, `set`, `set-secret`, `import`, `policy apply`, `policy plan`, `whoami`, `log`, `rollback`, `rotate verify`, completions, man).
//! - [`fingerprint`]: "same or differs" for secrets without the value: the fingerprints written beside what cfgsync writes (keyed per env) and those shown (keyed per run).
//! - [`history`]: the record of past passes (`<prefix>/_history/<env>/`), and what `<env>@<when>` resolves to.
//! - [`when`]: parsing `<env>@<when>` (`rev:N`, RFC 3339, `-1h`, `-3passes`).
//! - [`service`]: `cfgsync run`: interval + etcd watch per env, reload, leader election, shutdown.
//! - [`http`], [`metrics`]: `/metrics`, `/healthz`, `/readyz` of the service.
//!
//! Layers point one way (`docs/architecture.md`, kept by a test): the
//! commands and the service over [`reconcile`], over the model
//! ([`config`], [`source`], [`render`], [`targets`]), over the pure
//! [`plan`] and the vocabulary ([`text`], [`secret`], [`fingerprint`],
//! [`format`]).
#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod config;
pub mod fingerprint;
pub mod format;
pub mod history;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod report;
pub mod secret;
pub mod service;
pub mod source;
pub mod targets;
pub mod telemetry;
pub mod text;
pub mod utc;
pub mod when;
