//! A raw HTTP/2 client for the tests: it writes frames byte for byte, including the ones no
//! library would send, and reads what the server answers frame by frame (RFC 9113 §4, §6).
//!
//! Request header blocks are HPACK (RFC 7541) without Huffman coding or the dynamic table,
//! except where a test builds its own; response blocks are read only as far as their
//! `:status`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (§6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (§7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// Settings identifiers (§6.5.2).
pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
}

/// The name of error code `code`.
pub fn code_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("0x{other:x}"),
    };
    name.to_owned()
}

// ---------------------------------------------------------------------------------------------
// Writing

/// One frame: the 9-byte header (§4.1) and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `pairs`.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in pairs {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// A WINDOW_UPDATE of `increment` (the reserved bit cleared) on `stream`.
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An RST_STREAM of `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A PING with `data`.
pub fn ping(data: [u8; 8]) -> Vec<u8> {
    frame(kind::PING, 0, 0, &data)
}

/// A HEADERS frame carrying `block`.
pub fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(kind::HEADERS, flags, stream, block)
}

/// A whole GET of `path` on `stream`: one HEADERS frame ending the header block and the stream.
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    headers(
        stream,
        flag::END_HEADERS | flag::END_STREAM,
        &request_block("GET", path, &[]),
    )
}

/// An HPACK header block for a request: `:method`, `:scheme http`, `:path`, `:authority
/// localhost`, then `extra` as literals without indexing.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    match method {
        // Static table entries 2 and 3.
        "GET" => block.push(0x82),
        "POST" => block.push(0x83),
        other => literal_indexed_name(&mut block, 2, other),
    }
    block.push(0x86); // :scheme http (static entry 6)
    literal_indexed_name(&mut block, 4, path);
    literal_indexed_name(&mut block, 1, "localhost");
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    block
}

/// A literal field without indexing whose name is static table entry `index` (< 15).
pub fn literal_indexed_name(block: &mut Vec<u8>, index: u8, value: &str) {
    block.push(index);
    string(block, value.as_bytes());
}

/// A literal field without indexing, new name.
pub fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    string(block, name.as_bytes());
    string(block, value.as_bytes());
}

/// An HPACK string literal, not Huffman-coded.
pub fn string(block: &mut Vec<u8>, s: &[u8]) {
    integer(block, s.len(), 7, 0);
    block.extend_from_slice(s);
}

/// An HPACK integer with an `prefix`-bit prefix, `high` holding the bits above it (§5.1).
pub fn integer(block: &mut Vec<u8>, value: usize, prefix: u8, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        block.push(high | value as u8);
        return;
    }
    block.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A frame the server sent.
#[derive(Clone)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The `:status` of a response HEADERS frame, when its block starts with one this reader
    /// can decode (a static table entry, or a literal value, Huffman-coded or not).
    pub fn status(&self) -> Option<u16> {
        let mut block = &self.payload[..];
        if self.flags & flag::PADDED != 0 {
            let pad = usize::from(*block.first()?);
            block = block.get(1..block.len().checked_sub(pad)?)?;
        }
        if self.flags & flag::PRIORITY != 0 {
            block = block.get(5..)?;
        }
        let first = *block.first()?;
        let status = match first {
            0x88 => 200,
            0x89 => 204,
            0x8a => 206,
            0x8b => 304,
            0x8c => 400,
            0x8d => 404,
            0x8e => 500,
            // A literal whose name is one of the :status entries (8 to 14), with or without
            // indexing.
            b if (b & 0xc0 == 0x40 && (8..=14).contains(&(b & 0x3f)))
                || (b & 0xf0 <= 0x10 && (8..=14).contains(&(b & 0x0f))) =>
            {
                let len = usize::from(*block.get(1)? & 0x7f);
                let value = block.get(2..2 + len)?;
                let digits = if block[1] & 0x80 != 0 {
                    huffman_digits(value)?
                } else {
                    String::from_utf8(value.to_vec()).ok()?
                };
                return digits.parse().ok();
            }
            _ => return None,
        };
        Some(status)
    }
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: '0' to '2' take 5
/// bits, '3' to '9' take 6).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    while i + 5 <= bits.len() {
        let five = bits[i..i + 5].iter().fold(0u8, |acc, b| acc << 1 | b);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            i += 5;
            continue;
        }
        if i + 6 > bits.len() {
            break;
        }
        let six = bits[i..i + 6].iter().fold(0u8, |acc, b| acc << 1 | b);
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19)));
            i += 6;
        } else {
            break;
        }
    }
    // What remains is padding: the most significant bits of EOS, all ones.
    bits[i..].iter().all(|b| *b == 1).then_some(out)
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            kind::DATA => "DATA",
            kind::HEADERS => "HEADERS",
            kind::PRIORITY => "PRIORITY",
            kind::RST_STREAM => "RST_STREAM",
            kind::SETTINGS => "SETTINGS",
            kind::PUSH_PROMISE => "PUSH_PROMISE",
            kind::PING => "PING",
            kind::GOAWAY => "GOAWAY",
            kind::WINDOW_UPDATE => "WINDOW_UPDATE",
            kind::CONTINUATION => "CONTINUATION",
            _ => "UNKNOWN",
        };
        write!(
            f,
            "{name}(stream {}, flags 0x{:x}, {} bytes)",
            self.stream,
            self.flags,
            self.payload.len()
        )
    }
}

