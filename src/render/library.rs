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
//! | file | macros | for |
//! |---|---|---|
//! | `dsn.tera` | `postgres`, `mysql`, `redis`, `mongodb` | connection URLs, credentials percent-encoded |
//! | `nginx.tera` | `upstream` | an `upstream` block from a list or a `keys()` map |
//! | `dotenv.tera` | `block` | `NAME=value` lines every dotenv reader reads back exactly |
//! | `compose.tera` | `env_file` | `NAME=value` lines for docker compose, any value |
//! | `spring.tera` | `datasource` | a Spring Boot `application.yaml` datasource |
//!
//! Each file opens with a comment documenting its macros with an example.
//! Decision: a macro checks what its format cannot quote (an nginx
//! directive, a URL host, a placeholder Spring would resolve) and stops
//! the rendering with `throw`, naming the argument or entry but never the
//! value, instead of writing text the reader would misread. The dotenv
//! block writes exactly what a dotenv file target without `dialect` writes
//! (`tests/integration/library.rs` compares the two on a hostile corpus).
//!
//! Search path: the config's own `templates/` first, then these. A file
//! `templates/cfgsync/dsn.tera` next to a config therefore replaces the
//! shipped one for that config (and `validate` says nothing about it: it is
//! the documented way to pin or patch a library template).

/// What every shipped template's name starts with. Only a config whose
/// templates contain it has the library compiled (most fleets' entries
/// never touch it, and parsing it costs every process).
pub const PREFIX: &str = "cfgsync/";

/// (name under `templates/`, text) of every shipped template.
pub const SHIPPED: &[(&str, &str)] = &[
    ("cfgsync/compose.tera", include_str!("../../templates/cfgsync/compose.tera")),
    ("cfgsync/dotenv.tera", include_str!("../../templates/cfgsync/dotenv.tera")),
    ("cfgsync/dsn.tera", include_str!("../../templates/cfgsync/dsn.tera")),
    ("cfgsync/nginx.tera", include_str!("../../templates/cfgsync/nginx.tera")),
    ("cfgsync/spring.tera", include_str!("../../templates/cfgsync/spring.tera")),
];
