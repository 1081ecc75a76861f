//! The registry: the one list of target kinds.
//!
//! [`kinds!`] names every kind once, one entry each:
//!
//! ```text
//! Variant(field: path::to::TheKind) { RawVariant = "kind-name", … },
//! ```
//!
//! — the variant of [`TargetKind`] (a configured target, typed), the field
//! of [`Targets`] (the kinds, built once per config), the kind's type, and
//! each `kind = "…"` it is written with in the config. Everything that goes
//! over every kind is generated from that list: the config's
//! `[[output.target]]` tables ([`RawTarget`]), the typed targets, building
//! the kinds, asking a target what it holds ([`Targets::held`]), and — through `kinds!(callback)` — a pass's per-kind plans in
//! [`crate::reconcile`]. Nothing else in cfgsync names the kinds.
//!
//! What is said about a kind anywhere else (its name and address in
//! reports, whether it may take secrets, its credential variable, its
//! error codes) is asked of the kind ([`Kind`], [`super::KindError`]).
//!
//! Decision: a declarative macro over a static list, not `dyn Target`
//! objects in a `Vec`: every kind's pass stays generic code (no dynamic
//! dispatch per item), and a kind missing an implementation fails to
//! compile. The cost is that the list is a macro, read by callbacks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::state::StateStore;
use super::{Ctx, HeldItem, Target, TargetError};
use crate::config::{Config, Entry, Location};
use crate::render::Rendered;

/// Calls `$callback! { … }` with every kind (see the module doc for the
/// form of an entry). **The registry line of a new kind goes here.**
macro_rules! kinds {
    ($callback:ident) => {
        $callback! {
            File(files: $crate::targets::file::FileKind) { File = "file" },
            Kubernetes(kube: $crate::targets::kubernetes::KubeKind) {
                KubernetesSecret = "kubernetes-secret",
                KubernetesConfigmap = "kubernetes-configmap"
            },
            Gitlab(gitlab: $crate::targets::gitlab::GitlabKind) { Gitlab = "gitlab" },
            Github(github: $crate::targets::github::GithubKind) { Github = "github" },
        }
    };
}
pub(crate) use kinds;

/// Problems found building a target: at an entry's location, or (`None`)
/// at the target's.
pub type Problems = Vec<(Option<Location>, String)>;

/// What a kind's [`Kind::build`] gets besides its table.
pub struct SpecInput<'a> {
    /// The output the target belongs to, for messages.
    pub output: &'a str,
    /// The envs the output is rendered for (a spec is built for each).
    pub envs: &'a [String],
    pub entries: &'a [Entry],
    /// The config's directory: relative paths are resolved against it.
    pub dir: &'a Path,
}

/// What building the kinds for a config may use.
pub struct Setup<'a> {
    pub config: &'a Config,
    /// `--kubeconfig`, when given.
    pub kubeconfig: Option<PathBuf>,
    /// Where kinds whose destinations keep no mark record what they wrote
    /// ([`super::state`]); one store shared by them.
    pub state: Arc<StateStore>,
}

/// What the registry asks of a kind besides a pass ([`Target`]): its table
/// in the config, and what is said about its targets elsewhere.
pub trait Kind: Target + Sized {
    /// Its `[[output.target]]` table as written (`deny_unknown_fields`).
    type Raw: DeserializeOwned;

    /// Other cfgsync configs can see what it writes (a cluster, a CI
    /// project, records in a shared etcd): a config with such a target
    /// must name its `instance`.
    const SHARED: bool;

    /// It writes on the machine cfgsync runs on: `pull` (a laptop)
    /// plans and writes only such kinds.
    const LOCAL: bool = false;

    /// Its records of secret content are fingerprinted with the env's
    /// fingerprint key, which the sources then read with the env.
    const KEYED: bool = false;

