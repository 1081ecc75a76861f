//! HTTP plumbing shared by the three emulators (Kubernetes, GitLab, GitHub):
//! the server thread and its runtime, the accept loop, fault injection, the
//! "down" listener toggle, query parsing and, for the GitLab and GitHub
//! emulators, the request log and counts by (method, route pattern).
//!
//! Decisions:
//! - One thread with a current-thread tokio runtime per emulator: a test
//!   owns the emulator like any value, and dropping it frees the port.
//! - Fault injection happens after a request is counted and logged, so a
//!   test can assert that a client retried (a 429 or a 500 counts).
//! - Fault "down" closes the listening socket (the kernel refuses new
//!   connections, as with a stopped server) and cuts the open ones;
//!   clearing it binds the same address again.
//! - The emulators' state sits behind `std::sync::Mutex`es: every request
//!   is short and never awaits while holding one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Fault, StartError, Verb};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Query parameters, percent-decoded; a repeated name keeps its last value.
pub(crate) type Query = BTreeMap<String, String>;

/// How long `set_fault` waits for the listener to close or reopen.
const LISTENER_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough data for a test double.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The active fault and which requests it hits.
#[derive(Default)]
pub(crate) struct FaultState {
    pub fault: Option<Fault>,
    /// None: every request; Some: only requests with these verbs.
    pub verbs: Option<Vec<Verb>>,
    /// Requests left for the counted faults (`Errors`, `DropConnections`, rate limits).
    pub remaining: u32,
    /// xorshift state for `ErrorRate`.
    pub rng: u64,
}

/// What fault injection decided for one request.
pub(crate) enum Injected {
    Nothing,
    Delay(Duration),
    /// Answer with the emulator's 500.
    Error,
    /// Close the connection without an answer.
    Drop,
    /// Answer with the emulator's rate-limit response; `secondary` asks
    /// for GitHub's 403 flavour.
    RateLimit {
        retry_after_secs: u64,
        secondary: bool,
    },
}

/// The listener and fault state of one emulator, shared by its handle and
/// its server tasks.
pub(crate) struct Net {
    /// Program name for log lines (`kube-emulator`, ...).
    pub name: &'static str,
    pub faults: Mutex<FaultState>,
    /// true while the "down" fault is active.
    pub down: watch::Sender<bool>,
    /// true while the listener is bound (what `set_fault` waits for).
    pub listening: watch::Sender<bool>,
    /// true once the emulator is stopping.
    pub stop: watch::Sender<bool>,
    pub addr: SocketAddr,
    /// Log one line per request on stderr.
    pub verbose: bool,
}

impl Net {
    pub fn new(name: &'static str, addr: SocketAddr, verbose: bool) -> Net {
        Net {
            name,
            faults: Mutex::new(FaultState { rng: 0x2545_F491_4F6C_DD1D, ..FaultState::default() }),
            down: watch::channel(false).0,
            listening: watch::channel(true).0,
            stop: watch::channel(false).0,
            addr,
            verbose,
        }
    }

    /// Installs `fault` (replacing any other) for requests with one of
    /// `verbs`, or every request; returns once it is in force.
    pub fn install_fault(&self, fault: Fault, verbs: Option<Vec<Verb>>) {
        let down = fault == Fault::Down;
        {
            let mut f = lock(&self.faults);
            f.remaining = match fault {
                Fault::Errors { count }
                | Fault::DropConnections { count }
                | Fault::RateLimited { count, .. }
                | Fault::SecondaryRateLimited { count, .. } => count,
                Fault::ErrorRate { .. } | Fault::Latency(_) | Fault::Down => 0,
            };
            f.verbs = if down { None } else { verbs };
            f.fault = Some(fault);
        }
        self.down.send_replace(down);
        self.wait_listening(!down);
    }

    /// Removes the fault; after [`Fault::Down`], returns once the listener is back.
    pub fn clear_fault(&self) {
        lock(&self.faults).fault = None;
        self.down.send_replace(false);
        self.wait_listening(true);
    }

