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

/// One line of the registry's `kinds!`: `Variant(field: $crate::targets::<folder>::<Type>) { Raw = "tag", … }`.
#[derive(Debug)]
struct RegistryLine {
    folder: String,
    kind_type: String,
    tags: Vec<String>,
}

/// The lines of `kinds!` in `src/targets/registry.rs`.
fn registry_lines() -> Vec<RegistryLine> {
    let text = std::fs::read_to_string(src().join("targets/registry.rs")).unwrap();
    let start = text.find("$callback! {").expect("kinds! calls $callback! { … }");
    let body = &text[start..];
    let body = &body[..body.find("\n        }\n").expect("the end of the kinds! list")];
    let mut lines = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("$crate::targets::") {
        let path = &rest[at + "$crate::targets::".len()..];
        let path = &path[..path.find(')').unwrap()];
        let (folder, kind_type) = path.split_once("::").unwrap();
        let tags_from = at + rest[at..].find('{').unwrap();
        let tags_to = tags_from + rest[tags_from..].find('}').unwrap();
        let tags = rest[tags_from..tags_to].split('"').skip(1).step_by(2).map(str::to_owned).collect();
        lines.push(RegistryLine { folder: folder.to_owned(), kind_type: kind_type.to_owned(), tags });
        rest = &rest[tags_to..];
    }
    lines
}

/// The contract's kinds in `tests/integration/target_contract.rs`: the
/// `kind = "…"` each writes (its `name`) → the test running the contract
/// on it.
fn contract_tests() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/target_contract.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = Vec::new();
    for block in text.split("\nimpl Kind for ").skip(1) {
        let name: String = block.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let tag = block.split("fn name(&self) -> &'static str {").nth(1).and_then(|t| t.split('"').nth(1));
        let runs = text.split("#[test]\nfn ").skip(1).find_map(|test| {
            let (test_name, body) = test.split_once("()").unwrap();
            let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
            (body.contains(&format!("contract(&{name} {{")) || body.contains(&format!("contract(&{name}::")))
                .then(|| test_name.to_owned())
        });
        if let (Some(tag), Some(test)) = (tag, runs) {
            found.push((tag.to_owned(), test));
        }
    }
    found
}

/// The "add a kind" checklist of `docs/architecture.md`, kept true: every
/// kind of the registry is its folder (the kind's `impl Target` and `impl
/// Kind` in its `mod.rs`, its table in `spec.rs`), one registry line, an
/// error type with codes (`impl KindError`, in its folder or shared with
/// its like in `src/targets/`), and the contract suite run on it; the page
/// names each. Nothing outside `src/targets/` names a kind's type.
#[test]
fn every_kind_follows_the_add_a_kind_checklist() {
    let root = src();
    let lines = registry_lines();
    assert_eq!(lines.len(), 4, "the four kinds of the registry: {lines:?}");
    let contracts = contract_tests();
    let page = std::fs::read_to_string(root.join("../docs/architecture.md")).unwrap();
    let mut kind_errors = Vec::new();
    rust_files(&root.join("targets"), &mut kind_errors);
    let kind_errors: Vec<(PathBuf, String)> = kind_errors
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .filter(|(_, text)| text.contains("KindError for "))
        .collect();
    let mut missing = Vec::new();
    for line in &lines {
        let folder = root.join("targets").join(&line.folder);
        let module = std::fs::read_to_string(folder.join("mod.rs")).unwrap_or_default();
        let ty = &line.kind_type;
        for (what, ok) in [
            ("its folder with mod.rs", !module.is_empty()),
            ("its table as written, in spec.rs", folder.join("spec.rs").is_file()),
            ("`impl Target` in mod.rs", module.contains(&format!("Target for {ty} "))),
            ("`impl Kind` in mod.rs", module.contains(&format!("Kind for {ty} "))),
            ("a module doc", module.starts_with("//!")),
        ] {
            if !ok {
                missing.push(format!("{}: {what}", line.folder));
            }
        }
        // Its error type: in its folder, or a shared one its folder uses.
        let has_errors = kind_errors.iter().any(|(path, text)| {
            let error_type: String = text
                .split("KindError for ")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            path.starts_with(&folder) || (!error_type.is_empty() && module.contains(&error_type))
        });
        if !has_errors {
            missing.push(format!("{}: an error type with `impl KindError` (a code per variant)", line.folder));
        }
        match contracts.iter().find(|(tag, _)| line.tags.contains(tag)) {
            None => missing
                .push(format!("{}: a contract kind in target_contract.rs writing one of {:?}", line.folder, line.tags)),
            Some((_, test)) => {
                if !page.contains(&format!("`{test}`")) {
                    missing.push(format!("docs/architecture.md: the contract test `{test}`"));
                }
            }
        }
        if !page.contains(&format!("`targets/{}/`", line.folder)) {
            missing.push(format!("docs/architecture.md: the folder `targets/{}/`", line.folder));
        }
    }
    // Nothing but the registry and the kind's own folder names the kind's type.
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for file in files.iter().filter(|f| !f.starts_with(root.join("targets"))) {
        let text = std::fs::read_to_string(file).unwrap();
        for line in &lines {
            if text.contains(&format!("{}::{}", line.folder, line.kind_type)) {
                missing.push(format!("{} names {}::{}", file.display(), line.folder, line.kind_type));
            }
        }
    }
    assert!(missing.is_empty(), "the add-a-kind checklist (docs/architecture.md):\n{}", missing.join("\n"));
}
