//! Static checks of compiled templates: what `validate` can know without
//! rendering.
//!
//! Each template's AST is walked once, whoever uses it ([`Facts`]): the
//! functions, filters and tests it names (unknown or forbidden ones are
//! problems, and so are unknown argument names), the secret paths it reads
//! (literals only), and its edges to other templates and macros (include,
//! import, extends, macro calls). An output's analysis is the union over
//! the templates its entries reach, memoised per template, so a library
//! template used by a thousand outputs is walked once, not a thousand
//! times.
//!
//! The edges make a graph over templates and macros. Tera renders it by
//! recursion, so a cycle (a template including itself, two including each
//! other, a macro calling itself directly or not) would overflow the stack
//! of the process at render time; it is refused here instead, and so is a
//! chain deeper than [`MAX_DEPTH`]. In Tera 1 every include, import,
//! extends and macro call names its target literally, so this graph is
//! complete: no rendering can recurse deeper than what is checked here.
//!
//! The matches over Tera's AST list every variant: a new variant in a Tera
//! update must fail to compile here rather than silently escape the
//! analysis.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tera::ast::{Expr, ExprVal, FunctionCall, Node};
use tera::{Template, Tera};

use super::functions::{FORBIDDEN, SIGNATURES};

/// How deep includes, imports, extends and macro calls may nest.
pub const MAX_DEPTH: usize = 32;

/// A problem in one template, with a text to search for to locate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub template: String,
    pub message: String,
    pub needle: Option<String>,
}

/// A node of the template graph: a template's top level, or one macro.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GraphNode {
    Template(String),
    Macro { template: String, name: String },
}

impl GraphNode {
    fn describe(&self, shown: &dyn Fn(&str) -> String) -> String {
        match self {
            GraphNode::Template(t) => shown(t),
            GraphNode::Macro { template, name } => format!("macro {name} ({})", shown(template)),
        }
    }

    fn template(&self) -> &str {
        match self {
            GraphNode::Template(t) | GraphNode::Macro { template: t, .. } => t,
        }
    }
}

/// What one template says about itself.
#[derive(Debug, Default)]
pub struct Facts {
    pub secret_paths: BTreeSet<String>,
    /// Key names, prefixes and secret fields written as literals: the
    /// names an error may repeat even when the output reads secrets (a
    /// name computed at render time could be made of a secret).
    pub literal_names: BTreeSet<String>,
    /// Templates it needs (includes, imports, parent).
    pub needs: BTreeSet<String>,
    pub findings: Vec<Finding>,
    /// Graph edges from this template's nodes.
    pub edges: Vec<(GraphNode, GraphNode)>,
    /// Its `throw` calls whose message is template text, whole or in part.
    pub throws: Vec<ThrowSite>,
}

/// A `throw` whose message is written in the template, whole
/// (`throw(message="…")`) or in part (`"dsn::" ~ who ~ ": bad port"`): the
/// literal parts are template text, known safe to show even where the
/// output reads secrets; a computed part is not (see [`super::thrown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrowSite {
    pub template: String,
    /// The message in order: `Some(text)` written in the template, `None`
    /// for a part computed while rendering. Never two `None`s in a row.
    pub parts: Vec<Option<String>>,
}

/// What one template says about itself, without the rest of the set (its
/// includes are not looked up).
pub fn facts(tera: &Tera, name: &str, template: &Template) -> Facts {
    Walker::facts(tera, name, template)
}

/// Walks every template once; answers per-output questions from memos.
pub struct Analyzer<'a> {
    tera: &'a Tera,
    facts: HashMap<String, Facts>,
    closure: HashMap<String, BTreeSet<String>>,
}

impl<'a> Analyzer<'a> {
    pub fn new(tera: &'a Tera) -> Self {
        let mut facts = HashMap::new();
        for (name, template) in &tera.templates {
            facts.insert(name.clone(), Walker::facts(tera, name, template));
        }
        Self { tera, facts, closure: HashMap::new() }
    }

    pub fn facts(&self, template: &str) -> Option<&Facts> {
        self.facts.get(template)
    }

