//! The shipped template library (`templates/cfgsync/`): every macro
//! rendered in-process through `cfgsync::render::Templates` (the same
//! compile and render the binary runs) from a hand-built snapshot, and the
//! output checked byte for byte, with hostile values where the format must
//! quote: each format's real reader reads them back (dotenvy, docker
//! compose, python-dotenv, a YAML parser, a URL decoder), and a value the
//! format cannot carry stops the rendering with an error that names the
//! entry, never the value.
//!
//! The example in each template's header comment is rendered too and must
//! give the text the header shows, so the documentation cannot drift.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cfgsync::format::{Dialect, Format, encode};
use cfgsync::render::Templates;
use cfgsync::secret::SecretString;
use cfgsync::source::{KeyOrigin, KeyValue, Secret, Snapshot};

use crate::dotenv_readers::{compose_reads, corpus, dotenvy_reads, python_reads, python_whitespace};

/// The keys and secrets one test renders from (env `prod`).
#[derive(Default)]
struct Bed {
    keys: BTreeMap<String, String>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Bed {
    fn key(mut self, name: &str, value: &str) -> Self {
        self.keys.insert(name.to_owned(), value.to_owned());
        self
    }

    fn secret(mut self, path: &str, field: &str, value: &str) -> Self {
        self.secrets.entry(path.to_owned()).or_default().insert(field.to_owned(), value.to_owned());
        self
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let keys = self
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), KeyValue::new(v.clone().into_bytes(), KeyOrigin::File)))
            .collect();
        let secrets = self
            .secrets
            .iter()
            .map(|(path, fields)| {
                let fields = fields.iter().map(|(f, v)| (f.clone(), SecretString::new(v.as_str()))).collect();
                (path.clone(), Secret { fields, version: None })
            })
            .collect();
        Arc::new(Snapshot { env: "prod".into(), keys, secrets, revision: None })
    }

    /// Renders each template (an inline entry of its own output) and gives
    /// its text, or the rendering error as the CLI would print it.
    fn render(&self, templates: &[String]) -> Vec<Result<String, String>> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("[files]\n[envs.prod]\n");
        for (i, t) in templates.iter().enumerate() {
            config.push_str(&format!(
                "\n[[output]]\nname = \"o{i}\"\n[output.entries]\nE = {}\n[[output.target]]\nkind = \"file\"\npath = \"out/o{i}\"\nformat = \"raw\"\n",
                toml::Value::String(t.clone())
            ));
        }
        let config =
            cfgsync::config::parse(&dir.path().join("cfgsync.toml"), &config, &BTreeMap::<String, String>::new())
                .unwrap_or_else(|e| panic!("{e}"));
        let compiled = Templates::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let snapshot = self.snapshot();
        (0..templates.len())
            .map(|i| match compiled.render(i, &snapshot) {
                Ok(r) => Ok(r.entries["E"].expose_str().expect("text").to_owned()),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }

    fn render_one(&self, template: &str) -> Result<String, String> {
        self.render(&[template.to_owned()]).remove(0)
    }
}

/// `{% import "cfgsync/<file>" as <file> %}` followed by `call`.
fn with_import(file: &str, call: &str) -> String {
    format!("{{% import \"cfgsync/{file}.tera\" as {file} %}}{{{{ {call} }}}}")
}

/// An error that names `what` and does not hold `value`.
#[track_caller]
fn assert_refused(result: Result<String, String>, what: &str, value: &str) {
    let e = result.expect_err("refused");
    assert!(e.contains(what), "the error names {what:?}: {e}");
    assert!(!e.contains(value), "the error must not hold the value {value:?}: {e}");
}

/// RFC 3986 percent-decoding, as every URL reader does it.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

const HOSTILE: &str = "p@ss:w/rd #1 ?x=%41&y 'q' \"dq\" $HOME ${HOME} \\ é 日本 🦀\nline2";

