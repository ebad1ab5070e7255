//! A minimal HTTP/1.1 client for the load generator: one keep-alive connection, one
//! request at a time, as LiteFS's Go client uses it. Requests are built as whole byte
//! strings (an upload with `Transfer-Encoding: chunked`, as Go sends a body of unknown
//! length) and written with one `write_all`; the reply is parsed just enough to time it and
//! check it: the status line, `Content-Length` or a chunked body, `Connection: close` and
//! the `Litefs-Hwm` header.
//!
//! It is not a general client: no redirects, no `100-continue`, no trailers kept, and a
//! reply without a length is read to the end of the connection.

use std::io::{Error, ErrorKind, Result};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply head accepted; anything longer is not a reply from our server.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Largest reply body accepted (a `GET /pos` of a large cluster stays far below).
const MAX_BODY_BYTES: usize = 64 << 20;
/// Chunk size of upload bodies: what Go's chunked writer emits per 4 KiB buffer flush.
const CHUNK_BYTES: usize = 4096;

/// A parsed reply.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `Litefs-Hwm` header, if present and text.
    pub hwm: Option<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The server asked to close the connection.
    pub close: bool,
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet consumed are `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
}

impl Connection {
    /// Connects, with Nagle off (requests go out in one write; replies must not wait).
    pub async fn connect(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buf: Vec::with_capacity(4096), pos: 0 })
    }

    /// Writes `request` (a whole request, head and body) and reads the reply.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Reply> {
        self.stream.write_all(request).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + i;
            }
            if self.buf.len() - self.pos > MAX_HEAD_BYTES {
                return Err(invalid("reply head too long"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[self.pos..head_end]).map_err(|_| invalid("reply head not text"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let (mut length, mut chunked, mut close, mut hwm) = (None, false, false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| invalid("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("litefs-hwm") {
                hwm = Some(value.to_string());
            }
        }
        self.pos = head_end + 4;
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if chunked {
            self.read_chunked().await?
        } else if let Some(length) = length {
            if length > MAX_BODY_BYTES {
                return Err(invalid("reply body too large"));
            }
            self.take(length).await?
        } else {
            close = true;
            self.read_to_end().await?
        };
        Ok(Reply { status, hwm, body, close })
    }

    /// Reads more bytes into the buffer; an end of stream is an error (a reply was due).
    async fn fill(&mut self) -> Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(8192);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        Ok(())
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.fill().await?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let line = std::str::from_utf8(&self.buf[self.pos..self.pos + i])
                    .map_err(|_| invalid("chunk line not text"))?
                    .to_string();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD_BYTES {
                return Err(invalid("chunk line too long"));
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, if any, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(invalid("reply body too large"));
            }
            body.extend_from_slice(&self.take(size).await?);
            if !self.line().await?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }

    async fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut body = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        self.stream.read_to_end(&mut body).await?;
        if body.len() > MAX_BODY_BYTES {
            return Err(invalid("reply body too large"));
        }
        Ok(body)
    }
}

fn invalid(what: &str) -> Error {
    Error::new(ErrorKind::InvalidData, what.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The headers LiteFS sends on every request (section 5.1 of the protocol): the
/// credential verbatim, the cluster ID, Go's defaults.
fn common_headers(out: &mut Vec<u8>, host: SocketAddr, authorization: &str) {
    use std::io::Write;
    let _ = write!(
        out,
        "Host: {host}\r\nUser-Agent: Go-http-client/1.1\r\nAuthorization: {authorization}\r\n\
         Litefs-Cluster-Id: LFSC0123456789ABCDEF\r\nAccept-Encoding: gzip\r\n"
    );
}

/// `GET /pos`.
pub fn get_pos_request(host: SocketAddr, authorization: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET /pos HTTP/1.1\r\n");
    common_headers(&mut out, host, authorization);
    out.extend_from_slice(b"\r\n");
    out
}

/// `POST /db/tx?db=DB` with `ltx` as a chunked body.
pub fn post_tx_request(host: SocketAddr, authorization: &str, db: &str, ltx: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(320 + ltx.len() + ltx.len().div_ceil(CHUNK_BYTES) * 8);
    let _ = write!(out, "POST /db/tx?db={db} HTTP/1.1\r\n");
    common_headers(&mut out, host, authorization);
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    for chunk in ltx.chunks(CHUNK_BYTES) {
        let _ = write!(out, "{:x}\r\n", chunk.len());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canned server: answers each request on one connection with the next reply.
    async fn serve_replies(replies: Vec<&'static [u8]>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            for reply in replies {
                let _ = stream.read(&mut buf).await.unwrap();
                stream.write_all(reply).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn replies_with_length_chunked_and_split_bodies_parse_on_one_connection() {
        let addr = serve_replies(vec![
            b"HTTP/1.1 200 OK\r\nLitefs-Hwm: 0000000000000004\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\nabcde",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let mut conn = Connection::connect(addr).await.unwrap();
        let request = post_tx_request(addr, "cluster c", "db", &[7u8; 5000]);
        let reply = conn.exchange(&request).await.unwrap();
        assert_eq!((reply.status, reply.hwm.as_deref(), reply.body.len()), (200, Some("0000000000000004"), 0));
        let reply = conn.exchange(&get_pos_request(addr, "cluster c")).await.unwrap();
        assert_eq!((reply.status, &reply.body[..]), (409, &b"abcde"[..]));
        let reply = conn.exchange(&get_pos_request(addr, "cluster c")).await.unwrap();
        assert_eq!((reply.status, &reply.body[..], reply.close), (200, &b"abcde"[..], false));
    }

    #[test]
    fn an_upload_is_framed_in_4_kib_chunks() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let request = post_tx_request(addr, "cluster c", "db", &[1u8; 5000]);
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("POST /db/tx?db=db HTTP/1.1\r\n"));
        assert!(text.contains("Transfer-Encoding: chunked\r\n\r\n1000\r\n"));
        assert!(text.contains("\r\n388\r\n"));
        assert!(text.ends_with("\r\n0\r\n\r\n"));
    }
}