    /// Every template `template` reaches, itself included.
    pub fn reach(&mut self, template: &str) -> BTreeSet<String> {
        if let Some(r) = self.closure.get(template) {
            return r.clone();
        }
        // Iterative, so a long chain cannot exhaust our own stack either.
        let mut seen = BTreeSet::new();
        let mut todo = vec![template.to_owned()];
        while let Some(t) = todo.pop() {
            if !seen.insert(t.clone()) {
                continue;
            }
            if let Some(done) = self.closure.get(&t) {
                seen.extend(done.iter().cloned());
                continue;
            }
            if let Some(f) = self.facts.get(&t) {
                todo.extend(f.needs.iter().filter(|n| self.tera.templates.contains_key(*n)).cloned());
            }
        }
        self.closure.insert(template.to_owned(), seen.clone());
        seen
    }

    /// Secret paths read by anything `template` reaches.
    pub fn secret_paths(&mut self, template: &str) -> BTreeSet<String> {
        self.reach(template)
            .iter()
            .filter_map(|t| self.facts.get(t))
            .flat_map(|f| f.secret_paths.iter().cloned())
            .collect()
    }

    /// Literal names used by anything `template` reaches.
    pub fn literal_names(&mut self, template: &str) -> BTreeSet<String> {
        self.reach(template)
            .iter()
            .filter_map(|t| self.facts.get(t))
            .flat_map(|f| f.literal_names.iter().cloned())
            .collect()
    }

    /// The `throw` sites of anything `template` reaches.
    pub fn throws(&mut self, template: &str) -> Vec<ThrowSite> {
        self.reach(template).iter().filter_map(|t| self.facts.get(t)).flat_map(|f| f.throws.iter().cloned()).collect()
    }

    /// Cycles and chains deeper than [`MAX_DEPTH`] in the whole graph, each
    /// reported once, at the template where it starts.
    pub fn graph_findings(&self, shown: &dyn Fn(&str) -> String) -> Vec<Finding> {
        let mut adjacency: BTreeMap<&GraphNode, Vec<&GraphNode>> = BTreeMap::new();
        for f in self.facts.values() {
            for (from, to) in &f.edges {
                adjacency.entry(from).or_default().push(to);
            }
        }
        let mut search = GraphSearch::new(&adjacency, shown);
        for &root in adjacency.keys() {
            search.visit(root);
        }
        let mut findings = search.findings;
        findings.extend(depth_finding(&search.depth, shown));
        findings
    }
}

/// Where [`GraphSearch`] is with a node.
#[derive(Clone, Copy, PartialEq)]
enum Colour {
    /// On the current path.
    Open,
    /// Left, with its depth known.
    Done,
}

/// An iterative depth-first search of the include/import/macro graph with
/// colours: finds each cycle once and the depth (longest path) below every
/// node.
struct GraphSearch<'g> {
    adjacency: &'g BTreeMap<&'g GraphNode, Vec<&'g GraphNode>>,
    shown: &'g dyn Fn(&str) -> String,
    colour: HashMap<&'g GraphNode, Colour>,
    depth: HashMap<&'g GraphNode, usize>,
    reported_cycles: BTreeSet<BTreeSet<&'g GraphNode>>,
    findings: Vec<Finding>,
}

impl<'g> GraphSearch<'g> {
    fn new(adjacency: &'g BTreeMap<&'g GraphNode, Vec<&'g GraphNode>>, shown: &'g dyn Fn(&str) -> String) -> Self {
        Self {
            adjacency,
            shown,
            colour: HashMap::new(),
            depth: HashMap::new(),
            reported_cycles: BTreeSet::new(),
            findings: Vec::new(),
        }
    }

    /// Searches from `root` unless an earlier search reached it.
    fn visit(&mut self, root: &'g GraphNode) {
        if self.colour.contains_key(root) {
            return;
        }
        // (node, index of its next child); `path` is the nodes alone.
        let mut stack: Vec<(&GraphNode, usize)> = vec![(root, 0)];
        let mut path: Vec<&GraphNode> = vec![root];
        self.colour.insert(root, Colour::Open);
        while let Some((node, next)) = stack.last().copied() {
            let children = self.adjacency.get(node).map(Vec::as_slice).unwrap_or(&[]);
            let Some(&child) = children.get(next) else {
                let d = children.iter().filter_map(|c| self.depth.get(c)).map(|d| d + 1).max().unwrap_or(0);
                self.depth.insert(node, d);
                self.colour.insert(node, Colour::Done);
                stack.pop();
                path.pop();
                continue;
            };
            stack.last_mut().expect("not empty").1 += 1;
            match self.colour.get(child) {
                None => {
                    self.colour.insert(child, Colour::Open);
                    stack.push((child, 0));
                    path.push(child);
                }
                Some(Colour::Open) => {
                    let start = path.iter().position(|n| *n == child).unwrap_or(0);
                    self.cycle(&path[start..], child);
                }
                Some(Colour::Done) => {}
            }
        }
    }