#[test]
fn dsn_macros_encode_credentials_and_check_hosts() {
    let bed = Bed::default().key("user", "app user").key("host", "db.internal").secret("db", "password", HOSTILE);
    let pw = "secret(path='db', field='password')";
    let out = bed.render(&[
        with_import("dsn", &format!("dsn::postgres(user=key(name='user'), password={pw}, host=key(name='host'), database='api')")),
        with_import("dsn", &format!("dsn::mysql(user='u-1_.~', password={pw}, host='10.0.0.5', database='my db/x', port=3307, params='tls=true')")),
        with_import("dsn", &format!("dsn::redis(host='[::1]', password={pw}, db=2, tls=true)")),
        with_import("dsn", "dsn::redis(host='cache')"),
        with_import("dsn", &format!("dsn::redis(host='cache', user='worker', password={pw})")),
        with_import("dsn", &format!("dsn::mongodb(user='m', password={pw}, hosts='a:27017,b', database='db', params='replicaSet=rs0')")),
        with_import("dsn", &format!("dsn::mongodb(user='m', password={pw}, hosts='cluster0.example.net', database='db', srv=true)")),
    ]);
    let enc = "p%40ss%3Aw%2Frd%20%231%20%3Fx%3D%2541%26y%20%27q%27%20%22dq%22%20%24HOME%20%24%7BHOME%7D%20%5C%20%C3%A9%20%E6%97%A5%E6%9C%AC%20%F0%9F%A6%80%0Aline2";
    let want = [
        format!("postgres://app%20user:{enc}@db.internal:5432/api"),
        format!("mysql://u-1_.~:{enc}@10.0.0.5:3307/my%20db%2Fx?tls=true"),
        format!("rediss://:{enc}@[::1]:6379/2"),
        "redis://cache:6379/0".to_owned(),
        format!("redis://worker:{enc}@cache:6379/0"),
        format!("mongodb://m:{enc}@a:27017,b/db?replicaSet=rs0"),
        format!("mongodb+srv://m:{enc}@cluster0.example.net/db"),
    ];
    for (got, want) in out.into_iter().zip(want) {
        assert_eq!(got.unwrap(), want);
    }
    assert_eq!(percent_decode(enc), HOSTILE, "a URL reader gets the password back");

    // What cannot be encoded is checked: the error names the argument.
    let hostile_host = "db.internal/evil?x#";
    let bed = Bed::default().key("host", hostile_host).key("port", "54x").key("params", "a=1#frag");
    let out = bed.render(&[
        with_import("dsn", "dsn::postgres(user='u', password='p', host=key(name='host'), database='d')"),
        with_import("dsn", "dsn::postgres(user='u', password='p', host='h', database='d', port=key(name='port'))"),
        with_import("dsn", "dsn::mysql(user='u', password='p', host='h', database='d', params=key(name='params'))"),
        with_import("dsn", "dsn::mongodb(user='u', password='p', hosts='a:1,b/c', database='d')"),
        with_import("dsn", "dsn::mongodb(user='u', password='p', hosts='a:1', database='d', srv=true)"),
        with_import("dsn", "dsn::redis(host='h', db='x')"),
    ]);
    let mut out = out.into_iter();
    assert_refused(out.next().unwrap(), "dsn::postgres: host must be", hostile_host);
    assert_refused(out.next().unwrap(), "dsn::postgres: port must be a number", "54x");
    assert_refused(out.next().unwrap(), "dsn::mysql: params must be", "a=1#frag");
    assert_refused(out.next().unwrap(), "dsn::mongodb: hosts must be", "b/c");
    assert_refused(out.next().unwrap(), "dsn::mongodb: with srv=true", "a:1");
    assert_refused(out.next().unwrap(), "dsn::redis: db must be a number", "'x'");
}

