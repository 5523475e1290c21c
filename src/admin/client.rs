//! A minimal blocking HTTP/1.1 client for the CLI's requests to the running
//! daemon's admin API: one request per connection, JSON answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};

const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: the presentations listing of a store with a
/// hundred thousand titles fits.
const MAX_RESPONSE: u64 = 64 << 20;

/// A parsed answer: status and JSON body (`null` when there was none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    /// The `error` message of an error answer, or the status.
    pub fn message(&self) -> String {
        self.body
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| format!("HTTP {}", self.status), str::to_owned)
    }
}

/// Sends `method path` to the admin API at `addr`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot reach the admin API at {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("cannot send to the admin API at {addr}"))?;
    read_answer(stream, MAX_RESPONSE)
        .with_context(|| format!("no usable answer from the admin API at {addr}"))
}

/// Reads a whole answer, refusing one of `limit` bytes or more (rather
/// than parsing a truncated one).
fn read_answer(stream: impl Read, limit: u64) -> anyhow::Result<Answer> {
    let mut raw = Vec::new();
    stream.take(limit).read_to_end(&mut raw)?;
    if raw.len() as u64 >= limit {
        bail!("the answer is {limit} bytes or more");
    }
    parse(&raw)
}

/// Parses a `Connection: close` response with a `Content-Length` body.
fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the admin API sent an incomplete response");
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("the admin API sent a bad status line: {status_line:?}"))?;
    let body = &raw[split + 4..];
    let body = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).context("the admin API sent a body that is not JSON")?
    };
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::{parse, read_answer};

    #[test]
    fn parses_status_and_json() {
        let answer = parse(
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"error\":\"no\"}",
        )
        .expect("parses");
        assert_eq!(answer.status, 409);
        assert_eq!(answer.message(), "no");
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn oversized_answers_are_refused_not_truncated() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(read_answer(&answer[..], 100).is_ok());
        let err = read_answer(&answer[..], 40).expect_err("too long");
        assert!(err.to_string().contains("40 bytes or more"), "{err}");
        let endless = std::io::Read::chain(&answer[..], std::io::repeat(b' '));
        assert!(read_answer(endless, 1000).is_err());
    }
}