    fn wait_listening(&self, want: bool) {
        let deadline = Instant::now() + LISTENER_DEADLINE;
        while *self.listening.borrow() != want {
            assert!(
                Instant::now() < deadline,
                "{}: the listener did not {} within {LISTENER_DEADLINE:?}",
                self.name,
                if want { "reopen" } else { "close" }
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Decides what the active fault does to a request with `verb` (None:
    /// a request that no verb filter selects, e.g. discovery).
    pub fn injected(&self, verb: Option<Verb>) -> Injected {
        let mut f = lock(&self.faults);
        let Some(fault) = f.fault.clone() else { return Injected::Nothing };
        if let Some(verbs) = &f.verbs
            && !verb.is_some_and(|v| verbs.contains(&v))
        {
            return Injected::Nothing;
        }
        let take_one = |f: &mut FaultState| {
            if f.remaining == 0 {
                f.fault = None;
                return false;
            }
            f.remaining -= 1;
            if f.remaining == 0 {
                f.fault = None;
            }
            true
        };
        match fault {
            Fault::Latency(d) => Injected::Delay(d),
            Fault::Errors { .. } if take_one(&mut f) => Injected::Error,
            Fault::DropConnections { .. } if take_one(&mut f) => Injected::Drop,
            Fault::RateLimited { retry_after, .. } if take_one(&mut f) => {
                Injected::RateLimit { retry_after_secs: whole_seconds(retry_after), secondary: false }
            }
            Fault::SecondaryRateLimited { retry_after, .. } if take_one(&mut f) => {
                Injected::RateLimit { retry_after_secs: whole_seconds(retry_after), secondary: true }
            }
            Fault::ErrorRate { rate } => {
                f.rng ^= f.rng << 13;
                f.rng ^= f.rng >> 7;
                f.rng ^= f.rng << 17;
                let draw = (f.rng >> 11) as f64 / (1u64 << 53) as f64;
                if draw < rate { Injected::Error } else { Injected::Nothing }
            }
            Fault::Down => Injected::Drop,
            Fault::Errors { .. }
            | Fault::DropConnections { .. }
            | Fault::RateLimited { .. }
            | Fault::SecondaryRateLimited { .. } => Injected::Nothing,
        }
    }
}

/// `Retry-After` carries whole seconds; a fraction rounds up so that a
/// client waiting that long is never early.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Marks a request whose connection must be dropped without an answer.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until `stop`, serving each with `serve`.
pub(crate) async fn run<F, Fut>(net: Arc<Net>, first: TcpListener, serve: F)
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<hyper::Response<Body>, DropConnection>> + Send + 'static,
{
    let mut listener = Some(first);
    let mut down = net.down.subscribe();
    let mut stop = net.stop.subscribe();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let is_down = *down.borrow_and_update();
        if is_down && listener.is_some() {
            listener = None;
            net.listening.send_replace(false);
        } else if !is_down && listener.is_none() {
            match TcpListener::bind(net.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    net.listening.send_replace(true);
                }
                Err(e) => {
                    eprintln!("{}: cannot bind {} again: {e}; retrying", net.name, net.addr);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                        _ = wait_true(&mut stop) => return,
                    }
                }
            }
        }
        tokio::select! {
            _ = wait_true(&mut stop) => return,
            _ = down.changed() => continue,
            accepted = async { listener.as_ref().expect("listening").accept().await }, if listener.is_some() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let net = net.clone();
                let serve = serve.clone();
                connections.spawn(async move {
                    let mut down = net.down.subscribe();
                    let mut stop = net.stop.subscribe();
                    let service = hyper::service::service_fn(serve);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection future closes the socket.
                    tokio::select! {
                        _ = conn => {}
                        _ = wait_true(&mut down) => {}
                        _ = wait_true(&mut stop) => {}
                    }
                });
            }
        }
    }
}

/// Starts a server thread with its own current-thread runtime: binds
/// `listen`, calls `build` with the bound address and listener (it returns
/// the handle's state and the server future), hands the state back, then
/// runs the future until it ends.
pub(crate) fn spawn<S, B, Fut>(
    thread_name: String,
    listen: SocketAddr,
    build: B,
) -> Result<(S, JoinHandle<()>), StartError>
where
    S: Send + 'static,
    B: FnOnce(SocketAddr, TcpListener) -> (S, Fut) + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel::<Result<S, StartError>>();
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(StartError::Runtime(e)));
                    return;
                }
            };
            let bound = runtime.block_on(async {
                let listener = TcpListener::bind(listen).await?;
                let addr = listener.local_addr()?;
                Ok::<_, std::io::Error>((listener, addr))
            });
            let (listener, addr) = match bound {
                Ok(b) => b,
                Err(source) => {
                    let _ = tx.send(Err(StartError::Bind { addr: listen, source }));
                    return;
                }
            };
            let _guard = runtime.enter();
            let (state, server) = build(addr, listener);
            let _ = tx.send(Ok(state));
            runtime.block_on(server);
        })
        .map_err(StartError::Runtime)?;
    let state = rx.recv().map_err(|_| StartError::Thread)??;
    Ok((state, thread))
}