    /// `cycle` (a part of the path) leads back to `child`, its first node:
    /// a finding, unless the same cycle was reported already.
    fn cycle(&mut self, cycle: &[&'g GraphNode], child: &GraphNode) {
        if !self.reported_cycles.insert(cycle.iter().copied().collect()) {
            return;
        }
        let shown = self.shown;
        let mut chain: Vec<String> = cycle.iter().map(|n| n.describe(shown)).collect();
        chain.push(child.describe(shown));
        let what = if cycle.len() == 1 { "refers to itself" } else { "is part of a cycle" };
        self.findings.push(Finding {
            template: child.template().to_owned(),
            message: format!(
                "{} {what}: {}; templates cannot recurse (Tera would overflow the stack)",
                child.describe(shown),
                chain.join(" → ")
            ),
            needle: match child {
                GraphNode::Macro { name, .. } => Some(format!("macro {name}")),
                GraphNode::Template(_) => None,
            },
        });
    }
}

/// The deepest template, when it is deeper than [`MAX_DEPTH`].
fn depth_finding(depth: &HashMap<&GraphNode, usize>, shown: &dyn Fn(&str) -> String) -> Option<Finding> {
    let (node, d) = depth.iter().filter(|(n, _)| matches!(n, GraphNode::Template(_))).max_by_key(|(_, d)| **d)?;
    (*d > MAX_DEPTH).then(|| Finding {
        template: node.template().to_owned(),
        message: format!(
            "{} nests includes, imports and macro calls {d} deep; at most {MAX_DEPTH} are allowed",
            node.describe(shown)
        ),
        needle: None,
    })
}

/// Walks one template's AST.
struct Walker<'t> {
    tera: &'t Tera,
    template: &'t Template,
    facts: Facts,
    /// The node whose body is being walked.
    from: GraphNode,
}

impl<'t> Walker<'t> {
    fn facts(tera: &'t Tera, name: &str, template: &'t Template) -> Facts {
        let mut w = Walker { tera, template, facts: Facts::default(), from: GraphNode::Template(name.to_owned()) };
        if let Some(parent) = &template.parent {
            w.facts.needs.insert(parent.clone());
            w.edge(GraphNode::Template(parent.clone()));
        }
        for (file, _) in &template.imported_macro_files {
            w.facts.needs.insert(file.clone());
        }
        w.nodes(&template.ast);
        let mut macros: Vec<_> = template.macros.iter().collect();
        macros.sort_by(|a, b| a.0.cmp(b.0));
        for (macro_name, m) in macros {
            w.from = GraphNode::Macro { template: name.to_owned(), name: macro_name.clone() };
            for default in m.args.values().flatten() {
                w.expr(default);
            }
            w.nodes(&m.body);
        }
        w.facts
    }

    fn name(&self) -> &str {
        &self.template.name
    }

    fn finding(&mut self, message: String, needle: Option<String>) {
        self.facts.findings.push(Finding { template: self.name().to_owned(), message, needle });
    }

