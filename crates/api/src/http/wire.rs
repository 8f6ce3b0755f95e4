//! Malformed HTTP, answered like every other error: the connection under actix-http's HTTP/1
//! dispatcher.
//!
//! actix-http answers three things itself, below any middleware: a request head it cannot parse
//! (400), a head over its limits — 128 KiB or 96 headers (431), and a first head that does not
//! arrive within `CLIENT_REQUEST_TIMEOUT` (408). Those responses are hard-wired in its dispatcher:
//! an empty body, no request id, no security headers, and the parse errors logged at ERROR
//! ("stream error: …"). Nothing in actix-http or actix-web lets an application change them (no
//! hook, no error handler), so this module takes them over one layer further down, on the byte
//! stream the dispatcher reads:
//!
//! - [`Guarded`] wraps each accepted TCP stream and runs a second copy of actix-http's own HTTP/1
//!   decoder ([`Codec`]) over the bytes it receives. The dispatcher is handed exactly the bytes
//!   that decoder consumed — complete heads and body chunks —, so whatever the dispatcher parses
//!   has already parsed here, with the same code and the same limits.
//! - When the decoder rejects a head (or one is too slow: the head deadline lives here, and
//!   actix-http's own is switched off), the dispatcher sees the end of the stream right after the
//!   last good request. It finishes the requests it has (in order, as HTTP/1.1 pipelining wants),
//!   then closes the connection; before closing, [`Guarded`] writes our answer: an RFC 9457
//!   problem (`bad_request`, `headers_too_large` or `request_timeout`) with a fresh `X-Request-Id`
//!   (also in the body), the security headers of every API response, `Cache-Control: no-store`
//!   and `Connection: close`. It logs one WARN line with the request id; actix-http never sees the
//!   error, so it logs nothing at ERROR.
//! - "Where the protocol still allows a body": a rejected request whose method is `HEAD` gets the
//!   same head without the body. A broken body (bad chunked encoding) is not answered here: its
//!   request is already in the app, whose body read fails and which answers it (400 problem).
//!
//! Not covered: HTTP/2 (not served; TLS ends at the proxy), and a client that leaves before the
//! answer is written. The head deadline applies to every request head from its first byte (and to
//! the first from the moment the connection opens), where actix-http timed only the first; an idle
//! keep-alive connection is still closed by actix-http, silently, after `KEEP_ALIVE`.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use actix_codec::Decoder as _;
use actix_http::{
    StatusCode,
    error::ParseError,
    h1::{Codec, Message, MessageType},
};
use actix_web::http::header::{self, HeaderMap};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    config::WireSettings,
    error::{PROBLEM_JSON, Problem},
    http::request_id,
};

/// Why a connection is refused, and how to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    /// The refused request is a `HEAD`: the answer has no body.
    head: bool,
}

enum State {
    /// Passing requests through.
    Open,
    /// The dispatcher gets end-of-stream (after the bytes already decoded); our answer, if any,
    /// is written when it shuts the connection down. `None`: the client closed, or a request in
    /// flight had a broken body (the app answers that one).
    Ending(Option<Refusal>),
    /// Writing the answer; then nothing more.
    Answering(bytes::Bytes),
    Done,
}

/// A connection whose malformed or late request heads get a problem answer (see the module docs).
pub struct Guarded<T> {
    io: T,
    peer: Option<SocketAddr>,
    settings: WireSettings,
    /// The shadow decoder: the same HTTP/1 decoder the dispatcher runs.
    codec: Codec,
    /// Received bytes the shadow decoder has not consumed yet (an incomplete head or chunk).
    undecoded: BytesMut,
    /// The same bytes as `undecoded`, plus those it consumed that the dispatcher has not read.
    received: BytesMut,
    /// The shadow decoder is inside a request body.
    in_body: bool,
    /// Running while a request head is awaited (from the connection's start, then from the first
    /// byte of each further head).
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    state: State,
}

impl<T> Guarded<T> {
    pub fn new(io: T, peer: Option<SocketAddr>, settings: WireSettings) -> Self {
        Self {
            io,
            peer,
            head_deadline: deadline(settings.head_timeout),
            settings,
            codec: Codec::new(actix_http::ServiceConfig::default()),
            undecoded: BytesMut::new(),
            received: BytesMut::new(),
            in_body: false,
            state: State::Open,
        }
    }

    /// Bytes the dispatcher may read: everything the shadow decoder has consumed.
    fn decoded_len(&self) -> usize {
        self.received.len() - self.undecoded.len()
    }

