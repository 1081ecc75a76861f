//! Simple templates: text and `{{ … }}` lookups, rendered without Tera.
//!
//! Most entries people write are one or a few lookups in some text:
//! `"{{ key(name='api/db_host') }}"`,
//! `"postgres://{{ key(name='api/user') }}:{{ secret(path='api/db', field='password') }}@db/api"`.
//! Tera parses each of them with its full grammar (a PEG parser, tens of
//! microseconds and a few kilobytes of AST per entry), and renders each
//! through its general machinery. At a thousand apps that was most of the
//! CPU of every command, paid twice (the parent compiles and checks the
//! templates, the render worker compiles the same set again).
//!
//! [`parse`] recognises exactly this subset of Tera's grammar, and only it:
//!
//! - text without `{{`, `{%` or `{#`;
//! - `{{ env }}`;
//! - `{{ key(name=S) }}`, `{{ key_or(name=S, default=S) }}`,
//!   `{{ secret(path=S, field=S) }}`, each argument exactly once, in any
//!   order, where `S` is a Tera string literal (`'…'`, `"…"` or `` `…` ``,
//!   which have no escapes in Tera);
//! - Tera's white space (space, tab, CR, LF) anywhere between tokens.
//!
//! Anything else (a filter, `{{-`, a trailing comma, an unknown argument,
//! a block tag, a comment) is not simple, and Tera compiles it as before,
//! with its own messages. A simple template therefore renders the same
//! bytes, reads and taints the same way, and fails with the same
//! [`super::RenderError`] as Tera would: it calls the same functions
//! ([`super::functions`]) under the same scope and writes through the same
//! size- and time-limited writer. A property test
//! (`simple_templates_render_as_tera_does` in `render/tests.rs`) renders
//! generated templates both ways and compares them, errors included.

use std::collections::BTreeSet;
use std::io::Write;

use super::functions;

/// A parsed simple template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simple {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Env,
    /// A variable other than `env` (config fields only).
    Var(String),
    Key {
        name: String,
    },
    KeyOr {
        name: String,
        default: String,
    },
    Secret {
        path: String,
        field: String,
    },
}

/// `Some` when `text` is a simple template (see the module docs).
pub fn parse(text: &str) -> Option<Simple> {
    scan(text, &|name| name == "env")
}

/// `text` with `{{ name }}` replaced by the value of `name` in `vars`, when
/// it is only text and such variables (a templated config field: `path`,
/// `context`, a key schema); `None` when it needs Tera.
pub fn substitute(text: &str, vars: &[(&str, &str)]) -> Option<String> {
    let parsed = scan(text, &|name| vars.iter().any(|(n, _)| *n == name))?;
    let mut out = String::with_capacity(text.len());
    for part in parsed.parts {
        match part {
            Part::Text(t) => out.push_str(&t),
            Part::Var(name) => out.push_str(vars.iter().find(|(n, _)| *n == name)?.1),
            Part::Env => out.push_str(vars.iter().find(|(n, _)| *n == "env")?.1),
            _ => return None,
        }
    }
    Some(out)
}

/// Parses `text`, accepting `{{ name }}` for the names `var` accepts.
fn scan(text: &str, var: &dyn Fn(&str) -> bool) -> Option<Simple> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(start) = next_block(rest) else {
            parts.push(Part::Text(rest.to_owned()));
            break;
        };
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        // `{%` and `{#` (tags, comments) and `{{-` (trimming) are Tera's.
        let inner = rest[start..].strip_prefix("{{")?;
        if inner.starts_with('-') {
            return None;
        }
        let (part, after) = expression(inner)?;
        let part = match part {
            Part::Var(name) if !var(&name) => return None,
            Part::Var(name) if name == "env" => Part::Env,
            other => other,
        };
        parts.push(part);
        rest = after;
    }
    Some(Simple { parts })
}

/// The byte offset of the first `{{`, `{%` or `{#`.
fn next_block(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%' | b'#'))
}

fn skip_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t', '\r', '\n'])
}

fn ident(s: &str) -> Option<(&str, &str)> {
    let first = s.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// A Tera string literal: no escapes, any of three delimiters.
fn string(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| matches!(c, '\'' | '"' | '`'))?;
    let body = &s[1..];
    let end = body.find(quote)?;
    Some((&body[..end], &body[end + 1..]))
}

/// What follows `{{` up to and including `}}`.
fn expression(s: &str) -> Option<(Part, &str)> {
    let s = skip_ws(s);
    let (name, s) = ident(s)?;
    let s = skip_ws(s);
    if let Some(after) = s.strip_prefix("}}") {
        return Some((Part::Var(name.to_owned()), after));
    }
    let mut s = skip_ws(s.strip_prefix('(')?);
    let mut args: Vec<(&str, &str)> = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix(')') {
            s = after;
            break;
        }
        if !args.is_empty() {
            s = skip_ws(s.strip_prefix(',')?);
        }
        let (arg, after) = ident(s)?;
        let after = skip_ws(skip_ws(after).strip_prefix('=')?);
        let (value, after) = string(after)?;
        if args.iter().any(|(a, _)| *a == arg) {
            return None;
        }
        args.push((arg, value));
        s = skip_ws(after);
    }
    let s = skip_ws(s).strip_prefix("}}")?;
    let get = |want: &str| args.iter().find(|(a, _)| *a == want).map(|(_, v)| (*v).to_owned());
    let part = match (name, args.len()) {
        ("key", 1) => Part::Key { name: get("name")? },
        ("key_or", 2) => Part::KeyOr { name: get("name")?, default: get("default")? },
        ("secret", 2) => Part::Secret { path: get("path")?, field: get("field")? },
        _ => return None,
    };
    Some((part, s))
}