    fn edge(&mut self, to: GraphNode) {
        self.facts.edges.push((self.from.clone(), to));
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for n in nodes {
            self.node(n);
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::VariableBlock(_, e) => self.expr(e),
            Node::Set(_, s) => self.expr(&s.value),
            Node::FilterSection(_, s, _) => {
                self.filter(&s.filter);
                self.nodes(&s.body);
            }
            Node::Block(_, b, _) => self.nodes(&b.body),
            Node::Forloop(_, f, _) => {
                self.expr(&f.container);
                self.nodes(&f.body);
                if let Some(e) = &f.empty_body {
                    self.nodes(e);
                }
            }
            Node::If(i, _) => {
                for (_, cond, body) in &i.conditions {
                    self.expr(cond);
                    self.nodes(body);
                }
                if let Some((_, body)) = &i.otherwise {
                    self.nodes(body);
                }
            }
            // Macro bodies are walked as their own graph nodes.
            Node::MacroDefinition(..) => {}
            Node::Include(_, names, ignore_missing) => {
                let found = names.iter().find(|n| self.tera.templates.contains_key(*n)).cloned();
                match found {
                    Some(n) => {
                        self.facts.needs.insert(n.clone());
                        self.edge(GraphNode::Template(n));
                    }
                    None if *ignore_missing => {}
                    None => self.finding(
                        format!("included template {} not found", names.join(" or ")),
                        Some("include".to_owned()),
                    ),
                }
            }
            Node::ImportMacro(_, file, _) => {
                if !self.tera.templates.contains_key(file) {
                    self.finding(format!("imported template {file} not found"), Some("import".to_owned()));
                }
            }
            Node::Extends(..)
            | Node::Super
            | Node::Text(_)
            | Node::Raw(..)
            | Node::Break(_)
            | Node::Continue(_)
            | Node::Comment(..) => {}
        }
    }

    fn filter(&mut self, f: &FunctionCall) {
        // `safe` and `default` are handled by Tera's renderer itself.
        let special = f.name == "safe" || f.name == "default";
        if !special && self.tera.get_filter(&f.name).is_err() {
            self.finding(format!("unknown filter `{}`", f.name), Some(f.name.clone()));
        }
        for e in f.args.values() {
            self.expr(e);
        }
    }

    fn expr(&mut self, e: &Expr) {
        for (i, f) in e.filters.iter().enumerate() {
            if f.name == "default" && i > 0 {
                self.finding(
                    "filter `default` only works as the first filter (Tera skips it anywhere else)".to_owned(),
                    Some("default".to_owned()),
                );
            }
            self.filter(f);
        }
        self.value(&e.val);
    }

    fn value(&mut self, v: &ExprVal) {
        match v {
            ExprVal::FunctionCall(call) => self.call(call),
            ExprVal::Math(m) => {
                // Tera 1.20 panics (`unreachable!`) on a macro call in
                // arithmetic: refused here instead of crashing a render.
                for side in [&m.lhs, &m.rhs] {
                    if let ExprVal::MacroCall(call) = &side.val {
                        self.finding(
                            format!(
                                "macro `{}::{}` is used in arithmetic; a macro's output is text: set it to a variable and convert it (`| int`)",
                                call.namespace, call.name
                            ),
                            Some(format!("{}::{}", call.namespace, call.name)),
                        );
                    }
                }
                self.expr(&m.lhs);
                self.expr(&m.rhs);
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs);
                self.expr(&l.rhs);
            }
            ExprVal::In(i) => {
                self.expr(&i.lhs);
                self.expr(&i.rhs);
            }
            ExprVal::Test(test) => {
                if self.tera.get_tester(&test.name).is_err() {
                    self.finding(format!("unknown test `{}`", test.name), Some(test.name.clone()));
                }
                for a in &test.args {
                    self.expr(a);
                }
            }
            ExprVal::MacroCall(m) => {
                self.macro_call(&m.namespace, &m.name);
                for a in m.args.values() {
                    self.expr(a);
                }
            }
            ExprVal::Array(items) => {
                for i in items {
                    self.expr(i);
                }
            }
            ExprVal::StringConcat(c) => {
                for v in &c.values {
                    self.value(v);
                }
            }
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) | ExprVal::Ident(_) => {}
        }
    }

    fn macro_call(&mut self, namespace: &str, name: &str) {
        let file = if namespace == "self" {
            Some(self.name().to_owned())
        } else {
            self.template.imported_macro_files.iter().find(|(_, ns)| ns == namespace).map(|(f, _)| f.clone())
        };
        let Some(file) = file else {
            self.finding(
                format!(
                    "macro namespace `{namespace}` is not imported: add {{% import \"file.tera\" as {namespace} %}}"
                ),
                Some(format!("{namespace}::")),
            );
            return;
        };
        let exists = self.tera.templates.get(&file).is_some_and(|t| t.macros.contains_key(name));
        if !exists {
            self.finding(format!("macro `{namespace}::{name}` not found"), Some(format!("{namespace}::{name}")));
            return;
        }
        self.edge(GraphNode::Macro { template: file, name: name.to_owned() });
    }

    fn call(&mut self, call: &FunctionCall) {
        let needle = Some(format!("{}(", call.name));
        if let Some((_, why)) = FORBIDDEN.iter().find(|(n, _)| *n == call.name) {
            self.finding(format!("function `{}` is not allowed: {why}", call.name), needle.clone());
        } else if let Some((_, required, optional)) = SIGNATURES.iter().find(|(n, _, _)| *n == call.name) {
            for arg in call.args.keys() {
                if !required.contains(&arg.as_str()) && !optional.contains(&arg.as_str()) {
                    let known: Vec<String> = required.iter().chain(optional.iter()).map(|s| s.to_string()).collect();
                    let hint = crate::config::suggest(arg, &known)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.finding(format!("{}(): unknown argument `{arg}`{hint}", call.name), needle.clone());
                }
            }
            for arg in required.iter() {
                if !call.args.contains_key(*arg) {
                    self.finding(format!("{}(): missing argument `{arg}`", call.name), needle.clone());
                }
            }
        } else {
            let known: Vec<String> = SIGNATURES.iter().map(|(n, _, _)| n.to_string()).collect();
            let hint = crate::config::suggest(&call.name, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.finding(format!("unknown function `{}`{hint}", call.name), needle.clone());
        }
        for arg in ["name", "prefix", "field", "path"] {
            if let Some(Expr { val: ExprVal::String(v), .. }) = call.args.get(arg) {
                self.facts.literal_names.insert(v.clone());
            }
        }
        if call.name == "throw" {
            self.throw_site(call);
        }
        if call.name == "secret" || call.name == "secrets" {
            match call.args.get("path") {
                Some(Expr { val: ExprVal::String(p), negated: false, filters }) if filters.is_empty() => {
                    self.facts.secret_paths.insert(p.clone());
                }
                _ => self.finding(
                    format!(
                        "{}(): `path` must be a string literal, so cfgsync reads exactly the secrets templates name",
                        call.name
                    ),
                    needle,
                ),
            }
        }
        for e in call.args.values() {
            self.expr(e);
        }
    }
}