    /// Runs the shadow decoder over what has arrived; refuses the connection on a bad head.
    fn decode(&mut self) {
        loop {
            match self.codec.decode(&mut self.undecoded) {
                Ok(Some(Message::Item(_))) => {
                    self.head_deadline = None;
                    self.in_body = self.codec.message_type() != MessageType::None;
                }
                Ok(Some(Message::Chunk(None))) => self.in_body = false,
                Ok(Some(Message::Chunk(Some(_)))) => {}
                Ok(None) => break,
                Err(e) if self.in_body => {
                    // The request is already with the app: its body read fails, and it answers.
                    tracing::debug!(error = %e, "malformed request body; closing after the response");
                    self.state = State::Ending(None);
                    return;
                }
                Err(e) => {
                    let status = match e {
                        ParseError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    self.refuse(status, &e.to_string());
                    return;
                }
            }
        }
        // The first byte of a further head starts its deadline.
        if !self.in_body && !self.undecoded.is_empty() && self.head_deadline.is_none() {
            self.head_deadline = deadline(self.settings.head_timeout);
        }
    }

    fn refuse(&mut self, status: StatusCode, why: &str) {
        let head = self.undecoded.starts_with(b"HEAD ");
        tracing::warn!(
            http.status = status.as_u16(),
            peer = ?self.peer,
            error = why,
            "refused a malformed or late request head"
        );
        self.state = State::Ending(Some(Refusal { status, head }));
    }
}

fn deadline(after: Duration) -> Option<Pin<Box<tokio::time::Sleep>>> {
    (!after.is_zero()).then(|| Box::pin(tokio::time::sleep(after)))
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let ready = this.decoded_len();
            if ready > 0 {
                let n = ready.min(buf.remaining());
                buf.put_slice(&this.received[..n]);
                this.received.advance(n);
                return Poll::Ready(Ok(()));
            }
            if !matches!(this.state, State::Open) {
                return Poll::Ready(Ok(())); // end of stream for the dispatcher
            }
            if let Some(d) = this.head_deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                this.head_deadline = None;
                this.refuse(StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                continue;
            }
            let mut chunk = [0u8; 8 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let got = read.filled();
            if got.is_empty() {
                // The client closed its side: hand over what decoded, then the end.
                this.state = State::Ending(None);
                continue;
            }
            this.received.extend_from_slice(got);
            this.undecoded.extend_from_slice(got);
            this.decode();
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Ending(Some(refusal)) => {
                    let answer = answer(*refusal, this.settings.hsts);
                    this.state = State::Answering(answer);
                }
                State::Answering(answer) if !answer.is_empty() => {
                    let n = ready!(Pin::new(&mut this.io).poll_write(cx, answer))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    answer.advance(n);
                }
                State::Answering(_) => {
                    ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                    this.state = State::Done;
                }
                State::Open | State::Ending(None) | State::Done => {
                    return Pin::new(&mut this.io).poll_shutdown(cx);
                }
            }
        }
    }
}

/// The raw HTTP/1.1 response for a refused head: a problem with a fresh request id, the
/// security headers, `Connection: close`.
fn answer(refusal: Refusal, hsts: bool) -> bytes::Bytes {
    let id = request_id::fresh();
    let mut problem = request_id::sync_scope(id.clone(), || Problem::for_status(refusal.status));
    if refusal.status == StatusCode::BAD_REQUEST {
        problem.detail = "The request is not valid HTTP/1.1.".to_owned();
    }
    tracing::warn!(request.id = %id, http.status = refusal.status.as_u16(), "answered a refused request head");
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut headers = HeaderMap::new();
    crate::http::hardening::api_headers(&mut headers, hsts);
    let mut out = Vec::with_capacity(512 + body.len());
    let reason = refusal.status.canonical_reason().unwrap_or("Error");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", refusal.status.as_u16()).as_bytes());
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    for (name, value) in [
        (header::CONTENT_TYPE.as_str(), PROBLEM_JSON.to_owned()),
        (header::CONTENT_LENGTH.as_str(), body.len().to_string()),
        (request_id::HEADER.as_str(), id),
        (header::CONNECTION.as_str(), "close".to_owned()),
        (header::DATE.as_str(), date.to_string()),
    ] {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !refusal.head {
        out.extend_from_slice(&body);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_a_problem_with_an_id_and_the_security_headers() {
        let raw = answer(
            Refusal {
                status: StatusCode::BAD_REQUEST,
                head: false,
            },
            true,
        );
        let text = String::from_utf8(raw.to_vec()).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(problem["code"], "bad_request");
        let id = problem["request_id"].as_str().unwrap_or_default();
        assert!(
            head.contains(&format!("x-request-id: {id}\r\n")) && id.len() == 36,
            "{head}"
        );
        for needle in [
            "content-type: application/problem+json",
            &format!("content-length: {}", body.len()),
            "connection: close",
            "x-content-type-options: nosniff",
            "content-security-policy: default-src 'none'",
            "cache-control: no-store",
            "strict-transport-security: max-age",
        ] {
            assert!(head.contains(needle), "{needle} missing from {head}");
        }
        let head_only = answer(
            Refusal {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                head: true,
            },
            false,
        );
        let text = String::from_utf8(head_only.to_vec()).unwrap_or_default();
        assert!(
            text.ends_with("\r\n\r\n") && text.contains("content-length: "),
            "{text}"
        );
        assert!(!text.contains("strict-transport-security"));
    }
}