/// A GOAWAY the server sent.
#[derive(Clone, Debug)]
pub struct GoAway {
    /// The last stream it processed or might.
    pub last_stream: u32,
    /// The error code.
    pub code: u32,
    /// Its debug data, as text.
    pub debug: String,
}

/// What the server did on one connection, as far as it was read.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The last GOAWAY.
    pub goaway: Option<GoAway>,
    /// RST_STREAM frames: stream and error code.
    pub resets: Vec<(u32, u32)>,
    /// Response HEADERS: stream and status, where it could be decoded.
    pub answers: Vec<(u32, Option<u16>)>,
    /// Streams whose response ended.
    pub ended: Vec<u32>,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// Frames read.
    pub frames: usize,
}

impl Outcome {
    /// Takes in `frame`.
    fn record(&mut self, frame: &Frame) {
        self.frames += 1;
        match frame.kind {
            kind::GOAWAY => {
                self.goaway = Some(GoAway {
                    last_stream: frame.u32_at(0).unwrap_or(0) & 0x7fff_ffff,
                    code: frame.u32_at(4).unwrap_or(u32::MAX),
                    debug: String::from_utf8_lossy(frame.payload.get(8..).unwrap_or_default())
                        .into_owned(),
                })
            }
            kind::RST_STREAM => self
                .resets
                .push((frame.stream, frame.u32_at(0).unwrap_or(u32::MAX))),
            // The first HEADERS of a stream is its response head; a later one, trailers.
            kind::HEADERS
                if frame.stream != 0 && !self.answers.iter().any(|(s, _)| *s == frame.stream) =>
            {
                self.answers.push((frame.stream, frame.status()))
            }
            _ => {}
        }
        if matches!(frame.kind, kind::DATA | kind::HEADERS) && frame.flags & flag::END_STREAM != 0 {
            self.ended.push(frame.stream);
        }
    }

    /// The GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.as_ref().map(|g| g.code)
    }

    /// The code `stream` was reset with.
    pub fn reset_of(&self, stream: u32) -> Option<u32> {
        self.resets
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, c)| *c)
    }

    /// The status `stream` was answered with.
    pub fn status_of(&self, stream: u32) -> Option<u16> {
        self.answers
            .iter()
            .find(|(s, _)| *s == stream)
            .and_then(|(_, status)| *status)
    }

    /// One line: GOAWAY, resets, answers, closed.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.goaway {
            parts.push(format!(
                "GOAWAY {} (last stream {}{})",
                code_name(g.code),
                g.last_stream,
                if g.debug.is_empty() {
                    String::new()
                } else {
                    format!(", {:?}", g.debug)
                }
            ));
        }
        if !self.resets.is_empty() {
            let mut codes: Vec<String> = self.resets.iter().map(|(_, c)| code_name(*c)).collect();
            codes.dedup();
            parts.push(format!(
                "{} RST_STREAM ({})",
                self.resets.len(),
                codes.join(", ")
            ));
        }
        if !self.answers.is_empty() {
            let first: Vec<String> = self
                .answers
                .iter()
                .take(3)
                .map(|(s, st)| format!("{s}: {}", st.map_or("?".into(), |x| x.to_string())))
                .collect();
            parts.push(format!(
                "{} answered ({}{})",
                self.answers.len(),
                first.join(", "),
                if self.answers.len() > 3 { ", …" } else { "" }
            ));
        }
        parts.push(if self.closed {
            "closed".to_owned()
        } else {
            "open".to_owned()
        });
        parts.join("; ")
    }
}