impl Walker<'_> {
    /// Records a `throw` whose message has literal text. A message with a
    /// filter or a negation is computed as a whole and recorded nowhere.
    fn throw_site(&mut self, call: &FunctionCall) {
        let Some(Expr { val, negated: false, filters }) = call.args.get("message") else { return };
        if !filters.is_empty() {
            return;
        }
        let values = match val {
            ExprVal::StringConcat(c) => c.values.iter().collect(),
            other => vec![other],
        };
        let mut parts: Vec<Option<String>> = Vec::new();
        for v in values {
            match (v, parts.last_mut()) {
                (ExprVal::String(s), Some(Some(last))) => last.push_str(s),
                (ExprVal::String(s), _) => parts.push(Some(s.clone())),
                (_, Some(None)) => {}
                (_, _) => parts.push(None),
            }
        }
        if parts.iter().any(|p| p.as_ref().is_some_and(|t| !t.is_empty())) {
            let template = self.name().to_owned();
            self.facts.throws.push(ThrowSite { template, parts });
        }
    }
}

/// Most block tags (`{% if %}`, `{% for %}`, …) open inside each other.
pub const MAX_BLOCKS: usize = 64;
/// Most brackets open inside each other in one tag.
pub const MAX_BRACKETS: usize = 64;
/// Most operators (`+ - * / % < > == != <= >= and or not in is`) in one tag.
///
/// Tera builds `1 + 1 + … + 1` into a tree as deep as the chain is long,
/// and its renderer, the static checks here and dropping the tree all
/// recurse over it: 150,000 terms (600 KB, well under the template size
/// limit) overflowed a 64 MiB stack. A render recurses at most
/// [`MAX_DEPTH`] includes and macro calls deep, each at most
/// [`MAX_BLOCKS`] blocks and `MAX_OPERATORS + MAX_BRACKETS` levels of one
/// expression deep. Measured in a debug build (~4 KiB per expression
/// level), that worst case fits in 32 MiB, half the render thread's 64 MiB (`the_deepest_render_the_limits_allow_fits_the_render_stack`
/// in `render/tests.rs` renders it; with 200 operators it needed more than
/// 32 MiB). One expression alone (a config field, rendered on a runtime
/// thread) fits 2 MiB. A longer expression is split with `{% set %}`.
pub const MAX_OPERATORS: usize = 100;

