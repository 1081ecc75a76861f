//! Layers point one way: every `crate::…` path in the source of a module
//! (its `use` lines and paths written inline, test modules included) names
//! only modules at its own layer or below. The layers are in
//! `docs/architecture.md`; this test keeps them true.
//!
//! A source text scan, not the compiler's view: comments are skipped (a
//! doc link is not a dependency), everything else counts.

use std::path::{Path, PathBuf};

/// What each part of `src/` must not name: the layers above it.
const RULES: &[(&str, &[&str])] = &[
    // The vocabulary at the bottom.
    ("text.rs", &["cmd", "service", "reconcile", "report", "targets", "plan", "config", "source", "render"]),
    ("secret.rs", &["cmd", "service", "reconcile", "report", "targets", "plan", "config", "source", "render"]),
    ("fingerprint.rs", &["cmd", "service", "reconcile", "report", "targets", "plan", "config", "source", "render"]),
    ("format.rs", &["cmd", "service", "reconcile", "report", "targets", "plan", "config", "source", "render"]),
    ("format", &["cmd", "service", "reconcile", "report", "targets", "plan", "config", "source", "render"]),
    // The pure plan: no kind, no client, no config.
    ("plan.rs", &["cmd", "service", "reconcile", "report", "targets", "config", "source", "render"]),
    // The model: the config, the sources, rendering, the target kinds.
    ("targets", &["cmd", "service", "reconcile", "report", "http", "metrics"]),
    ("config", &["cmd", "service", "reconcile", "report", "http", "metrics"]),
    ("source", &["cmd", "service", "reconcile", "report", "http", "metrics", "targets"]),
    ("render", &["cmd", "service", "reconcile", "report", "http", "metrics", "targets"]),
    // The pass over the model.
    ("reconcile.rs", &["cmd", "service", "report", "http", "metrics"]),
    ("reconcile", &["cmd", "service", "report", "http", "metrics"]),
    ("report.rs", &["cmd", "service", "http", "metrics"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            rust_files(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The modules a source text names as `crate::<module>`, with the line.
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let module: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `crate::{a, b}` names each of them.
            if module.is_empty() && after.starts_with('{') {
                let group = &after[1..after.find('}').unwrap_or(after.len())];
                for part in group.split(',') {
                    let m: String =
                        part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    out.push((n + 1, m));
                }
            } else {
                out.push((n + 1, module));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn layers_point_one_way() {
    let root = src();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (part, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(part), &mut files);
        assert!(!files.is_empty(), "src/{part} is gone: update the rules here and in docs/architecture.md");
        for file in files {
            checked += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, module) in named_modules(&text) {
                if forbidden.contains(&module.as_str()) {
                    let shown = file.strip_prefix(&root).unwrap().display().to_string();
                    broken.push(format!("src/{shown}:{line} names crate::{module}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} files checked");
    assert!(broken.is_empty(), "layers point one way (docs/architecture.md):\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_inline_paths_and_groups_not_comments() {
    let text = "use crate::{cmd, text::x};\nlet p = crate::service::run();\n// crate::reconcile in a comment\n/// [`crate::reconcile`]\nf(); // crate::report\n";
    let found: Vec<String> = named_modules(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["cmd", "text", "service"]);
}