/// What reading a frame gave.
pub enum Event {
    /// A frame.
    Frame(Frame),
    /// The server closed the connection (end of stream or reset).
    Closed,
    /// Nothing before the deadline.
    Quiet,
}

/// The reading half of a raw connection.
pub struct FrameReader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    closed: bool,
}

impl FrameReader {
    /// The next frame, by `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Event {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let rest = self.buf.split_off(9 + len);
                    let raw = std::mem::replace(&mut self.buf, rest);
                    return Event::Frame(Frame {
                        kind: raw[3],
                        flags: raw[4],
                        stream: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff,
                        payload: raw[9..].to_vec(),
                    });
                }
            }
            if self.closed {
                return Event::Closed;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.half.read(&mut chunk)).await {
                Err(_) => return Event::Quiet,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads into `outcome` until `done` holds, the server closes, or `within` passes.
    pub async fn read_until(
        &mut self,
        outcome: &mut Outcome,
        within: Duration,
        done: impl Fn(&Outcome) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !done(outcome) {
            match self.next(deadline).await {
                Event::Frame(frame) => outcome.record(&frame),
                Event::Closed => {
                    outcome.closed = true;
                    return;
                }
                Event::Quiet => return,
            }
        }
    }

    /// Everything until the server closes or `within` passes.
    pub async fn outcome(&mut self, within: Duration) -> Outcome {
        let mut outcome = Outcome::default();
        self.read_until(&mut outcome, within, |_| false).await;
        outcome
    }
}

/// The writing half of a raw connection.
pub struct FrameWriter(OwnedWriteHalf);

impl FrameWriter {
    /// Writes `bytes`, within 5 s; panics when the proxy does not take them.
    pub async fn send(&mut self, bytes: &[u8]) {
        assert!(
            self.try_send(bytes, Duration::from_secs(5)).await,
            "the proxy did not take {} bytes within 5 s",
            bytes.len()
        );
    }

    /// Writes `bytes` within `within`; false when the proxy stopped reading or closed.
    pub async fn try_send(&mut self, bytes: &[u8], within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.0.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }
}

/// A raw HTTP/2 connection to the proxy.
pub struct H2 {
    /// What the server sends.
    pub reader: FrameReader,
    /// Where the frames go.
    pub writer: FrameWriter,
}

impl H2 {
    /// A bare TCP connection: nothing sent yet.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connecting to the proxy");
        let _ = stream.set_nodelay(true);
        let (half, writer) = stream.into_split();
        Self {
            reader: FrameReader {
                half,
                buf: Vec::new(),
                closed: false,
            },
            writer: FrameWriter(writer),
        }
    }

    /// A connection past the preface: the client's (with `pairs` in its SETTINGS) and the
    /// server's, whose SETTINGS it acknowledged.
    pub async fn open(addr: SocketAddr, pairs: &[(u16, u32)]) -> Self {
        let mut conn = Self::connect(addr).await;
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(pairs));
        conn.writer.send(&hello).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match conn.reader.next(deadline).await {
                Event::Frame(f) if f.kind == kind::SETTINGS && f.flags & flag::ACK == 0 => break,
                Event::Frame(_) => {}
                Event::Closed => panic!("the proxy closed the connection during the preface"),
                Event::Quiet => panic!("no SETTINGS from the proxy within 5 s"),
            }
        }
        conn.writer
            .send(&frame(kind::SETTINGS, flag::ACK, 0, &[]))
            .await;
        conn
    }
}

#[test]
fn the_status_reader_decodes_huffman_coded_digits() {
    // RFC 7541 Appendix B: "503" is 011011 00000 011001, "404" 011010 00000 011010, each
    // padded with ones.
    assert_eq!(huffman_digits(&[0x6c, 0x0c, 0xff]).as_deref(), Some("503"));
    assert_eq!(huffman_digits(&[0x68, 0x0d, 0x7f]).as_deref(), Some("404"));
    assert_eq!(
        huffman_digits(&[0x6c, 0x0c, 0x00]),
        None,
        "padding must be ones"
    );
}
