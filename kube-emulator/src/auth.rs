//! Service-account tokens and `TokenReview`, as kube-apiserver answers it,
//! for OpenBao's (Vault's) `kubernetes` auth method: it sends the token a
//! workload presents to `POST /apis/authentication.k8s.io/v1/tokenreviews`
//! and trusts the answer.
//!
//! - [`TokenReviewer::issue`] makes a projected service-account token: a
//!   JWT whose claims are the API server's (`iss`, `sub` =
//!   `system:serviceaccount:NS:NAME`, `aud`, `exp`/`iat`/`nbf`, and the
//!   `kubernetes.io` claim with the namespace and the service account's
//!   name and uid), with an `RS256` header as kube's. The signature is
//!   opaque bytes: only the reviewer, which records every token it issued,
//!   can tell a genuine one. A client that verifies signatures itself
//!   (Vault with `pem_keys`) would refuse it; Vault without `pem_keys`, the
//!   default, asks the reviewer, which is what this is for.
//! - The review answers like kube-apiserver: `authenticated: true` with
//!   `user.username`, `user.uid` and the audiences both sides share; an
//!   unknown, expired or revoked token, or audiences that do not overlap,
//!   `authenticated: false` with the apiserver's error text, still HTTP
//!   201. The request itself needs a bearer token the reviewer issued (the
//!   reviewer JWT, or the client's own when Vault has none), else 401 with a
//!   `Status`, as an anonymous request to the real API gets.
//!
//! Decision: a server of its own (put [`crate::tls::TlsFront`] in front
//! for `https://`), not a route of the Kubernetes emulator, whose router
//! another suite owns: Vault only ever calls this one path on
//! `kubernetes_host`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The issuer kube-apiserver uses by default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What the reviewer knows of one token it issued.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    expires: u64,
    revoked: bool,
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, Issued>,
    /// Service account uids, stable per namespace/name.
    uids: BTreeMap<(String, String), String>,
    /// Reviews answered, for tests.
    reviews: u64,
    counter: u64,
}

/// Issues service-account tokens and answers `TokenReview` for them.
pub struct TokenReviewer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenReviewer {
    /// Serves on a free 127.0.0.1 port.
    pub fn start() -> std::io::Result<TokenReviewer> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = state.clone();
        let thread = std::thread::Builder::new().name("token-reviewer".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    while connections.try_join_next().is_some() {}
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = shared.clone();
                            connections.spawn(async move {
                                let service = hyper::service::service_fn(move |req| serve(state.clone(), req));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        })?;
        Ok(TokenReviewer { addr, state, stop: Some(stop), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A projected token of service account `namespace/name` for
    /// `audiences`, valid `ttl_seconds` (what the kubelet writes into a pod).
    pub fn issue(&self, namespace: &str, name: &str, audiences: &[&str], ttl_seconds: u64) -> String {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counter += 1;
        let serial = state.counter;
        let uid = state
            .uids
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| format!("0000{serial:04}-5a5a-4e4e-8b8b-{:012x}", now()))
            .clone();
        let (iat, exp) = (now(), now() + ttl_seconds);
        let header = json!({ "alg": "RS256", "kid": "kube-emulator", "typ": "JWT" });
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": iat,
            "nbf": iat,
            "iss": ISSUER,
            "jti": format!("kube-emulator-{serial}"),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": { "name": name, "uid": uid },
            },
        });
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        // Opaque, unique: only this reviewer can tell it is genuine.
        let signature = format!("kube-emulator-signature-{serial}-{iat}");
        let token = format!("{signing_input}.{}", b64(signature.as_bytes()));
        state.tokens.insert(
            token.clone(),
            Issued {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid,
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                expires: exp,
                revoked: false,
            },
        );
        token
    }

    /// Revokes a token (its service account deleted, its pod gone).
    pub fn revoke(&self, token: &str) {
        if let Some(t) = self.state.lock().unwrap_or_else(|p| p.into_inner()).tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    /// How many reviews were answered.
    pub fn reviews(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reviews
    }
}

impl Drop for TokenReviewer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(code: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    respond(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// The token's record when it is valid now.
fn valid<'a>(state: &'a State, token: &str) -> Option<&'a Issued> {
    state.tokens.get(token).filter(|t| !t.revoked && t.expires > now())
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/apis/authentication.k8s.io/v1/tokenreviews" {
        return Ok(status(404, "NotFound", "the server could not find the requested resource"));
    }
    if req.method() != hyper::Method::POST {
        return Ok(status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"));
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let authorized = bearer.is_some_and(|b| valid(&state.lock().unwrap_or_else(|p| p.into_inner()), &b).is_some());
    if !authorized {
        return Ok(status(401, "Unauthorized", "Unauthorized"));
    }
    let Ok(body) = Limited::new(req.into_body(), 1024 * 1024).collect().await else {
        return Ok(status(400, "BadRequest", "the request body could not be read"));
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return Ok(status(400, "BadRequest", "the body is not a TokenReview"));
    };
    // Like the API server: kind and apiVersion may be left out (the URL
    // says them; client-go's typed body often has no TypeMeta), but not wrong.
    let names = |field: &str, want: &str| review.get(field).is_none_or(|v| v.is_null() || v == want || v == "");
    if !names("kind", "TokenReview") || !names("apiVersion", "authentication.k8s.io/v1") {
        return Ok(status(400, "BadRequest", "the body is not an authentication.k8s.io/v1 TokenReview"));
    }
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.reviews += 1;
    let outcome = match valid(&state, token) {
        None => {
            json!({ "authenticated": false, "error": "[invalid bearer token, service account token has expired or is not valid]", "user": {} })
        }
        Some(t) => {
            let shared: Vec<&String> = if wanted.is_empty() {
                t.audiences.iter().collect()
            } else {
                t.audiences.iter().filter(|a| wanted.contains(a)).collect()
            };
            if shared.is_empty() {
                json!({
                    "authenticated": false,
                    "error": format!("[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]", t.audiences, wanted),
                    "user": {},
                })
            } else {
                json!({
                    "authenticated": true,
                    "audiences": shared,
                    "user": {
                        "username": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
                        "uid": t.uid,
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
                    },
                })
            }
        }
    };
    let mut answer = review.clone();
    answer["kind"] = json!("TokenReview");
    answer["apiVersion"] = json!("authentication.k8s.io/v1");
    answer["metadata"] = json!({ "creationTimestamp": null });
    answer["status"] = outcome;
    Ok(respond(201, &answer))
}