    /// The typed spec from the table as written; `tag` is its
    /// `kind = "…"`. Every problem, not only the first.
    fn build(tag: &str, raw: Self::Raw, input: &SpecInput<'_>) -> Result<Self::Spec, Problems>;

    /// The kind, built once per config.
    fn new(setup: &Setup<'_>) -> Self;

    /// The kind's name in reports (`file`, `kubernetes-secret`, …).
    fn kind_name(spec: &Self::Spec) -> &'static str;

    /// Where `spec` writes for `env`, as shown to people.
    fn address(spec: &Self::Spec, env: &str) -> String;

    /// Why `spec` must not get the content of an output that reads secret
    /// `secret` (refused at `validate`, before any source is read; the
    /// kind checks the rendered taint again in every pass).
    fn secret_problem(_spec: &Self::Spec, _output: &str, _secret: &str) -> Option<String> {
        None
    }

    /// The environment variable its credential is read from
    /// (`run-with` removes it from a command's environment).
    fn credential_var(_spec: &Self::Spec) -> Option<&str> {
        None
    }

    /// The server it talks to and the CA it trusts there (`ca_file`);
    /// one server is trusted with one CA.
    fn server_ca(_spec: &Self::Spec) -> Option<(&str, &Path)> {
        None
    }
}

/// A kind's variant of [`TargetKind`] (generated from its registry line).
pub trait Registered: Kind {
    /// The spec behind a configured target, when it is of this kind.
    fn spec(target: &TargetKind) -> Option<&Self::Spec>;
}

/// The registry's own expansion: [`TargetKind`], [`RawTarget`], [`Targets`].
macro_rules! registry {
    ($( $Variant:ident($field:ident: $Kind:path) { $( $RawVariant:ident = $tag:literal ),+ } ),+ $(,)?) => {
        /// A configured target, typed: one variant per kind.
        #[derive(Debug)]
        pub enum TargetKind {
            $( $Variant(<$Kind as Target>::Spec), )+
        }

        /// An `[[output.target]]` table as written: one variant per
        /// `kind = "…"`.
        #[derive(serde::Deserialize)]
        #[serde(tag = "kind")]
        pub enum RawTarget {
            $( $( #[serde(rename = $tag)] $RawVariant(<$Kind as Kind>::Raw), )+ )+
        }

        impl RawTarget {
            /// The typed target, by its kind's [`Kind::build`].
            pub fn build(self, input: &SpecInput<'_>) -> Result<TargetKind, Problems> {
                match self {
                    $( $( RawTarget::$RawVariant(raw) => {
                        <$Kind as Kind>::build($tag, raw, input).map(TargetKind::$Variant)
                    } )+ )+
                }
            }
        }

        $(
            impl Registered for $Kind {
                fn spec(target: &TargetKind) -> Option<&<$Kind as Target>::Spec> {
                    match target {
                        TargetKind::$Variant(spec) => Some(spec),
                        _ => None,
                    }
                }
            }
        )+

        /// Every kind, built once per config.
        pub struct Targets {
            $( pub $field: $Kind, )+
        }

        impl Targets {
            /// `kubeconfig`: `--kubeconfig`, else the config's.
            pub fn new(config: &Config, kubeconfig: Option<PathBuf>) -> Self {
                let setup = Setup { config, kubeconfig, state: Arc::new(StateStore::new(config)) };
                Self { $( $field: <$Kind as Kind>::new(&setup), )+ }
            }

            /// What `target` holds for each rendering of its output
            /// (current first), asked of its kind: see [`super::held_of`].
            pub async fn held(
                &self,
                target: &TargetKind,
                rendered: &[&Rendered],
                ctx: &Ctx<'_>,
            ) -> Result<Vec<Vec<HeldItem>>, TargetError> {
                match target {
                    $( TargetKind::$Variant(spec) => super::held_of(&self.$field, spec, rendered, ctx).await, )+
                }
            }
        }

        impl TargetKind {
            /// The kind's name in reports (`file`, `kubernetes-secret`, …).
            pub fn name(&self) -> &'static str {
                match self { $( TargetKind::$Variant(s) => <$Kind as Kind>::kind_name(s), )+ }
            }

            /// Where it writes for `env`, as shown to people.
            pub fn address(&self, env: &str) -> String {
                match self { $( TargetKind::$Variant(s) => <$Kind as Kind>::address(s, env), )+ }
            }

            /// See [`Kind::SHARED`].
            pub fn shared(&self) -> bool {
                match self { $( TargetKind::$Variant(_) => <$Kind as Kind>::SHARED, )+ }
            }

            /// See [`Kind::LOCAL`].
            pub fn local(&self) -> bool {
                match self { $( TargetKind::$Variant(_) => <$Kind as Kind>::LOCAL, )+ }
            }

            /// See [`Kind::KEYED`].
            pub fn keyed(&self) -> bool {
                match self { $( TargetKind::$Variant(_) => <$Kind as Kind>::KEYED, )+ }
            }

            /// See [`Kind::secret_problem`].
            pub fn secret_problem(&self, output: &str, secret: &str) -> Option<String> {
                match self { $( TargetKind::$Variant(s) => <$Kind as Kind>::secret_problem(s, output, secret), )+ }
            }

            /// See [`Kind::credential_var`].
            pub fn credential_var(&self) -> Option<&str> {
                match self { $( TargetKind::$Variant(s) => <$Kind as Kind>::credential_var(s), )+ }
            }

            /// See [`Kind::server_ca`].
            pub fn server_ca(&self) -> Option<(&str, &Path)> {
                match self { $( TargetKind::$Variant(s) => <$Kind as Kind>::server_ca(s), )+ }
            }
        }
    };
}

kinds!(registry);
