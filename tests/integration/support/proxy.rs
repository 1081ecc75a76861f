//! An HTTP/1.1 proxy on 127.0.0.1 that answers chosen requests itself:
//! answers the emulators cannot give on demand (kube-emulator has no
//! `409 Conflict` fault, for one).
//!
//! Every client connection carries one request: the proxy reads it (head
//! and a `Content-Length` body), and either answers it with the injected
//! response, or forwards it upstream with `Connection: close` and copies
//! the answer back until upstream closes. Clients then open a new
//! connection per request, which is all HTTP/1.1 asks of them; streaming
//! answers (watches) pass through unchanged. Chunked request bodies are
//! not supported (no client under test sends one) and fail loudly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Answer the next `count` requests whose method is `method` and whose
/// path contains `path` with `status` and `body` (JSON).
#[derive(Clone, Debug)]
pub struct Inject {
    pub method: String,
    pub path: String,
    pub count: u32,
    pub status: u16,
    pub body: String,
}

impl Inject {
    /// What the API server says when an object changed under a write:
    /// `409 Conflict` with a `Status` body.
    pub fn kube_conflict(method: &str, kind_plural: &str, name: &str, count: u32) -> Inject {
        let message = format!(
            "Operation cannot be fulfilled on {kind_plural} \\\"{name}\\\": the object has been modified; please apply your changes to the latest version and try again"
        );
        Inject {
            method: method.to_owned(),
            path: format!("/{kind_plural}/{name}"),
            count,
            status: 409,
            body: format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{message}","reason":"Conflict","details":{{"name":"{name}","kind":"{kind_plural}"}},"code":409}}"#
            ),
        }
    }
}

#[derive(Default)]
struct State {
    inject: Option<Inject>,
    /// (method, path, injected) of every request seen.
    seen: Vec<(String, String, bool)>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:<free port> to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, &s);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("proxy accept: {e}"),
                }
            }
        });
        FaultProxy { addr, state, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn inject(&self, inject: Inject) {
        self.state.lock().unwrap().inject = Some(inject);
    }

    /// How many injected answers are still to be given.
    pub fn remaining(&self) -> u32 {
        self.state.lock().unwrap().inject.as_ref().map_or(0, |i| i.count)
    }

    /// (method, path, injected) of every request so far.
    pub fn seen(&self) -> Vec<(String, String, bool)> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        assert!(!lower.starts_with("transfer-encoding:"), "the fault proxy does not forward chunked requests: {line}");
        if !lower.starts_with("connection:") && !lower.starts_with("keep-alive:") {
            headers.push(line);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let injected = {
        let mut s = state.lock().unwrap();
        let hit = match s.inject.as_mut() {
            Some(i) if i.count > 0 && i.method == method && path.contains(&i.path) => {
                i.count -= 1;
                Some((i.status, i.body.clone()))
            }
            _ => None,
        };
        s.seen.push((method.clone(), path.clone(), hit.is_some()));
        hit
    };
    let mut client = client;
    if let Some((status, body)) = injected {
        write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        client.flush()?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut head = request_line;
    for h in &headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