#[test]
fn nginx_upstream_from_a_list_or_a_map() {
    let bed = Bed::default()
        .key("api/servers", " 10.0.0.1:8080, 10.0.0.2:8080 weight=2 max_fails=3,,backup.internal:80 backup ,")
        .key("web/servers/a", "[2001:db8::1]:443")
        .key("web/servers/b", "unix:/run/web.sock")
        .key("web/servers/c", "")
        .key("web/servers/d", "web-3.internal");
    let out = bed.render(&[
        with_import("nginx", "nginx::upstream(name='api', servers=key(name='api/servers'), keepalive=16)"),
        with_import("nginx", "nginx::upstream(name='web', servers=keys(prefix='web/servers/'), server_params='max_fails=3 fail_timeout=10s')"),
    ]);
    assert_eq!(
        out[0].as_deref().unwrap(),
        "upstream api {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080 weight=2 max_fails=3;\n    server backup.internal:80 backup;\n    keepalive 16;\n}\n"
    );
    assert_eq!(
        out[1].as_deref().unwrap(),
        "upstream web {\n    server [2001:db8::1]:443 max_fails=3 fail_timeout=10s;\n    server unix:/run/web.sock max_fails=3 fail_timeout=10s;\n    server web-3.internal max_fails=3 fail_timeout=10s;\n}\n",
        "a map's values in key order; blank ones skipped"
    );

    // A value that would end the directive, close the block or add one.
    let injections = [
        "10.0.0.1:80; include /etc/passwd",
        "10.0.0.1:80 }\nserver { listen 80",
        "10.0.0.1:80\n    proxy_pass http://evil",
        "10.0.0.1:80 #comment",
        "10.0.0.1:80 weight=\"2\"",
        "web:http",
    ];
    for value in injections {
        let bed = Bed::default().key("ok", "10.0.0.9:80").key("bad", value);
        let r = bed.render_one(&with_import(
            "nginx",
            "nginx::upstream(name='api', servers=[key(name='ok'), key(name='bad')])",
        ));
        assert_refused(r, "nginx::upstream api: server 2 is not an address", value);
        let bed = Bed::default().key("s/first", "10.0.0.9:80").key("s/second", value);
        let r = bed.render_one(&with_import("nginx", "nginx::upstream(name='api', servers=keys(prefix='s/'))"));
        assert_refused(r, "nginx::upstream api: server \"second\" is not an address", value);
    }
    let bed = Bed::default().key("none", " , ").key("name", "api;x");
    let out = bed.render(&[
        with_import("nginx", "nginx::upstream(name='api', servers=key(name='none'))"),
        with_import("nginx", "nginx::upstream(name=key(name='name'), servers='a:1')"),
        with_import("nginx", "nginx::upstream(name='api', servers='a:1', server_params='x;y')"),
        with_import("nginx", "nginx::upstream(name='api', servers='a:1', keepalive='1;')"),
    ]);
    let mut out = out.into_iter();
    assert_refused(out.next().unwrap(), "nginx::upstream api: no servers", "\u{0}");
    assert_refused(out.next().unwrap(), "nginx::upstream: the name must be", "api;x");
    assert_refused(out.next().unwrap(), "nginx::upstream api: server_params must be", "x;y");
    assert_refused(out.next().unwrap(), "nginx::upstream api: keepalive must be a number", "1;");
}

/// The corpus of `dotenv_readers`, plus values only a template can be
/// handed, each under its own key prefix `c<i>/`.
fn dotenv_cases() -> Vec<String> {
    let mut cases: Vec<String> = corpus(&python_whitespace()).into_iter().map(|(v, _)| v).collect();
    cases.extend(
        ["it's\ttab\u{8}bs\u{c}ff", "it's \u{1}", "\u{1b}[31mred", "\u{7f}del", "it's\u{85}nel"].map(String::from),
    );
    cases
}

fn block_calls(file: &str, call: &str, cases: &[String]) -> (Bed, Vec<String>) {
    let mut bed = Bed::default();
    for (i, v) in cases.iter().enumerate() {
        bed = bed.key(&format!("c{i}/CASE_{i:03}"), v);
    }
    let calls =
        (0..cases.len()).map(|i| with_import(file, &format!("{file}::{call}(vars=keys(prefix='c{i}/'))"))).collect();
    (bed, calls)
}

