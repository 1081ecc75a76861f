//! The templates cfgsync ships, importable from any config.
//!
//! They live in the repository's top-level `templates/cfgsync/` and are
//! compiled into the binary, so an installed `cfgsync` has them wherever
//! its config is. A config refers to them as `cfgsync/<name>.tera`:
//!
//! ```text
//! {% import "cfgsync/dsn.tera" as dsn %}
//! ```
//!
//! Search path: the config's own `templates/` first, then these. A file
//! `templates/cfgsync/dsn.tera` next to a config therefore replaces the
//! shipped one for that config (and `validate` says nothing about it: it is
//! the documented way to pin or patch a library template).

/// (name under `templates/`, text) of every shipped template.
pub const SHIPPED: &[(&str, &str)] = &[("cfgsync/dsn.tera", include_str!("../../templates/cfgsync/dsn.tera"))];
