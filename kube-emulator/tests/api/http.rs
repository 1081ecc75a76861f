//! A plain HTTP/1.1 client for the GitLab and GitHub contract suites: one
//! connection per request (hyper's client connection over a tokio socket),
//! so that a test sees exactly the status, headers and body the server sent.
//!
//! In "through Prism" mode every request goes to the Prism proxy instead,
//! and every answer is judged against GitHub's OpenAPI description: a
//! request the description allows must be forwarded and answered without
//! violations; a request marked `spec_invalid()` (the suite sends some on
//! purpose) must be refused by Prism too, and is then sent to the emulator
//! directly so that the scenario can check the emulator's own answer.

#![allow(dead_code)]

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube_emulator::github::prism;
use serde_json::Value;

/// One answer, fully read.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `base` (`http://127.0.0.1:PORT`).
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
) -> std::io::Result<Resp> {
    let authority = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(conn);
    let mut builder = hyper::Request::builder().method(method).uri(path).header("host", &authority);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let req = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(std::io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = resp.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes().to_vec();
    driver.abort();
    Ok(Resp { status, headers, body })
}

/// Where requests go.
pub struct Client {
    /// The emulator.
    direct: String,
    /// The Prism proxy in front of it, when judging against the OpenAPI description.
    prism: Option<String>,
    default_headers: Vec<(String, String)>,
    /// Every exchange Prism judged, for the final report.
    pub judged: Mutex<Vec<(String, prism::Verdict)>>,
}

impl Client {
    pub fn direct(url: &str, default_headers: &[(&str, &str)]) -> Client {
        Client {
            direct: url.to_string(),
            prism: None,
            default_headers: default_headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            judged: Mutex::new(Vec::new()),
        }
    }

    pub fn through_prism(prism_url: &str, upstream: &str, default_headers: &[(&str, &str)]) -> Client {
        let mut c = Client::direct(upstream, default_headers);
        c.prism = Some(prism_url.to_string());
        c
    }

    pub fn url(&self) -> &str {
        &self.direct
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            client: self,
            method: method.to_string(),
            path: path.to_string(),
            headers: self.default_headers.clone(),
            body: None,
            spec_invalid: false,
        }
    }
}

/// A request being built.
pub struct Req<'a> {
    client: &'a Client,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    spec_invalid: bool,
}

impl Req<'_> {
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("json"));
        self.header("content-type", "application/json")
    }

    pub fn raw_body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self.header("content-type", content_type)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends no credentials.
    pub fn no_auth(mut self) -> Self {
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("private-token"));
        self
    }

    /// The request breaks the OpenAPI description on purpose: through
    /// Prism, it must be refused there.
    pub fn spec_invalid(mut self) -> Self {
        self.spec_invalid = true;
        self
    }

    /// Sends; panics on a transport error.
    pub async fn send(self) -> Resp {
        self.try_send().await.unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    pub async fn try_send(self) -> std::io::Result<Resp> {
        let what = format!("{} {}", self.method, self.path);
        let Some(prism_url) = &self.client.prism else {
            return send(&self.client.direct, &self.method, &self.path, &self.headers, self.body).await;
        };
        let through = send(prism_url, &self.method, &self.path, &self.headers, self.body.clone()).await?;
        let verdict = prism::judge(through.header("content-type"), through.header("sl-violations"), &through.body);
        self.client.judged.lock().unwrap().push((what.clone(), verdict.clone()));
        if self.spec_invalid {
            assert!(
                !verdict.request_rejected.is_empty(),
                "{what} breaks the OpenAPI description on purpose, yet Prism forwarded it (answer {}: {})",
                through.status,
                through.text()
            );
            return send(&self.client.direct, &self.method, &self.path, &self.headers, self.body).await;
        }
        assert!(
            verdict.is_clean(),
            "{what}: Prism found the exchange not valid against GitHub's OpenAPI description: {verdict:#?}\nanswer {}: {}",
            through.status,
            through.text()
        );
        for w in &verdict.warnings {
            assert!(
                w.contains("Unable to match the returned status code"),
                "{what}: unexpected Prism warning {w:?} (only answer statuses the description leaves out are tolerated)"
            );
        }
        Ok(through)
    }
}
