//! Label selectors (`?labelSelector=`) and field selectors (`?fieldSelector=`)
//! with the grammar of `k8s.io/apimachinery/pkg/labels` and `.../fields`.
//!
//! Label selector requirements, joined by `,` (AND): `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key>1`, `key<1`. `!=` and `notin` also match objects
//! without the label, as in Kubernetes. Field selectors support
//! `metadata.name`, `metadata.namespace` (and `type` for Secrets) with `=`,
//! `==` and `!=`; kubectl's `delete --wait` relies on `metadata.name`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::kind::Kind;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "end of string".into(),
        Some(Token::Ident(s)) => s.clone(),
        Some(Token::Comma) => ",".into(),
        Some(Token::Open) => "(".into(),
        Some(Token::Close) => ")".into(),
        Some(Token::Eq) => "=".into(),
        Some(Token::DoubleEq) => "==".into(),
        Some(Token::NotEq) => "!=".into(),
        Some(Token::Not) => "!".into(),
        Some(Token::Gt) => ">".into(),
        Some(Token::Lt) => "<".into(),
    }
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push(Token::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Token::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Token::Not);
                i += 1;
            }
            '>' => {
                out.push(Token::Gt);
                i += 1;
            }
            '<' => {
                out.push(Token::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n,()=!<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    out
}

impl LabelSelector {
    /// Parses a selector; the error is the message of a 400 BadRequest.
    pub(crate) fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = tokenize(s);
        let mut reqs = Vec::new();
        let mut pos = 0;
        let err = |found: Option<&Token>, expected: &str| {
            format!("unable to parse requirement: found '{}', expected: {expected}", describe(found))
        };
        while pos < tokens.len() {
            let negated = tokens.get(pos) == Some(&Token::Not);
            if negated {
                pos += 1;
            }
            let key = match tokens.get(pos) {
                Some(Token::Ident(k)) => k.clone(),
                other => return Err(err(other, "identifier")),
            };
            pos += 1;
            let op = if negated {
                Op::NotExists
            } else {
                match tokens.get(pos) {
                    None | Some(Token::Comma) => Op::Exists,
                    Some(Token::Eq | Token::DoubleEq | Token::NotEq) => {
                        let neq = tokens[pos] == Token::NotEq;
                        pos += 1;
                        let value = match tokens.get(pos) {
                            Some(Token::Ident(v)) => {
                                pos += 1;
                                v.clone()
                            }
                            // `key=` selects the empty value
                            None | Some(Token::Comma) => String::new(),
                            other => return Err(err(other, "identifier")),
                        };
                        if neq { Op::NotIn(vec![value]) } else { Op::In(vec![value]) }
                    }
                    Some(Token::Gt | Token::Lt) => {
                        let gt = tokens[pos] == Token::Gt;
                        pos += 1;
                        let n = match tokens.get(pos) {
                            Some(Token::Ident(v)) => v
                                .parse::<i64>()
                                .map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got {v:?}"))?,
                            other => return Err(err(other, "identifier")),
                        };
                        pos += 1;
                        if gt { Op::Gt(n) } else { Op::Lt(n) }
                    }
                    Some(Token::Ident(word)) if word == "in" || word == "notin" => {
                        let is_in = word == "in";
                        pos += 1;
                        if tokens.get(pos) != Some(&Token::Open) {
                            return Err(err(tokens.get(pos), "'('"));
                        }
                        pos += 1;
                        let mut values = Vec::new();
                        loop {
                            match tokens.get(pos) {
                                Some(Token::Ident(v)) => {
                                    values.push(v.clone());
                                    pos += 1;
                                }
                                Some(Token::Close) if values.is_empty() => {}
                                other => return Err(err(other, "identifier")),
                            }
                            match tokens.get(pos) {
                                Some(Token::Comma) => pos += 1,
                                Some(Token::Close) => {
                                    pos += 1;
                                    break;
                                }
                                other => return Err(err(other, "',' or ')'")),
                            }
                        }
                        if is_in { Op::In(values) } else { Op::NotIn(values) }
                    }
                    other => return Err(err(other, "'=', '!=', '==', 'in', notin'")),
                }
            };
            validate_requirement(&key, &op)?;
            reqs.push(Requirement { key, op });
            match tokens.get(pos) {
                None => {}
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err(err(None, "identifier"));
                    }
                }
                other => return Err(err(other, "',' or 'end of string'")),
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with these labels is selected.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::In(values) => v.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => v.is_none_or(|v| !values.contains(v)),
                Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

/// What `labels.NewRequirement` checks: the key is a qualified name and
/// every value a label value; the message is the parser's
/// (`unable to parse requirement: <field errors>`).
fn validate_requirement(key: &str, op: &Op) -> Result<(), String> {
    use crate::validation::{label_value_errors, qualified_name_errors};
    let mut errs = Vec::new();
    let key_errs = qualified_name_errors(key);
    if !key_errs.is_empty() {
        errs.push(format!("key: Invalid value: {}: {}", crate::status::go_quote(key), key_errs.join("; ")));
    }
    let mut values: Vec<String> = match op {
        Op::In(v) | Op::NotIn(v) => v.clone(),
        Op::Gt(n) | Op::Lt(n) => vec![n.to_string()],
        Op::Exists | Op::NotExists => Vec::new(),
    };
    values.sort();
    values.dedup();
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value_errors(v);
        if !value_errs.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                crate::status::go_quote(v),
                value_errs.join("; ")
            ));
        }
    }
    match errs.as_slice() {
        [] => Ok(()),
        [one] => Err(format!("unable to parse requirement: {one}")),
        many => Err(format!("unable to parse requirement: [{}]", many.join(", "))),
    }
}

/// The labels of an object as a map.
pub(crate) fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `field=value,field!=value` for `kind`; the error is a 400 message.
    pub(crate) fn parse(kind: Kind, s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{term}'"));
            };
            let field = field.trim();
            let known = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind == Kind::Secret && field == "type")
                || (kind == Kind::Namespace && field == "status.phase");
            if !known {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether `obj` is selected.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => obj.pointer("/metadata/name"),
                "metadata.namespace" => obj.pointer("/metadata/namespace"),
                "type" => obj.pointer("/type"),
                "status.phase" => obj.pointer("/status/phase"),
                _ => None,
            }
            .and_then(Value::as_str)
            .unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_operators_follow_kubernetes() {
        let l = labels(&[("app", "api"), ("env", "prod"), ("tier", "3")]);
        let cases = [
            ("", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=api", true),
            ("app==api", true),
            ("app!=api", false),
            ("missing!=x", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("missing notin (prod)", true),
            ("app=api,env=staging", false),
            ("app=api, env in (prod)", true),
            ("tier>2", true),
            ("tier<2", false),
        ];
        for (s, want) in cases {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&l), want, "selector {s:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for s in
            ["app=a=b", "env in prod", "env in (a", "=x", "app,", "env=-x", "env in (ok,bad.)", "bad key=x", "a/b/c"]
        {
            assert!(LabelSelector::parse(s).is_err(), "{s:?} should not parse");
        }
    }
}