/// Refuses, before parsing, text that would nest Tera's parser, its
/// renderer or the static checks deeper than a thread's stack can take:
/// block tags nested more than [`MAX_BLOCKS`] deep, brackets inside a tag
/// more than [`MAX_BRACKETS`] deep, more than [`MAX_OPERATORS`] operators in
/// one tag. Returns the byte offset of the offending tag and why.
///
/// The scan reads the text as Tera's grammar does, so nothing can hide a
/// tag from it: comments (`{# … #}`) and `{% raw %}` blocks are text to Tera
/// and skipped here too; a tag ends at its closing delimiter outside string
/// literals (which have no escapes in Tera). Where it cannot tell (a tag or
/// comment that never closes), it counts everything that follows as one tag,
/// which can only refuse more, never less.
pub fn nesting_problem(text: &str) -> Option<(usize, String)> {
    let mut blocks: usize = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find('{') {
        let open = at + found;
        let rest = &text[open..];
        if let Some(comment) = rest.strip_prefix("{#") {
            // A comment ends at the first `#}`, quotes or not.
            match comment.find("#}") {
                Some(end) => at = open + 2 + end + 2,
                None => return None, // Tera refuses an unclosed comment.
            }
            continue;
        }
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            at = open + 1;
            continue;
        };
        let body_start = open + 2;
        let (body, next) = match tag_end(&text[body_start..], close) {
            Some(len) => (&text[body_start..body_start + len], body_start + len + 2),
            // Unclosed (in Tera's eyes the template is broken): judge the rest whole.
            None => (&text[body_start..], text.len()),
        };
        if let Some(message) = expression_problem(body) {
            return Some((open, message));
        }
        at = next;
        if close == "%}" {
            let word = body.trim().trim_start_matches('-').split_whitespace().next().unwrap_or("");
            match word {
                // Raw text ends at the first `{% endraw %}`: nothing in it is a tag.
                "raw" => at = end_of_raw(text, at).unwrap_or(text.len()),
                "if" | "for" | "macro" | "block" | "filter" => {
                    blocks += 1;
                    if blocks > MAX_BLOCKS {
                        return Some((open, format!("block tags nest more than {MAX_BLOCKS} deep")));
                    }
                }
                w if w.starts_with("end") => blocks = blocks.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// The length of a tag's body: up to `close` outside string literals.
fn tag_end(body: &str, close: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if matches!(b, b'"' | b'\'' | b'`') => quote = Some(b),
            None if body[i..].starts_with(close) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Where the text after `{% raw %}` (from `from`) ends: after the first
/// `{%[-] endraw [-]%}`.
fn end_of_raw(text: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(found) = text[at..].find("{%") {
        let start = at + found + 2;
        let rest = text[start..].strip_prefix('-').unwrap_or(&text[start..]).trim_start();
        if let Some(after) = rest.strip_prefix("endraw") {
            let after = after.trim_start();
            let after = after.strip_prefix('-').unwrap_or(after);
            if after.starts_with("%}") {
                return Some(text.len() - after.len() + 2);
            }
        }
        at = start;
    }
    None
}

/// Brackets and operators in one tag's body.
fn expression_problem(body: &str) -> Option<String> {
    let mut depth: usize = 0;
    let mut operators: usize = 0;
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let mut previous = ' ';
    for c in body.chars().chain(std::iter::once(' ')) {
        if quote.is_none() && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            previous = c;
            continue;
        }
        if matches!(word.as_str(), "and" | "or" | "not" | "in" | "is") {
            operators += 1;
        }
        word.clear();
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Some(format!("expression nests brackets more than {MAX_BRACKETS} deep"));
                }
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            (None, '+' | '-' | '*' | '/' | '%' | '<' | '>') => operators += 1,
            // `==` and `!=` (a lone `=` names an argument or sets a variable).
            (None, '=') if matches!(previous, '=' | '!') => operators += 1,
            (None, _) => {}
        }
        if operators > MAX_OPERATORS {
            return Some(format!(
                "one tag has more than {MAX_OPERATORS} operators; split the expression with {{% set %}}"
            ));
        }
        previous = c;
    }
    None
}