fn percent_decode_bytes(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a query component (`+` is a space).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_decode_bytes(s, true)
}

/// Decodes a path segment (`+` stays `+`).
pub(crate) fn decode_segment(s: &str) -> String {
    percent_decode_bytes(s, false)
}

pub(crate) fn parse_query(q: Option<&str>) -> Query {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer from the GitLab or GitHub API logic, before it becomes HTTP.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// None: no body (204).
    pub body: Option<Bytes>,
    pub content_type: &'static str,
}

impl Reply {
    pub fn json(status: u16, content_type: &'static str, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(Bytes::from(serde_json::to_vec(body).unwrap_or_default())),
            content_type,
        }
    }

    pub fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(Bytes::from_static(body.as_bytes())),
            content_type: "text/plain",
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: None, content_type: "" }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> hyper::Response<Body> {
        let mut b = hyper::Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        if self.body.is_some() {
            b = b.header("content-type", self.content_type);
        }
        for (name, value) in &self.headers {
            b = b.header(*name, value);
        }
        let body = match self.body {
            Some(bytes) => Full::new(bytes).boxed(),
            None => Full::new(Bytes::new()).boxed(),
        };
        b.body(body).expect("valid response")
    }
}

/// One request as the GitLab and GitHub emulators log it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query string as sent, if any.
    pub query: Option<String>,
    /// The route pattern the path matched, e.g.
    /// `/api/v4/projects/:id/variables/:key`; `unrouted` when none did.
    pub route: &'static str,
    /// The status answered; None when the connection was dropped by a fault.
    pub status: Option<u16>,
}

/// How many requests the GitLab or GitHub emulator received, by method and
/// route pattern. Requests answered by an injected fault count too;
/// refused connections (fault "down") do not reach the counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteCounts(BTreeMap<(String, &'static str), u64>);

impl RouteCounts {
    /// Requests with this method on this route pattern.
    pub fn get(&self, method: &str, route: &str) -> u64 {
        self.0.iter().filter(|((m, r), _)| m == method && *r == route).map(|(_, n)| n).sum()
    }

    /// Requests with a method that writes (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|((m, _), _)| matches!(m.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every counted request.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// All counts, ordered by method then route.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'static str, u64)> {
        self.0.iter().map(|((m, r), n)| (m.as_str(), *r, *n))
    }
}

impl fmt::Display for RouteCounts {
    /// `GET /api/v4/projects/:id/variables=2, POST ...=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(m, r, n)| format!("{m} {r}={n}")).collect();
        if parts.is_empty() { f.write_str("no requests") } else { f.write_str(&parts.join(", ")) }
    }
}

/// The request log and counts of one GitLab or GitHub emulator.
#[derive(Default)]
pub(crate) struct Traffic {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    log: Mutex<Vec<LoggedRequest>>,
}

impl Traffic {
    /// Counts a request and opens its log entry; returns the entry's index.
    pub fn record(&self, method: &str, path: &str, query: Option<&str>, route: &'static str) -> usize {
        *lock(&self.counts).entry((method.to_string(), route)).or_default() += 1;
        let mut log = lock(&self.log);
        log.push(LoggedRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
            route,
            status: None,
        });
        log.len() - 1
    }

    pub fn answered(&self, index: usize, status: u16) {
        if let Some(entry) = lock(&self.log).get_mut(index) {
            entry.status = Some(status);
        }
    }

    pub fn counts(&self) -> RouteCounts {
        RouteCounts(lock(&self.counts).clone())
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }

    pub fn reset(&self) {
        lock(&self.counts).clear();
        lock(&self.log).clear();
    }
}