/// Writes `text` to a file and has `read` read it.
fn read_with(read: fn(&Path) -> Result<BTreeMap<String, String>, String>, text: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("block.env");
    std::fs::write(&file, text).unwrap();
    read(&file).unwrap_or_else(|e| panic!("the reader refused the block: {e}"))
}

#[test]
fn dotenv_block_is_what_a_dotenv_target_writes_and_every_reader_reads_it_back() {
    let cases = dotenv_cases();
    let (bed, calls) = block_calls("dotenv", "block", &cases);
    let mut accepted = BTreeMap::new();
    let mut text = String::new();
    for (i, (value, got)) in cases.iter().zip(bed.render(&calls)).enumerate() {
        let name = format!("CASE_{i:03}");
        let target = encode(Format::Dotenv, Dialect::Portable, &BTreeMap::from([(name.clone(), value.clone())]));
        match (got, target) {
            (Ok(block), Ok(file)) => {
                assert_eq!(block, file, "case {i} ({value:?}): the block and a dotenv target differ");
                text.push_str(&block);
                accepted.insert(name, value.clone());
            }
            (Err(e), Err(_)) => {
                assert!(e.contains(&format!("dotenv::block: the value of {name} ")), "case {i}: {e}");
                assert!(value.len() < 3 || !e.contains(value.as_str()), "case {i}: the error holds the value: {e}");
            }
            (got, target) => panic!("case {i} ({value:?}): the block gave {got:?}, a dotenv target {target:?}"),
        }
    }
    assert!(accepted.len() > 90, "most of the corpus is carried: {}", accepted.len());
    for (reader, read) in [
        ("dotenvy", dotenvy_reads as fn(&Path) -> _),
        ("docker compose", compose_reads),
        ("python-dotenv", python_reads),
    ] {
        assert_eq!(read_with(read, &text), accepted, "{reader} reads the blocks back");
    }
}

#[test]
fn dotenv_block_names() {
    let bed = Bed::default()
        .key("a/log_level", "debug")
        .key("a/Mixed_9", "x y")
        .key("b/log_level", "1")
        .key("b/LOG_LEVEL", "2")
        .key("c/9lives", "x")
        .key("d/api.url", "x")
        .key("e/x", "${HOME}");
    let out = bed.render(&[
        with_import("dotenv", "dotenv::block(vars=keys(prefix='a/'), upper=true)"),
        with_import("dotenv", "dotenv::block(vars=keys(prefix='b/'))"),
        with_import("dotenv", "dotenv::block(vars=keys(prefix='b/'), upper=true)"),
        with_import("dotenv", "dotenv::block(vars=keys(prefix='c/'))"),
        with_import("dotenv", "dotenv::block(vars=keys(prefix='d/'))"),
        with_import("compose", "compose::env_file(vars=keys(prefix='a/'), upper=true)"),
        with_import("compose", "compose::env_file(vars=keys(prefix='b/'), upper=true)"),
        with_import("compose", "compose::env_file(vars=keys(prefix='e/'))"),
        with_import("dotenv", "dotenv::block(vars=keys(prefix='nothing/'))"),
    ]);
    let mut out = out.into_iter();
    // In the map's order: names as stored, so `Mixed_9` before `log_level`.
    assert_eq!(out.next().unwrap().unwrap(), "MIXED_9='x y'\nLOG_LEVEL=debug\n");
    assert_eq!(out.next().unwrap().unwrap(), "LOG_LEVEL=2\nlog_level=1\n");
    assert_refused(out.next().unwrap(), "dotenv::block: two entries are named LOG_LEVEL", "\u{0}");
    assert_refused(out.next().unwrap(), "dotenv::block: \"9lives\" is not a variable name", "\u{0}");
    assert_refused(out.next().unwrap(), "dotenv::block: \"api.url\" is not a variable name", "\u{0}");
    assert_eq!(out.next().unwrap().unwrap(), "MIXED_9='x y'\nLOG_LEVEL=debug\n");
    assert_refused(out.next().unwrap(), "compose::env_file: two entries are named LOG_LEVEL", "\u{0}");
    assert_eq!(out.next().unwrap().unwrap(), "x='${HOME}'\n", "compose substitutes nothing in single quotes");
    assert_eq!(out.next().unwrap().unwrap(), "", "an empty map is an empty block");
}

