//! Loopback HTTP/1.1 servers for tests: an echo upstream that answers every request with what
//! reached it, as JSON, and a [`MockServer`] with programmable answers per path (a client
//! registry, a JWKS endpoint, an introspection endpoint) that can also fail on demand.

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// A running echo server. Stops accepting when dropped.
pub struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Starts an echo server on 127.0.0.1 and a free port.
    pub fn start() -> Upstream {
        Upstream::start_on(0)
    }

    /// Starts an echo server on 127.0.0.1:`port` (0: a free port).
    pub fn start_on(port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let h = hits.clone();
        let handler = Arc::new(move |req: &Received| {
            h.fetch_add(1, Ordering::SeqCst);
            let echo = json!({
                "method": req.method,
                "path": req.path,
                "headers": req.headers,
                "body": String::from_utf8_lossy(&req.body),
            });
            Answer::json(200, echo.to_string()).header("x-upstream", "echo")
        });
        accept_loop(listener, stop.clone(), handler);
        Upstream { addr, hits, stop }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A request as a test server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercase, repeated headers joined with `,`.
    pub headers: Map<String, Value>,
    /// Body.
    pub body: Vec<u8>,
}

/// What a test server answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// How long the server waits before answering (a slow peer).
    pub delay: Duration,
    /// Only this many bytes of the response (head included) are written before the connection
    /// is closed (a peer that resets mid-response).
    pub cut_after: Option<usize>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
            cut_after: None,
        }
    }

    /// Answers after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Writes only the first `bytes` bytes of the response, then closes the connection.
    pub fn cut_after(mut self, bytes: usize) -> Answer {
        self.cut_after = Some(bytes);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Received) -> Answer + Send + Sync>;

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, handler: Handler) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let handler = handler.clone();
            thread::spawn(move || serve(conn, &*handler));
        }
    });
}

/// Serves one keep-alive connection: parses HTTP/1.1 requests (content-length or chunked
/// bodies) and answers each with `handler`. A handler answer with status 0 closes the
/// connection without answering (a failed server); [`Answer::delayed`] and
/// [`Answer::cut_after`] make a slow server and one that resets mid-response.
fn serve(conn: TcpStream, handler: &(dyn Fn(&Received) -> Answer + Send + Sync)) {
    // The head and the body are written separately: without TCP_NODELAY, Nagle's algorithm
    // holds the body until the peer's delayed ACK (about 40 ms per keep-alive request).
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = write_half;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut headers = Map::new();
        let mut content_length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            }
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            let merged = match headers.get(&name) {
                Some(Value::String(old)) => format!("{old},{value}"),
                _ => value,
            };
            headers.insert(name, Value::String(merged));
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if n == 0 {
                    // Trailers end with an empty line.
                    loop {
                        let mut t = String::new();
                        if reader.read_line(&mut t).unwrap_or(0) == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if content_length > 0 {
            body.resize(content_length, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let answer = handler(&Received {
            method,
            path,
            headers,
            body,
        });
        if !answer.delay.is_zero() {
            thread::sleep(answer.delay);
        }
        if answer.status == 0 {
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (n, v) in &answer.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if let Some(cut) = answer.cut_after {
            let mut whole = head.into_bytes();
            whole.extend_from_slice(&answer.body);
            let _ = writer.write_all(&whole[..cut.min(whole.len())]);
            return;
        }
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer.body).is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct MockState {
    routes: HashMap<String, Answer>,
    hits: HashMap<String, usize>,
    down: bool,
}

/// A server with programmable answers per path (the path without its query), counting hits.
/// Unknown paths get 404.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
    stop: Arc<AtomicBool>,
}

impl MockServer {
    /// Starts on 127.0.0.1 and a free port.
    pub fn start() -> MockServer {
        MockServer::start_on(0)
    }

    /// Starts on 127.0.0.1:`port` (0: a free port), e.g. a peer coming back on the port a
    /// cluster points at.
    pub fn start_on(port: u16) -> MockServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind mock server");
        let addr = listener.local_addr().expect("mock server address");
        let state = Arc::new(Mutex::new(MockState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let st = state.clone();
        let handler: Handler = Arc::new(move |req: &Received| {
            let mut s = st.lock().expect("mock state");
            let path = req.path.split('?').next().unwrap_or_default().to_owned();
            *s.hits.entry(path.clone()).or_default() += 1;
            if s.down {
                return Answer::json(0, "");
            }
            s.routes
                .get(&path)
                .cloned()
                .unwrap_or_else(|| Answer::json(404, r#"{"error":"not found"}"#))
        });
        accept_loop(listener, stop.clone(), handler);
        MockServer { addr, state, stop }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers `path` with `status` and a JSON `body` from now on.
    pub fn respond(&self, path: &str, status: u16, body: impl Into<Vec<u8>>) {
        self.respond_with(path, Answer::json(status, body));
    }

    /// Answers `path` with `answer` from now on.
    pub fn respond_with(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .expect("mock state")
            .routes
            .insert(path.into(), answer);
    }

    /// Requests received for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .expect("mock state")
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// While down, every connection is closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("mock state").down = down;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}