/// What every GitLab and GitHub emulator handle has: its address, its
/// request log and counts, fault injection, and stopping. The handles
/// ([`crate::GitlabEmulator`], [`crate::GithubEmulator`]) dereference to it.
pub struct Server {
    pub(crate) net: Arc<Net>,
    pub(crate) traffic: Arc<Traffic>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn new(net: Arc<Net>, traffic: Arc<Traffic>, thread: JoinHandle<()>) -> Server {
        Server { net, traffic, thread: Some(thread) }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.net.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.net.addr
    }

    /// How many requests arrived so far, by method and route pattern.
    pub fn requests(&self) -> RouteCounts {
        self.traffic.counts()
    }

    /// Every request so far, in arrival order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.traffic.log()
    }

    /// Empties the request log and sets every count back to zero.
    pub fn reset_requests(&self) {
        self.traffic.reset();
    }

    /// Injects `fault` into every request from now on (replacing any other
    /// fault). Returns once it is in force: for [`Fault::Down`], once the
    /// listener is closed.
    pub fn set_fault(&self, fault: Fault) {
        self.net.install_fault(fault, None);
    }

    /// Like [`Server::set_fault`], but only for requests with one of `verbs`
    /// (e.g. `&Verb::WRITES`). [`Fault::Down`] ignores the filter.
    pub fn set_fault_on(&self, verbs: &[Verb], fault: Fault) {
        self.net.install_fault(fault, Some(verbs.to_vec()));
    }

    /// Removes the fault; after [`Fault::Down`], returns once the listener is back.
    pub fn clear_fault(&self) {
        self.net.clear_fault();
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(&mut self) {
        self.net.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("name", &self.net.name).field("url", &self.url()).finish()
    }
}

/// Serves one GitLab or GitHub request: counts and logs it, applies the
/// fault, then asks `answer` (the API logic) for the reply. `route_of`
/// names the route pattern and the verb the fault filter sees; `fault_reply`
/// renders an injected error or rate limit the way the emulated API does.
pub(crate) async fn serve_api<R, A, E>(
    net: &Net,
    traffic: &Traffic,
    req: hyper::Request<Incoming>,
    max_body: usize,
    route_of: R,
    fault_reply: E,
    answer: A,
) -> Result<hyper::Response<Body>, DropConnection>
where
    R: FnOnce(&hyper::Method, &str) -> (&'static str, Option<Verb>),
    E: Fn(&Injected) -> Reply,
    A: FnOnce(ApiRequest) -> Reply,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().map(str::to_string);
    let (route, verb) = route_of(&method, &path);
    let index = traffic.record(method.as_str(), &path, raw_query.as_deref(), route);
    if net.verbose {
        eprintln!("{method} {}", req.uri());
    }
    let early = match net.injected(verb) {
        Injected::Nothing => None,
        Injected::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Injected::Drop => return Err(DropConnection),
        other => Some(fault_reply(&other)),
    };
    let reply = match early {
        Some(reply) => reply,
        None => {
            let headers = req.headers().clone();
            match http_body_util::Limited::new(req.into_body(), max_body).collect().await {
                Ok(body) => answer(ApiRequest {
                    method,
                    path,
                    query: parse_query(raw_query.as_deref()),
                    headers,
                    body: body.to_bytes(),
                }),
                Err(_) => fault_reply(&Injected::Error),
            }
        }
    };
    traffic.answered(index, reply.status);
    Ok(reply.into_response())
}

/// A request as the GitLab and GitHub API logic sees it: fully read.
pub(crate) struct ApiRequest {
    pub method: hyper::Method,
    /// Still percent-encoded.
    pub path: String,
    pub query: Query,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl ApiRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path split into percent-decoded segments.
    pub fn segments(&self) -> Vec<String> {
        self.path.split('/').filter(|s| !s.is_empty()).map(decode_segment).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let q = parse_query(Some("labelSelector=app%3Dx%2Cenv+in+(a)&limit=5&filter%5Benvironment_scope%5D=prod"));
        assert_eq!(q["labelSelector"], "app=x,env in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["filter[environment_scope]"], "prod");
    }

    #[test]
    fn path_segments_keep_plus_and_decode_slashes() {
        assert_eq!(decode_segment("group%2Fapp+x"), "group/app+x");
        assert_eq!(decode_segment("100%"), "100%");
        assert_eq!(decode_segment("%zz"), "%zz");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
