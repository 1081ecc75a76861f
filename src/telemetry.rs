//! Logging on stderr via `tracing`.
//!
//! `RUST_LOG` sets the level (default `warn` for the one-shot commands).
//! Whatever it says, a fixed cap is applied on top: the HTTP and gRPC
//! stacks under vaultrs, etcd-client and kube log request and response details at
//! debug/trace, and a Vault response body holds secret values, so those
//! crates never log below `info`; vaultrs (which logs every 404 at ERROR)
//! and rustify are silenced entirely. cfgsync's own events carry names and
//! paths, never values.
//!
//! One event, one line: a backend's error text (Vault's multi-error list,
//! an etcd or Kubernetes response body, a Tera error with its context) may
//! hold newlines and tabs. Printed as is, one failure spreads over several
//! lines of stderr, and a log collector reading line by line splits it into
//! events that no longer carry the level or the target. So the text log
//! format writes each event through [`EventLine`], which turns every run of
//! whitespace holding a line break or a tab into one space (the layout is
//! otherwise tracing-subscriber's own; the JSON format escapes newlines
//! already), and [`OneLine`] / [`one_line`] do the same for the `error:`
//! lines the commands print.
//!
//! No credential in a URL: every event, in either format, goes through
//! [`crate::text::redact_urls`] on its way out (a Vault or etcd address,
//! a kubeconfig server, an API URL with `user:password@` or a token in its
//! query, however it got into a message: an error of a library that
//! quotes its request URL, a field, a span). The error sites redact too;
//! this is the net under them, at every level, `RUST_LOG=trace` included.

use std::fmt as stdfmt;
use std::io;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::LogFormat;

/// Crates that may see secret bytes on the wire, and the most they may log.
const CAPS: &[(&str, LevelFilter)] = &[
    ("vaultrs", LevelFilter::OFF),
    ("rustify", LevelFilter::OFF),
    ("reqwest", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("tonic", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("etcd_client", LevelFilter::INFO),
    ("kube_client", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
];

/// The filter every subscriber uses: `RUST_LOG` (or `default`) and the caps.
pub fn filter(default: &str) -> impl tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + use<> {
    let env = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse_lossy(std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned()));
    let caps = Targets::new().with_default(LevelFilter::TRACE).with_targets(CAPS.iter().copied());
    env.and(caps)
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, default: &str) {
    let color = crate::report::colors(&io::stderr());
    let layer = match format {
        LogFormat::Text => text_layer(io::stderr, color).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(|| RedactedEvent(io::stderr())).with_target(true).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter(default))).try_init();
}

/// The text format, each event written as one line.
fn text_layer<S, F, W>(make: F, color: bool) -> impl Layer<S> + use<S, F, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    F: Fn() -> W + Send + Sync + 'static,
    W: io::Write,
{
    fmt::layer().with_writer(move || EventLine(make())).with_ansi(color).with_target(true)
}

/// A writer for one formatted log event: tracing-subscriber's fmt layer
/// formats an event into a buffer and hands it over in one `write_all`,
/// and `write` here takes all of it, so each call is a whole event. Every
/// whitespace run holding a line break or a tab becomes one space; the
/// final newline stays.
pub struct EventLine<W>(pub W);

impl<W: io::Write> io::Write for EventLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&redact_event(&fold_line_breaks(buf)))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A writer for one formatted log event (see [`EventLine`]) that only
/// redacts URLs: the JSON format, whose line breaks are escaped already.
pub struct RedactedEvent<W>(pub W);

