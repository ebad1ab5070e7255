//! A small HTTP/1.1 client over a plain TCP stream, for tests that need control over the
//! bytes on the wire: chunked bodies, bodies cut short, clients that stall or disconnect.
//! Every request sends `Connection: close` and reads the reply to the end.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// How a request body goes out.
pub enum Body<'a> {
    /// No body.
    None,
    /// With Content-Length.
    Fixed(&'a [u8]),
    /// Chunked, in pieces of this many bytes (as LiteFS sends uploads).
    Chunked(&'a [u8], usize),
    /// Chunked, but the connection is shut after this many bytes of the body, without the
    /// final chunk.
    ChunkedCut(&'a [u8], usize),
}

/// A parsed reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request and reads the reply. `None` when the server closed the connection
/// without replying.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) -> Option<Reply> {
    request_on(TcpStream::connect(addr).expect("connect"), addr, method, path, headers, body)
}

/// [`request`] from a given local address (any of 127.0.0.0/8 reaches a loopback server),
/// so that a test can play several clients.
pub fn request_from(
    source: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> Option<Reply> {
    request_on(connect_from(source, addr), addr, method, path, headers, body)
}

/// A connection to `addr` from `source` (port chosen by the kernel).
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    runtime.block_on(async {
        let socket = match source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket.bind(SocketAddr::new(source, 0)).expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect").into_std().expect("std stream");
        stream.set_nonblocking(false).expect("blocking");
        stream
    })
}

/// Sends `raw` bytes as they are (a hand-made request, possibly broken), shuts the
/// sending side, and reads the reply. `None` when the server closed without replying.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let _ = stream.write_all(raw);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    parse(&reply)
}

fn request_on(
    mut stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> Option<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &body {
        Body::None => {}
        Body::Fixed(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        Body::Chunked(..) | Body::ChunkedCut(..) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // A server may answer (and close) before the whole body is sent, e.g. when it refuses
    // a body that is too large: a failed write still leaves its reply to read.
    match body {
        Body::None => {}
        Body::Fixed(bytes) => {
            let _ = stream.write_all(bytes);
        }
        Body::Chunked(bytes, size) => {
            let _ = (|| -> std::io::Result<()> {
                for chunk in bytes.chunks(size.max(1)) {
                    write!(stream, "{:x}\r\n", chunk.len())?;
                    stream.write_all(chunk)?;
                    stream.write_all(b"\r\n")?;
                }
                stream.write_all(b"0\r\n\r\n")
            })();
        }
        Body::ChunkedCut(bytes, at) => {
            let part = &bytes[..at.min(bytes.len())];
            write!(stream, "{:x}\r\n", bytes.len()).expect("chunk size");
            stream.write_all(part).expect("part of a chunk");
            stream.flush().expect("flush");
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).expect("head is text");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Some(Reply { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else { return out };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("size").trim(), 16).expect("hex size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size.min(rest.len())]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
}