#[test]
fn compose_env_file_is_read_back_by_docker_compose() {
    let cases = dotenv_cases();
    let (bed, calls) = block_calls("compose", "env_file", &cases);
    let mut accepted = BTreeMap::new();
    let mut text = String::new();
    for (i, (value, got)) in cases.iter().zip(bed.render(&calls)).enumerate() {
        let name = format!("CASE_{i:03}");
        match got {
            Ok(block) => {
                // Where a dotenv target with `dialect = "compose"` writes a
                // control character verbatim, the block writes JSON's escape.
                if !value.contains(['\t', '\u{8}', '\u{c}']) {
                    let target =
                        encode(Format::Dotenv, Dialect::Compose, &BTreeMap::from([(name.clone(), value.clone())]));
                    assert_eq!(Some(&block), target.as_ref().ok(), "case {i} ({value:?})");
                }
                text.push_str(&block);
                accepted.insert(name, value.clone());
            }
            Err(e) => {
                assert_eq!(value, "it's \u{1}", "case {i} refused: {e}");
                assert!(
                    e.contains(&format!("compose::env_file: the value of {name} holds a control character")),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(accepted.len(), cases.len() - 1, "only `it's \\u{{1}}` is refused");
    assert_eq!(read_with(compose_reads, &text), accepted);
}

/// The YAML a Spring datasource fragment gives, parsed.
fn spring_values(yaml: &str) -> BTreeMap<String, String> {
    let doc: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"));
    assert_eq!(doc.len(), 1);
    doc["spring"]["datasource"].clone()
}

#[test]
fn spring_datasource_reads_back_exactly_in_yaml() {
    let hostile = [
        "p: \"#1\"",
        "it's # not a comment",
        "line1\nline2\n",
        "  leading and trailing  ",
        "yes",
        "null",
        "~",
        "0x10",
        "1e3",
        "- item",
        "? key",
        "&anchor *alias !tag |literal >folded %directive @at `tick`",
        "{a: 1, b: [2]}",
        "tab\there\u{1}\u{1b}",
        "$HOME and $ alone",
        "\\ \\n backslashes",
        "é 日本語 🦀 \u{feff}bom \u{a0}nbsp",
        "",
    ];
    let bed = hostile.iter().enumerate().fold(Bed::default(), |b, (i, v)| b.secret("db", &format!("p{i}"), v));
    let calls: Vec<String> = (0..hostile.len())
        .map(|i| {
            with_import(
                "spring",
                &format!("spring::datasource(url='jdbc:postgresql://db:5432/api?ssl=true&x=#', username='api', password=secret(path='db', field='p{i}'))"),
            )
        })
        .collect();
    for ((value, got), i) in hostile.iter().zip(bed.render(&calls)).zip(0..) {
        let yaml = got.unwrap_or_else(|e| panic!("case {i}: {e}"));
        let read = spring_values(&yaml);
        assert_eq!(read["password"], *value, "case {i}: {yaml}");
        assert_eq!(read["url"], "jdbc:postgresql://db:5432/api?ssl=true&x=#");
        assert_eq!(read["username"], "api");
        assert_eq!(read.len(), 3, "{yaml}");
    }

    let out = Bed::default().render_one(&with_import(
        "spring",
        "spring::datasource(url='u', username='api', password='p', driver_class_name='org.postgresql.Driver')",
    ));
    assert_eq!(
        out.unwrap(),
        "spring:\n  datasource:\n    url: \"u\"\n    username: \"api\"\n    password: \"p\"\n    driver-class-name: \"org.postgresql.Driver\"\n"
    );
    let pw = "x${DB_PASSWORD}y";
    let r = Bed::default()
        .key("pw", pw)
        .render_one(&with_import("spring", "spring::datasource(url='u', username='api', password=key(name='pw'))"));
    assert_refused(r, "spring::datasource: the password holds `${`", pw);
    // YAML 1.1 (SnakeYAML, what Spring reads with) breaks lines at NEL, LS
    // and PS even inside quotes; DEL and C1 controls are not allowed at all.
    for user in ["a\u{7f}b", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "a\u{9f}b", "a\u{fffe}b"] {
        let r = Bed::default()
            .key("user", user)
            .render_one(&with_import("spring", "spring::datasource(url='u', username=key(name='user'), password='p')"));
        assert_refused(r, "spring::datasource: the username holds a character YAML 1.1 reads otherwise", user);
    }
}

/// The example of a template's header comment: the entry (the lines from
/// `{% import` to the first blank line, an `NAME = "template"` line) and the
/// text shown after the line that says `renders`.
fn header_example(text: &str) -> (String, String) {
    let header = &text[..text.find("-#}").expect("a header comment")];
    let lines: Vec<&str> = header.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect();
    let import = lines.iter().position(|l| l.starts_with("{% import")).expect("an import line");
    let entry = lines[import + 1];
    let (_, template) = entry.split_once(" = \"").expect("NAME = \"template\"");
    let template = format!("{}{}", lines[import], template.strip_suffix('"').expect("a closing quote"));
    let renders = lines.iter().position(|l| l.contains("renders")).expect("a `renders` line");
    let shown: Vec<&str> =
        lines[renders + 1..].iter().skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).copied().collect();
    (template, shown.join("\n"))
}

#[test]
fn every_shipped_template_is_listed_documented_and_its_example_holds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/cfgsync");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| format!("cfgsync/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let shipped: Vec<String> = cfgsync::render::library::SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(shipped, on_disk, "every file of templates/cfgsync/ is in src/render/library.rs, sorted");

    // The keys and secrets the headers' examples describe.
    let bed = Bed::default()
        .key("api/db_user", "api")
        .key("api/db_host", "db.internal")
        .secret("api/db", "password", "p@ss: \"#1\"")
        .key("api/env/LOG_LEVEL", "info")
        .key("api/env/GREETING", "it is $5")
        .key("api/env/MOTD", "it's \"two\"\nlines")
        .secret("app/env", "HOST", "db.internal")
        .secret("app/env", "TOKEN", "it's $5 #1")
        .secret("app/env", "NOTE", "a\r\nb")
        .key("api/servers", "10.0.0.1:8080, 10.0.0.2:8080 backup");
    let this_file = include_str!("library.rs");
    for (name, text) in cfgsync::render::library::SHIPPED {
        assert!(text.starts_with("{#-"), "{name} opens with its documentation");
        let (template, shown) = header_example(text);
        let got = bed.render_one(&template).unwrap_or_else(|e| panic!("{name}: the header's example fails: {e}"));
        assert_eq!(got.trim_end_matches('\n'), shown, "{name}: the header shows another text than its example renders");
        // Every macro the header names is called by a test in this file.
        let file = name.trim_start_matches("cfgsync/").trim_end_matches(".tera");
        let header = &text[..text.find("-#}").unwrap()];
        for line in text.lines().filter_map(|l| l.strip_prefix("{%- macro ")) {
            let macro_name = &line[..line.find('(').unwrap()];
            if header.contains(&format!("{macro_name}(")) {
                assert!(
                    this_file.contains(&format!("{file}::{macro_name}(")),
                    "{name}: macro {macro_name} has no test"
                );
            }
        }
    }
}