impl<W: io::Write> io::Write for RedactedEvent<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&redact_event(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// An event with the credentials of its URLs redacted. Events are UTF-8
/// (formatted by tracing); bytes that are not pass as they are.
fn redact_event(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match std::str::from_utf8(event).map(crate::text::redact_urls) {
        Ok(std::borrow::Cow::Owned(text)) => std::borrow::Cow::Owned(text.into_bytes()),
        _ => std::borrow::Cow::Borrowed(event),
    }
}

/// `text` with each whitespace run that holds a line break or a tab turned
/// into one space, except a final newline. Works on bytes: ASCII whitespace
/// never occurs inside a multi-byte UTF-8 sequence.
fn fold_line_breaks(text: &[u8]) -> Vec<u8> {
    let (body, end) = match text.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (text, &b""[..]),
    };
    let mut out = Vec::with_capacity(text.len());
    let mut rest = body;
    while let Some(start) = rest.iter().position(u8::is_ascii_whitespace) {
        out.extend_from_slice(&rest[..start]);
        let len = rest[start..].iter().take_while(|b| b.is_ascii_whitespace()).count();
        let run = &rest[start..start + len];
        if run.iter().any(|b| matches!(b, b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)) {
            out.push(b' ');
        } else {
            out.extend_from_slice(run);
        }
        rest = &rest[start + len..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(end);
    out
}

pub use crate::text::one_line;

/// A writer for `error:` lines: each `write!`/`writeln!` is folded to one
/// line by [`one_line`] (a trailing newline is kept). Raw `write` calls
/// pass through unchanged.
pub struct OneLine<W>(pub W);

impl<W: io::Write> io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn write_fmt(&mut self, args: stdfmt::Arguments<'_>) -> io::Result<()> {
        let text = args.to_string();
        let mut line = one_line(&text);
        if text.ends_with('\n') {
            line.push('\n');
        }
        self.0.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::{OneLine, fold_line_breaks, one_line, text_layer};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const VAULT_BODY: &str = "HTTP 403: 2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";

    #[test]
    fn one_line_folds_newlines_and_tabs() {
        assert_eq!(one_line(VAULT_BODY), "HTTP 403: 2 errors occurred: * permission denied * invalid token");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn a_text_log_event_with_a_multi_line_error_is_one_line() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(text_layer(move || writer.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(env = "prod", error = %VAULT_BODY, "source failed:\nretrying");
        });
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.ends_with(
                "source failed: retrying env=\"prod\" error=HTTP 403: 2 errors occurred: * permission denied * invalid token \n"
            ),
            "{text:?}"
        );
        assert!(text.contains(" ERROR "), "{text:?}");
    }

    #[test]
    fn a_url_credential_never_reaches_the_log_in_either_format() {
        for json in [false, true] {
            let captured = Captured::default();
            let writer = captured.clone();
            let layer = if json {
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(move || super::RedactedEvent(writer.clone()))
                    .boxed()
            } else {
                text_layer(move || writer.clone(), false).boxed()
            };
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("pass", endpoint = "http://root:pw-in-span@etcd:2379");
                let _in = span.enter();
                tracing::trace!(
                    error = "error sending request for url (http://root:pw-in-error@vault:8200/v1/x)",
                    "GET https://api.example/v4?private_token=pw-in-query"
                );
            });
            let text = captured.text();
            assert!(!text.contains("pw-in"), "json={json}: {text}");
            assert!(text.contains("http://***@vault:8200/v1/x"), "json={json}: {text}");
            assert!(text.contains("private_token=***"), "json={json}: {text}");
        }
    }

    #[test]
    fn folding_keeps_plain_spaces_and_the_final_newline() {
        assert_eq!(fold_line_breaks(b"  INFO a  b\n"), b"  INFO a  b\n");
        assert_eq!(fold_line_breaks(b"a \n\t b\r\nc\n\n"), b"a b c \n");
        assert_eq!(fold_line_breaks("é\n\tü".as_bytes()), "é ü".as_bytes());
        assert_eq!(fold_line_breaks(b""), b"");
    }

    #[test]
    fn error_lines_are_folded_and_keep_their_newline() {
        let mut out = OneLine(Vec::new());
        writeln!(out, "error: env prod: {VAULT_BODY}").unwrap();
        write!(out, "error: no newline\tat the end").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "error: env prod: HTTP 403: 2 errors occurred: * permission denied * invalid token\nerror: no newline at the end"
        );
    }
}
