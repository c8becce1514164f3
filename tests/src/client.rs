//! HTTP clients for tests: a raw HTTP/1.1 client (any request bytes, any 127.0.0.0/8 source
//! address), an HTTP/2 client (curl with prior knowledge, also from any source address), and
//! the curl runner HTTPS requests use (`tls::https`).

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A request to send through the gateway.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (besides `host`, `content-length` and `connection`, which the clients add).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Source address to connect from (default: loopback of the target's family).
    pub source: Option<IpAddr>,
}

impl Request {
    /// A GET of `path`.
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// A request with any method.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            source: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Connects from this source address (any 127.0.0.0/8 address works on Linux loopback).
    pub fn from(mut self, source: &str) -> Request {
        self.source = Some(source.parse().expect("source address"));
        self
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// For a response from the echo upstream: the value of a header the upstream received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    if let Some(src) = source {
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok(stream)
}

/// Sends one HTTP/1.1 request on a new connection and reads the whole response.
pub fn http1(target: SocketAddr, req: &Request) -> Response {
    let mut stream = connect(target, req.source).expect("connect to Envoy");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\n",
        req.method, req.path
    );
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("content-length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("send request head");
    stream.write_all(&req.body).expect("send request body");
    let raw = read_response(&mut stream, req.method == "HEAD");
    parse_http1(&raw)
}

/// Reads one response: up to its `content-length`, the end of its chunked body, or the end of
/// the connection. Stopping at the message end matters: after a local reply Envoy waits
/// `delayed_close_timeout` (1 s) before closing the connection.
fn read_response(stream: &mut TcpStream, head_only: bool) -> Vec<u8> {
    try_read_response(stream, head_only).unwrap_or_else(|e| panic!("read response: {e}"))
}

fn try_read_response(stream: &mut TcpStream, head_only: bool) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = message_end(&raw, head_only) {
            raw.truncate(end);
            return Ok(raw);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One HTTP/1.1 keep-alive connection for load (the soak): requests go one after another on
/// the same connection, which is reopened when the server closed it. Failures are returned,
/// never panics, so a load generator can count them.
pub struct Connection {
    target: SocketAddr,
    stream: Option<TcpStream>,
}

impl Connection {
    /// A connection to `target`, opened on the first request.
    pub fn new(target: SocketAddr) -> Connection {
        Connection {
            target,
            stream: None,
        }
    }

    /// Sends `req` (its `source` applies when the connection is (re)opened) and reads the
    /// whole response.
    pub fn send(&mut self, req: &Request) -> std::io::Result<Response> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => connect(self.target, req.source)?,
        };
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: gateway.test\r\n",
            req.method, req.path
        );
        for (n, v) in &req.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("content-length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(&req.body);
        stream.write_all(&message)?;
        let raw = try_read_response(&mut stream, req.method == "HEAD")?;
        if message_end(&raw, req.method == "HEAD").is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("incomplete response ({} bytes)", raw.len()),
            ));
        }
        let response = parse_http1(&raw);
        let closing = response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !closing {
            self.stream = Some(stream);
        }
        Ok(response)
    }
}

/// Where the response in `raw` ends, once it is complete.
fn message_end(raw: &[u8], head_only: bool) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(head_end);
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (raw.len() >= head_end + len).then_some(head_end + len);
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let body = &raw[head_end..];
        return body
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .filter(|&p| p == 0 || body[..p].ends_with(b"\r\n"))
            .map(|p| head_end + p + 5);
    }
    // Neither: the body ends with the connection.
    None
}

/// Parses a raw HTTP/1.1 response (content-length, chunked or connection-delimited body).
pub(crate) fn parse_http1(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&data[..eol]);
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if n == 0 || data.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + n]);
        data = &data[(eol + 4 + n).min(data.len())..];
    }
    out
}

/// Sends one request over HTTP/2 (cleartext, prior knowledge) with curl.
pub fn http2(target: SocketAddr, req: &Request) -> Response {
    let host = match target.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("http://{host}:{}{}", target.port(), req.path);
    let (version, response) =
        curl(&url, req, &["--http2-prior-knowledge".as_ref()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version, "HTTP/2", "not an HTTP/2 response");
    response
}

/// Sends one request to `url` with curl, `args` choosing the protocol and TLS settings. Returns
/// the response's HTTP version (`HTTP/1.1`, `HTTP/2`) and the response, or curl's error (e.g. a
/// failed TLS handshake).
pub fn curl(
    url: &str,
    req: &Request,
    args: &[&std::ffi::OsStr],
) -> Result<(String, Response), String> {
    let dir = crate::scratch_dir("curl");
    let (head_file, body_file) = (dir.join("head"), dir.join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "15", "-X", &req.method])
        .args(args)
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file);
    if let Some(src) = req.source {
        cmd.args(["--interface", &src.to_string()]);
    }
    for (n, v) in &req.headers {
        cmd.args(["-H", &format!("{n}: {v}")]);
    }
    if !req.body.is_empty() {
        let body_in = dir.join("body-in");
        std::fs::write(&body_in, &req.body).expect("write request body");
        cmd.arg("--data-binary")
            .arg(format!("@{}", body_in.display()));
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .expect("run curl (install it with `make tools`)");
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "curl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let head = std::fs::read_to_string(&head_file).expect("read response head");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default().to_owned();
    let status = words
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = std::fs::read(&body_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((
        version,
        Response {
            status,
            headers,
            body,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_response_without_waiting_for_the_connection() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA";
        assert_eq!(message_end(full, false), Some(full.len() - 5));
        assert_eq!(message_end(&full[..20], false), None);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab0\r\n0\r\n\r\n";
        assert_eq!(message_end(chunked, false), Some(chunked.len()));
        assert_eq!(message_end(&chunked[..chunked.len() - 2], false), None);
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(message_end(no_body, false), Some(no_body.len()));
        let close_delimited = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(message_end(close_delimited, false), None);
        assert_eq!(message_end(full, true), Some(full.len() - 7));
    }

    #[test]
    fn parses_content_length_and_chunked_responses() {
        let r = parse_http1(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: a/b\r\ncontent-length: 2\r\n\r\nok",
        );
        assert_eq!(
            (r.status, r.header("content-type"), r.text().as_str()),
            (403, Some("a/b"), "ok")
        );
        let r = parse_http1(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!(r.text(), "abcde");
    }
}
