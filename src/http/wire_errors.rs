//! Errors hyper answers itself, below the router, made the contract's JSON.
//!
//! When a request head cannot be parsed (400), its URI is longer than hyper
//! accepts (414) or its head outgrows the buffer (431), hyper writes a
//! canned response with an empty body and closes the connection; it offers
//! no hook to change it. This wrapper around the connection's socket
//! recognises exactly those responses on their way out (a 400, 414 or 431
//! with `content-length: 0`: every response of ours carries a JSON body)
//! and writes the JSON error in their place. Every other write passes
//! through untouched after a prefix comparison.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};

/// A socket whose hyper-made error responses are rewritten as JSON.
pub struct JsonWireErrors<S> {
    inner: S,
    /// A replacement being written, and how far.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonWireErrors<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, pending: None }
    }
}

/// The JSON response that replaces `head`, if it is one of hyper's own.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 4")?;
    let (code, message) = match rest.get(..2)? {
        b"00" => (
            ErrorCode::BadRequest,
            "the request could not be parsed as HTTP/1.1",
        ),
        b"14" => (
            ErrorCode::UriTooLong,
            "the URI is too long; send the query as a POST body instead of `?q=`",
        ),
        b"31" => (
            ErrorCode::HeadersTooLarge,
            "the request line and headers are larger than server.max_header_bytes (a long `?q=`? send the query as a POST body)",
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = &head[..end + 2];
    // Only a response without a body, as hyper makes them; every response
    // the router sends for these statuses has one.
    let empty = headers
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !empty || head.len() != end + 4 {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.as_str(),
            message: message.into(),
            field: None,
        },
    })
    .ok()?;
    let status = code.status();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    Some(response)
}

impl<S: AsyncWrite + Unpin> JsonWireErrors<S> {
    /// Writes the pending replacement; `Ready(Ok(()))` once all of it is out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonWireErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonWireErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match replacement(buf) {
                Some(response) => this.pending = Some((response, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // hyper retries the same buffer after `Pending`; it is consumed
        // (as far as hyper knows) once the replacement is out.
        this.drain(cx).map_ok(|()| buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's canned responses are one buffer; anything else goes
        // through as it came.
        let single = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        if self.pending.is_some() || (single && bufs.iter().any(|b| b.starts_with(b"HTTP/1.1 4"))) {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_errors_become_json_and_nothing_else_changes() {
        let canned = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 16:00:00 GMT\r\n\r\n";
        let json = String::from_utf8(replacement(canned).expect("replaced")).expect("utf8");
        assert!(json.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"));
        assert!(json.ends_with(r#"{"error":{"code":"uri_too_long","message":"the URI is too long; send the query as a POST body instead of `?q=`"}}"#));
        let head_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(head_431).is_some());
        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 64\r\n\r\n{\"error\":{}}"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"data\":[]}",
        ] {
            assert!(
                replacement(untouched).is_none(),
                "{}",
                String::from_utf8_lossy(untouched)
            );
        }
    }
}