impl Simple {
    /// Secret paths the template reads.
    pub fn secret_paths(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret { path, .. } => Some(path.as_str()),
            _ => None,
        })
    }

    /// Names written as literals, as [`super::check::Facts::literal_names`]
    /// collects them (the `name`, `path` and `field` arguments).
    pub fn literal_names(&self, into: &mut BTreeSet<String>) {
        for p in &self.parts {
            match p {
                Part::Key { name } | Part::KeyOr { name, .. } => {
                    into.insert(name.clone());
                }
                Part::Secret { path, field } => {
                    into.insert(path.clone());
                    into.insert(field.clone());
                }
                Part::Text(_) | Part::Env | Part::Var(_) => {}
            }
        }
    }

    /// Renders into `out` with the functions of the rendering scope in
    /// progress (see [`functions::with_scope`]). A failed write (a limit of
    /// the writer) becomes an error; the writer records which limit.
    pub fn render(&self, env: &str, out: &mut impl Write) -> tera::Result<()> {
        let write = |out: &mut dyn Write, bytes: &[u8]| {
            out.write_all(bytes).map_err(|e| tera::Error::chain("writing the rendered text", e))
        };
        for part in &self.parts {
            match part {
                Part::Text(t) => write(out, t.as_bytes())?,
                Part::Env => write(out, env.as_bytes())?,
                Part::Var(_) => unreachable!("entry templates accept no other variable"),
                Part::Key { name } => {
                    let v = functions::key_text(name).map_err(|e| tera::Error::call_function("key", e))?;
                    write(out, v.as_bytes())?;
                }
                Part::KeyOr { name, default } => {
                    let v =
                        functions::key_or_text(name, default).map_err(|e| tera::Error::call_function("key_or", e))?;
                    write(out, v.as_bytes())?;
                }
                Part::Secret { path, field } => {
                    let v = functions::secret_text(path, field).map_err(|e| tera::Error::call_function("secret", e))?;
                    write(out, v.as_bytes())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_text_and_lookups_only() {
        let simple = [
            "",
            "plain text } and }} and { alone",
            "{{ env }}",
            "{{env}}",
            "{{ key(name='a/b') }}",
            "{{key(name=\"a/b\")}}",
            "{{ key ( name = `a/b` ) }}",
            "x{{ key_or(default='d', name='n') }}y",
            "{{ secret(path='api/db', field='password') }}",
            "postgres://{{ key(name='u') }}:{{ secret(field='pw', path='db') }}@{{ key(name='h') }}/{{ env }}",
            "{{\n key(name='multi\nline')\n}}",
            "trailing {",
        ];
        for text in simple {
            assert!(parse(text).is_some(), "{text:?} is simple");
        }
        let tera_only = [
            "{{ key(name='a') | upper }}",
            "{{- key(name='a') }}",
            "{{ key(name='a') -}}",
            "{% if true %}x{% endif %}",
            "{# comment #}",
            "{{ key(name='a',) }}",
            "{{ key(nmae='a') }}",
            "{{ key(name='a', name='b') }}",
            "{{ key(name=x) }}",
            "{{ key(name='a' ~ 'b') }}",
            "{{ key_or(name='a') }}",
            "{{ secrets(path='a') }}",
            "{{ keys(prefix='a') }}",
            "{{ get_env(name='HOME') }}",
            "{{ other }}",
            "{{ env.x }}",
            "{{ key(name='unterminated) }}",
            "{{ key(name='a') }",
            "{{ 'literal' }}",
        ];
        for text in tera_only {
            assert!(parse(text).is_none(), "{text:?} is Tera's");
        }
    }

    #[test]
    fn substitutes_only_known_variables() {
        let vars = [("env", "prod"), ("name", "HOST")];
        assert_eq!(substitute("out/{{ env }}/{{name}}.env", &vars).as_deref(), Some("out/prod/HOST.env"));
        assert_eq!(substitute("plain", &vars).as_deref(), Some("plain"));
        assert_eq!(substitute("{{ other }}", &vars), None);
        assert_eq!(substitute("{{ env | upper }}", &vars), None);
        assert_eq!(substitute("{{ key(name='x') }}", &vars), None);
        assert!(parse("{{ name }}").is_none(), "entries know only `env`");
    }

    #[test]
    fn collects_what_the_static_check_collects() {
        let s = parse("{{ key(name='k') }}{{ key_or(name='o', default='dflt') }}{{ secret(path='p', field='f') }}")
            .unwrap();
        assert_eq!(s.secret_paths().collect::<Vec<_>>(), ["p"]);
        let mut names = BTreeSet::new();
        s.literal_names(&mut names);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["f", "k", "o", "p"]);
    }
}
