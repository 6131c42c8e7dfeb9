//! The malformed-request battery: HTTP/1.1 requests written byte for byte, each with what Weir
//! must do with it and why, and the one raw exchange that sends them.
//!
//! Two programs use this file, so that they judge the same bytes the same way: the data-plane
//! test `battery` (`dataplane/tests/proxy/battery.rs`) asserts Weir does what each case says,
//! and the benchmark scenario `bench/run battery` (`bench/src/battery.rs`, which includes this
//! file with `#[path]`) sends every case to Weir, HAProxy and NGINX and prints the table in
//! `docs/malformed-requests.md`. It depends on `std` and `serde_json` only, which both have.
//!
//! Every request is sent to a `weir-echo` target behind the proxy: `/headers` answers a JSON
//! report of the request the target received, `/echo` answers the body it read, and
//! `/delay/MS` answers after MS milliseconds without reading the body (so a proxy's own answer
//! to a body that turns out malformed cannot lose a race with the target's).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One request of the battery.
pub struct Case {
    /// Short unique name, used in test output and as the table's first column.
    pub name: &'static str,
    /// What part of the request it is about.
    pub group: Group,
    /// The exact bytes sent.
    pub request: Vec<u8>,
    /// What Weir must do with it.
    pub expect: Expect,
    /// Why: the rule (with its RFC section) or the attack it stands for.
    pub why: &'static str,
}

/// What part of a request a case is about: the table's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Method, target and version.
    RequestLine,
    /// Content-Length, Transfer-Encoding and chunked bodies: where one request ends.
    Framing,
    /// Field names, values and line syntax.
    Headers,
    /// `Host` and the authority of absolute-form targets.
    Host,
    /// Methods a reverse proxy should not pass on.
    Methods,
    /// `Expect`, `Upgrade` and `Connection`.
    Negotiation,
}

impl Group {
    /// Every group, in table order.
    pub const ALL: [Group; 6] = [
        Group::RequestLine,
        Group::Framing,
        Group::Headers,
        Group::Host,
        Group::Methods,
        Group::Negotiation,
    ];

    /// The section title.
    pub fn title(self) -> &'static str {
        match self {
            Group::RequestLine => "Request line",
            Group::Framing => "Framing and smuggling",
            Group::Headers => "Header syntax",
            Group::Host => "Host and authority",
            Group::Methods => "Methods",
            Group::Negotiation => "Expect, Upgrade, Connection",
        }
    }
}

/// What Weir must do with a case.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Answer this status itself, before anything is sent to a target.
    Refuse(u16),
    /// The head is well-formed and is forwarded as it arrives; the body turns out malformed
    /// while it streams. Answer this status itself; the target may have seen the head, and
    /// gets the request aborted, never a complete one.
    RefuseBody(u16),
    /// Forward it; the target's `/headers` report must show all of these.
    Forward(&'static [Seen]),
    /// Forward it; the target must read exactly this body (`/echo` sends it back).
    Echo(&'static str),
}

impl Expect {
    /// One cell of the table: `400`, `400 (body)`, `forward`.
    pub fn label(self) -> String {
        match self {
            Expect::Refuse(status) => status.to_string(),
            Expect::RefuseBody(status) => format!("{status} (body)"),
            Expect::Forward(_) | Expect::Echo(_) => "forward".to_owned(),
        }
    }
}

/// One fact about the request a target received, from `weir-echo`'s `/headers` report.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// The method.
    Method(&'static str),
    /// The request target (origin-form on HTTP/1.1).
    Uri(&'static str),
    /// The field arrived exactly once, with exactly this value (the name in lower case).
    Header(&'static str, &'static str),
    /// The field did not arrive.
    NoHeader(&'static str),
}

/// Host every well-formed case names.
const HOST: &str = "battery.example";

/// The whole battery, in table order.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    request_line(&mut cases);
    framing(&mut cases);
    headers(&mut cases);
    host(&mut cases);
    methods(&mut cases);
    negotiation(&mut cases);
    cases
}

fn case(
    cases: &mut Vec<Case>,
    group: Group,
    name: &'static str,
    request: impl Into<Vec<u8>>,
    expect: Expect,
    why: &'static str,
) {
    cases.push(Case {
        name,
        group,
        request: request.into(),
        expect,
        why,
    });
}

/// `METHOD TARGET HTTP/1.1`, `Host: battery.example`, then `fields` (each line without its
/// CRLF), the blank line and `body`.
fn req(line: &str, fields: &[&str], body: &str) -> Vec<u8> {
    let mut out = format!("{line}\r\nHost: {HOST}\r\n");
    for field in fields {
        out.push_str(field);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// `bytes` with no Host added: for cases about the Host field itself or about raw bytes.
fn raw(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

const GET_HEADERS: &[Seen] = &[Seen::Method("GET"), Seen::Uri("/headers")];

fn request_line(c: &mut Vec<Case>) {
    use Expect::{Forward, Refuse};
    let g = Group::RequestLine;
    case(
        c,
        g,
        "leading-empty-line",
        [b"\r\n".as_slice(), &req("GET /headers HTTP/1.1", &[], "")].concat(),
        Forward(GET_HEADERS),
        "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.",
    );
    case(
        c,
        g,
        "method-lowercase",
        req("get /headers HTTP/1.1", &[], ""),
        Refuse(400),
        "Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET, and a target that \
         folds case would serve what the proxy classified as an unknown method. Every \
         registered method is upper case; NGINX accepts only A-Z, `-` and `_`.",
    );
    case(
        c,
        g,
        "method-with-digit",
        req("GET2 /headers HTTP/1.1", &[], ""),
        Refuse(400),
        "A token, but no registered method has a digit; NGINX refuses it, so Weir keeps \
         methods to A-Z, `-` and `_` too.",
    );
    case(
        c,
        g,
        "method-not-a-token",
        req("GE(T /headers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9110 §9.1: method = token; `(` is a delimiter.",
    );
    case(
        c,
        g,
        "method-missing",
        req(" /headers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3: request-line = method SP request-target SP HTTP-version.",
    );
    case(
        c,
        g,
        "two-spaces-after-method",
        req("GET  /headers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3: exactly one SP; parsers that split on runs of whitespace and parsers \
         that do not read different targets.",
    );
    case(
        c,
        g,
        "tab-separators",
        req("GET\t/headers\tHTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3 allows a server to accept HTAB as separator, but nothing sends it and \
         not every parser agrees where the target ends.",
    );
    case(
        c,
        g,
        "space-in-target",
        req("GET /head ers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3.2: no whitespace in a request-target; a lenient parser takes `ers \
         HTTP/1.1` for something else.",
    );
    case(
        c,
        g,
        "trailing-space-after-version",
        req("GET /headers HTTP/1.1 ", &[], ""),
        Refuse(400),
        "RFC 9112 §3: the request line ends right after the version.",
    );
    case(
        c,
        g,
        "http-0.9-no-version",
        raw(b"GET /headers\r\n\r\n"),
        Refuse(400),
        "HTTP/0.9 has no headers, no Host and no status line in its answer: nothing a proxy \
         for HTTP/1.1 targets can route or forward.",
    );
    case(
        c,
        g,
        "http-0.9-version",
        req("GET /headers HTTP/0.9", &[], ""),
        Refuse(400),
        "No HTTP/0.9 request has a version; Weir speaks 1.0, 1.1 and 2. (hyper answers 400 \
         to every version it does not speak, where RFC 9110 §15.6.6 suggests 505.)",
    );
    case(
        c,
        g,
        "http-1.2",
        req("GET /headers HTTP/1.2", &[], ""),
        Refuse(400),
        "RFC 9110 §2.5 lets a server take 1.x as 1.1, or refuse it: hyper refuses, the safe \
         side of the rule.",
    );
    case(
        c,
        g,
        "http-2.0-over-http1",
        req("GET /headers HTTP/2.0", &[], ""),
        Refuse(400),
        "HTTP/2 has no text request line (RFC 9113 §3): an h2 request line over HTTP/1 is \
         neither protocol.",
    );
    case(
        c,
        g,
        "http-version-lowercase",
        req("GET /headers http/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §2.3: HTTP-name is case-sensitive `HTTP`.",
    );
    case(
        c,
        g,
        "http-version-two-digit-minor",
        req("GET /headers HTTP/1.10", &[], ""),
        Refuse(400),
        "RFC 9112 §2.3: HTTP-version = HTTP-name \"/\" DIGIT \".\" DIGIT.",
    );
    case(
        c,
        g,
        "http-1.0-without-host",
        raw(b"GET /headers HTTP/1.0\r\n\r\n"),
        Refuse(400),
        "Weir routes by host and sends HTTP/1.1 upstream, which needs a Host (RFC 9112 \
         §3.2); with none there is nothing to route by or send (Envoy refuses HTTP/1.0 \
         without a configured default host for the same reason).",
    );
    case(
        c,
        g,
        "http-1.0-with-host",
        req("GET /headers HTTP/1.0", &[], ""),
        Forward(&[
            Seen::Method("GET"),
            Seen::Uri("/headers"),
            Seen::Header("host", HOST),
        ]),
        "A well-formed HTTP/1.0 request; it is forwarded as HTTP/1.1.",
    );
    case(
        c,
        g,
        "absolute-form",
        req("GET http://battery.example/headers HTTP/1.1", &[], ""),
        Forward(&[Seen::Uri("/headers"), Seen::Header("host", HOST)]),
        "RFC 9112 §3.2.2: a server MUST accept the absolute form; the target gets the \
         origin form (§3.2.1).",
    );
    case(
        c,
        g,
        "absolute-form-host-mismatch",
        raw(b"GET http://other.example/headers HTTP/1.1\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §3.2.2 has the target's authority win over Host, but the two naming \
         different hosts is a request crafted for parsers that pick differently (HAProxy \
         refuses it, as RFC 9113 §8.3.1 asks of HTTP/2).",
    );
    case(
        c,
        g,
        "absolute-form-without-host",
        raw(b"GET http://battery.example/headers HTTP/1.1\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, \
         whatever the form of its target.",
    );
    case(
        c,
        g,
        "absolute-form-ftp-scheme",
        req("GET ftp://battery.example/headers HTTP/1.1", &[], ""),
        Refuse(400),
        "A reverse proxy for HTTP targets serves http and https URIs only.",
    );
    case(
        c,
        g,
        "absolute-form-userinfo",
        req("GET http://user@battery.example/headers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9110 §4.2.4: userinfo in an http URI is deprecated and a recipient SHOULD treat \
         it as an error; `a@b` reads as host b to one parser and a to another.",
    );
    case(
        c,
        g,
        "authority-form-for-get",
        req("GET battery.example:80 HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3.2.3: the authority form is for CONNECT only.",
    );
    case(
        c,
        g,
        "asterisk-form-for-get",
        req("GET * HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3.2.4: the asterisk form is for OPTIONS only.",
    );
    case(
        c,
        g,
        "asterisk-form-for-options",
        req("OPTIONS * HTTP/1.1", &[], ""),
        Refuse(400),
        "Valid (RFC 9112 §3.2.4) but it asks about the server itself, and Weir routes by \
         path: no route can serve `*`, and forwarding it as `OPTIONS /` would change its \
         meaning.",
    );
    case(
        c,
        g,
        "fragment-in-target",
        req("GET /headers#top HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 9112 §3.2: origin-form = absolute-path [ \"?\" query ]; a fragment is never sent, \
         and parsers disagree whether it ends the path (CVE-2023-45539 in HAProxy).",
    );
    case(
        c,
        g,
        "non-ascii-in-target",
        raw(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 3986 §2: a URI is ASCII; other bytes must be percent-encoded, or the target and \
         the proxy may decode them differently.",
    );
    case(
        c,
        g,
        "control-byte-in-target",
        raw(b"GET /head\x01ers HTTP/1.1\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 3986 §2: control bytes are not URI characters.",
    );
    case(
        c,
        g,
        "del-in-target",
        raw(b"GET /head\x7fers HTTP/1.1\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 3986 §2: DEL is not a URI character.",
    );
    case(
        c,
        g,
        "bad-percent-encoding-in-path",
        req("GET /headers%zz HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 3986 §2.1: pct-encoded = \"%\" HEXDIG HEXDIG; targets decode `%zz` in different \
         ways, or fail.",
    );
    case(
        c,
        g,
        "truncated-percent-encoding-in-path",
        req("GET /headers%2 HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 3986 §2.1: a `%` takes two hex digits.",
    );
    case(
        c,
        g,
        "encoded-nul-in-path",
        req("GET /headers%00.html HTTP/1.1", &[], ""),
        Refuse(400),
        "A NUL after decoding ends the path early for C-string targets (`/headers` to one, \
         `/headers.html` to the proxy).",
    );
    case(
        c,
        g,
        "dot-segment-in-path",
        req("GET /static/../headers HTTP/1.1", &[], ""),
        Refuse(400),
        "Weir routes by path prefix before any normalisation and the target resolves `..` \
         (RFC 3986 §5.2.4): `/static/../admin` would be routed as /static and served as \
         /admin. Clients resolve dot segments before sending.",
    );
    case(
        c,
        g,
        "encoded-dot-segment-in-path",
        req("GET /static/%2e%2e/headers HTTP/1.1", &[], ""),
        Refuse(400),
        "The same bypass, with the dots percent-encoded for targets that decode before \
         resolving.",
    );
    case(
        c,
        g,
        "backslash-in-path",
        req("GET /static\\..\\headers HTTP/1.1", &[], ""),
        Refuse(400),
        "RFC 3986 §2: `\\` is not a URI character, and Windows targets read it as `/`: the \
         dot-segment bypass again.",
    );
    case(
        c,
        g,
        "percent-in-query",
        req("GET /headers?discount=100% HTTP/1.1", &[], ""),
        Forward(&[Seen::Uri("/headers?discount=100%")]),
        "The query is the application's: Weir neither routes by it nor decodes it, and \
         browsers send a bare `%` there.",
    );
    case(
        c,
        g,
        "bare-cr-in-request-line",
        raw(b"GET /headers HTTP/1.1\rHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §2.2: a bare CR outside content is invalid; some parsers end the line \
         there and some do not.",
    );
}

fn framing(c: &mut Vec<Case>) {
    use Expect::{Echo, Refuse, RefuseBody};
    let g = Group::Framing;
    case(
        c,
        g,
        "content-length",
        req("POST /echo HTTP/1.1", &["Content-Length: 5"], "hello"),
        Echo("hello"),
        "The well-formed base case.",
    );
    case(
        c,
        g,
        "chunked",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Echo("hello"),
        "The well-formed base case.",
    );
    case(
        c,
        g,
        "cl-and-te",
        req(
            "POST /echo HTTP/1.1",
            &["Content-Length: 6", "Transfer-Encoding: chunked"],
            "0\r\n\r\nX",
        ),
        Refuse(400),
        "The CL.TE smuggling shape: RFC 9112 §6.1 lets a server refuse it, and it is a \
         front/back disagreement waiting to happen (NGINX refuses it too).",
    );
    case(
        c,
        g,
        "te-and-cl",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked", "Content-Length: 6"],
            "0\r\n\r\nX",
        ),
        Refuse(400),
        "The same with the fields the other way round (TE.CL).",
    );
    case(
        c,
        g,
        "te-chunked-uppercase",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: CHUNKED"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Echo("hello"),
        "RFC 9112 §7: transfer-coding names are case-insensitive.",
    );
    case(
        c,
        g,
        "te-gzip-chunked",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: gzip, chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "Valid (RFC 9112 §6.1), but Weir decodes only chunked and Transfer-Encoding is \
         hop-by-hop: forwarded, the gzip bytes would reach the target as plain content.",
    );
    case(
        c,
        g,
        "te-chunked-then-identity",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked, identity"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "RFC 9112 §6.3: chunked must be the final coding of a request, else the length is \
         unknown; `identity` is no longer a coding at all.",
    );
    case(
        c,
        g,
        "te-identity",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: identity", "Content-Length: 5"],
            "hello",
        ),
        Refuse(400),
        "Not a transfer coding since RFC 7230; parsers that skip it read the length from \
         Content-Length and others do not.",
    );
    case(
        c,
        g,
        "te-xchunked",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: xchunked", "Content-Length: 5"],
            "hello",
        ),
        Refuse(400),
        "Classic TE obfuscation: a parser matching `chunked` as a substring frames the body \
         differently from one that does not.",
    );
    case(
        c,
        g,
        "te-leading-comma",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: , chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "An empty list element (RFC 9110 §5.6.1 asks recipients to skip it) that exact-match \
         parsers do not skip: NGINX answers 501.",
    );
    case(
        c,
        g,
        "te-twice",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "Two lines are one list, `chunked, chunked` (RFC 9110 §5.3), and chunked must not be \
         applied twice (RFC 9112 §6.1).",
    );
    case(
        c,
        g,
        "te-in-http-1.0",
        req(
            "POST /echo HTTP/1.0",
            &["Transfer-Encoding: chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is a sign of a faulty or hostile \
         client; the framing MUST be treated as faulty.",
    );
    case(
        c,
        g,
        "te-obs-fold",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding:", " chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "RFC 9112 §5.2: obs-fold in a request MUST be refused or replaced; a folded TE is \
         invisible to parsers that do not unfold.",
    );
    case(
        c,
        g,
        "te-space-before-colon",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding : chunked"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Refuse(400),
        "RFC 9112 §5.1: a server MUST refuse whitespace between name and colon.",
    );
    case(
        c,
        g,
        "te-vertical-tab",
        raw(b"POST /echo HTTP/1.1\r\nHost: battery.example\r\nTransfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        Refuse(400),
        "A control byte in a value (RFC 9110 §5.5); some parsers trim it as whitespace.",
    );
    case(
        c,
        g,
        "cl-plus-sign",
        req("POST /echo HTTP/1.1", &["Content-Length: +5"], "hello"),
        Refuse(400),
        "RFC 9110 §8.6: Content-Length = 1*DIGIT; `+5` parses as 5 with a signed parser only.",
    );
    case(
        c,
        g,
        "cl-negative",
        req("POST /echo HTTP/1.1", &["Content-Length: -1"], "hello"),
        Refuse(400),
        "RFC 9110 §8.6: 1*DIGIT.",
    );
    case(
        c,
        g,
        "cl-hex",
        req("POST /echo HTTP/1.1", &["Content-Length: 0x5"], "hello"),
        Refuse(400),
        "RFC 9110 §8.6: decimal digits only.",
    );
    case(
        c,
        g,
        "cl-leading-zeros",
        req("POST /echo HTTP/1.1", &["Content-Length: 005"], "hello"),
        Echo("hello"),
        "RFC 9110 §8.6: 1*DIGIT allows leading zeros; it means 5 to every parser.",
    );
    case(
        c,
        g,
        "cl-inner-space",
        req("POST /echo HTTP/1.1", &["Content-Length: 5 5"], "hello"),
        Refuse(400),
        "Not a number; a parser that stops at the space reads 5.",
    );
    case(
        c,
        g,
        "cl-list",
        req("POST /echo HTTP/1.1", &["Content-Length: 5, 5"], "hello"),
        Refuse(400),
        "RFC 9110 §8.6 lets a recipient take a list of equal values as one, or refuse it; \
         refusing leaves no room for disagreement.",
    );
    case(
        c,
        g,
        "cl-twice-equal",
        req(
            "POST /echo HTTP/1.1",
            &["Content-Length: 5", "Content-Length: 5"],
            "hello",
        ),
        Refuse(400),
        "The same list on two lines (RFC 9110 §8.6); NGINX refuses a duplicate \
         Content-Length.",
    );
    case(
        c,
        g,
        "cl-twice-different",
        req(
            "POST /echo HTTP/1.1",
            &["Content-Length: 5", "Content-Length: 6"],
            "hello!",
        ),
        Refuse(400),
        "RFC 9112 §6.3: differing lengths are unrecoverable framing; the first or the last \
         wins depending on the parser.",
    );
    case(
        c,
        g,
        "cl-overflow",
        req(
            "POST /echo HTTP/1.1",
            &["Content-Length: 99999999999999999999999"],
            "hello",
        ),
        Refuse(400),
        "Beyond 64 bits: wraps around in a careless parser.",
    );
    case(
        c,
        g,
        "cl-empty",
        req("POST /echo HTTP/1.1", &["Content-Length:"], "hello"),
        Refuse(400),
        "RFC 9110 §8.6: at least one digit.",
    );
    case(
        c,
        g,
        "cl-obs-fold",
        req("POST /echo HTTP/1.1", &["Content-Length:", " 5"], "hello"),
        Refuse(400),
        "RFC 9112 §5.2: obs-fold is refused in requests.",
    );
    case(
        c,
        g,
        "chunk-extension",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "5;name=value\r\nhello\r\n0\r\n\r\n",
        ),
        Echo("hello"),
        "RFC 9112 §7.1.1: extensions are valid and a recipient ignores the ones it does not \
         understand.",
    );
    case(
        c,
        g,
        "chunk-trailer",
        req(
            "POST /echo HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
        ),
        Echo("hello"),
        "RFC 9112 §7.1.2: a trailer section is valid.",
    );
    case(
        c,
        g,
        "chunk-size-not-hex",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "zz\r\nhello\r\n0\r\n\r\n",
        ),
        RefuseBody(400),
        "RFC 9112 §7.1: chunk-size = 1*HEXDIG.",
    );
    case(
        c,
        g,
        "chunk-size-overflow",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        RefuseBody(400),
        "Beyond 64 bits: a parser that wraps reads a 5-byte chunk.",
    );
    case(
        c,
        g,
        "chunk-size-negative",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "-5\r\nhello\r\n0\r\n\r\n",
        ),
        RefuseBody(400),
        "RFC 9112 §7.1: hex digits only.",
    );
    case(
        c,
        g,
        "chunk-data-longer-than-size",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "3\r\nhello\r\n0\r\n\r\n",
        ),
        RefuseBody(400),
        "RFC 9112 §7.1: chunk data is followed by CRLF; anything else is a framing error, \
         and the excess would be read as the next chunk by a lenient parser.",
    );
    case(
        c,
        g,
        "chunk-lines-with-bare-lf",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "5\nhello\n0\n\n",
        ),
        RefuseBody(400),
        "RFC 9112 §7.1: chunk lines end in CRLF; parsers that accept a bare LF there and \
         parsers that do not find different ends of the body.",
    );
    case(
        c,
        g,
        "chunk-extension-with-bare-lf",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            "5;ext\nhello\r\n0\r\n\r\n",
        ),
        RefuseBody(400),
        "A bare LF inside a chunk extension: the TERM/EXT smuggling shape of 2023-2024.",
    );
    case(
        c,
        g,
        "chunk-extension-flood",
        req(
            "POST /delay/1000 HTTP/1.1",
            &["Transfer-Encoding: chunked"],
            &format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(64 * 1024)),
        ),
        RefuseBody(400),
        "Extensions cost memory and CPU and carry nothing a proxy needs: 64 KiB of them \
         on a 1-byte chunk is abuse (hyper caps them at 16 KiB).",
    );
    case(
        c,
        g,
        "bare-lf-line-endings",
        raw(b"GET /headers HTTP/1.1\nHost: battery.example\n\n"),
        Expect::Forward(GET_HEADERS),
        "RFC 9112 §2.2: a recipient MAY take a bare LF as a line end; Weir re-writes the \
         head with CRLF upstream, so no parser behind it sees the ambiguity.",
    );
    case(
        c,
        g,
        "get-with-body",
        req("GET /echo HTTP/1.1", &["Content-Length: 5"], "hello"),
        Echo("hello"),
        "RFC 9110 §9.3.1: a GET body has no defined meaning, but its framing is well defined \
         and it must not be taken for the next request.",
    );
}

fn headers(c: &mut Vec<Case>) {
    use Expect::{Forward, Refuse};
    let g = Group::Headers;
    case(
        c,
        g,
        "space-before-colon",
        req("GET /headers HTTP/1.1", &["X-Battery : 1"], ""),
        Refuse(400),
        "RFC 9112 §5.1: a server MUST answer 400 to whitespace between a field name and the \
         colon.",
    );
    case(
        c,
        g,
        "empty-field-name",
        req("GET /headers HTTP/1.1", &[": 1"], ""),
        Refuse(400),
        "RFC 9110 §5.1: field-name = token, at least one character.",
    );
    case(
        c,
        g,
        "field-name-not-a-token",
        req("GET /headers HTTP/1.1", &["X-Bat(tery): 1"], ""),
        Refuse(400),
        "RFC 9110 §5.1: `(` is a delimiter, not a token character.",
    );
    case(
        c,
        g,
        "field-name-non-ascii",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Caf\xc3\xa9: 1\r\n\r\n"),
        Refuse(400),
        "RFC 9110 §5.1: a token is ASCII.",
    );
    case(
        c,
        g,
        "field-line-without-colon",
        req("GET /headers HTTP/1.1", &["X-Battery 1"], ""),
        Refuse(400),
        "RFC 9112 §5: field-line = field-name \":\" OWS field-value OWS.",
    );
    case(
        c,
        g,
        "whitespace-before-first-field",
        raw(b"GET /headers HTTP/1.1\r\n X-Battery: 1\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §2.2: whitespace between the start line and the first field MUST be \
         refused or the line ignored; one parser appends it to the request line, another \
         reads a field.",
    );
    case(
        c,
        g,
        "obs-fold",
        req("GET /headers HTTP/1.1", &["X-Battery: one", " two"], ""),
        Refuse(400),
        "RFC 9112 §5.2: obs-fold in a request MUST be refused or replaced with spaces.",
    );
    case(
        c,
        g,
        "nul-in-value",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Battery: a\x00b\r\n\r\n"),
        Refuse(400),
        "RFC 9110 §5.5: NUL MUST be refused or replaced; C-string targets cut the value.",
    );
    case(
        c,
        g,
        "bare-cr-in-value",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Battery: a\rb\r\n\r\n"),
        Refuse(400),
        "RFC 9110 §5.5: a bare CR MUST be refused or replaced; some parsers end the line \
         there.",
    );
    case(
        c,
        g,
        "control-byte-in-value",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Battery: a\x01b\r\n\r\n"),
        Refuse(400),
        "RFC 9110 §5.5: field values are VCHAR, SP, HTAB and obs-text.",
    );
    case(
        c,
        g,
        "del-in-value",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Battery: a\x7fb\r\n\r\n"),
        Refuse(400),
        "RFC 9110 §5.5: DEL is not VCHAR.",
    );
    case(
        c,
        g,
        "obs-text-in-value",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nX-Battery: caf\xc3\xa9\r\n\r\n"),
        Forward(&[Seen::Header("x-battery", "caf\u{e9}")]),
        "RFC 9110 §5.5: obs-text is allowed in values and passed on unchanged.",
    );
    case(
        c,
        g,
        "padded-value",
        req("GET /headers HTTP/1.1", &["X-Battery: \t  padded \t "], ""),
        Forward(&[Seen::Header("x-battery", "padded")]),
        "RFC 9112 §5.1: the whitespace around a value is not part of it.",
    );
    case(
        c,
        g,
        "long-field-name",
        req(
            "GET /headers HTTP/1.1",
            &[&format!("X-{}: 1", "n".repeat(10 * 1024))],
            "",
        ),
        Refuse(400),
        "No field name is 10 KiB long; NGINX refuses any line over 8 KiB, and names over \
         1 KiB are refused by Weir while values keep the whole header budget.",
    );
    case(
        c,
        g,
        "underscore-alias-of-forwarded-for",
        req(
            "GET /headers HTTP/1.1",
            &["X_Forwarded_For: 203.0.113.9"],
            "",
        ),
        Refuse(400),
        "Weir replaces X-Forwarded-For, but CGI-style targets (PHP, WSGI, Rack) read \
         `X_Forwarded_For` as the same HTTP_X_FORWARDED_FOR: a spoofed client address. \
         Underscore aliases of the fields Weir sets are refused; other underscores pass.",
    );
    case(
        c,
        g,
        "underscore-in-other-name",
        req("GET /headers HTTP/1.1", &["X_Battery: 1"], ""),
        Forward(&[Seen::Header("x_battery", "1")]),
        "`_` is a token character (RFC 9110 §5.6.2) and the field is not one Weir manages.",
    );
}

fn host(c: &mut Vec<Case>) {
    use Expect::{Forward, Refuse};
    let g = Group::Host;
    let with_host = |host: &[u8]| {
        [
            b"GET /headers HTTP/1.1\r\nHost: ".as_slice(),
            host,
            b"\r\n\r\n".as_slice(),
        ]
        .concat()
    };
    case(
        c,
        g,
        "host-missing",
        raw(b"GET /headers HTTP/1.1\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.",
    );
    case(
        c,
        g,
        "host-empty",
        with_host(b""),
        Refuse(400),
        "Valid only for targets without an authority (RFC 9112 §3.2), which no routed request \
         is: nothing to route by.",
    );
    case(
        c,
        g,
        "host-twice-same",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nHost: battery.example\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §3.2: a server MUST answer 400 to more than one Host line.",
    );
    case(
        c,
        g,
        "host-twice-different",
        raw(b"GET /headers HTTP/1.1\r\nHost: battery.example\r\nHost: other.example\r\n\r\n"),
        Refuse(400),
        "RFC 9112 §3.2; the proxy routes by one and the target serves the other.",
    );
    case(
        c,
        g,
        "host-list",
        with_host(b"battery.example, other.example"),
        Refuse(400),
        "Two hosts in one line: not an authority (RFC 3986 §3.2).",
    );
    case(
        c,
        g,
        "host-with-userinfo",
        with_host(b"user@battery.example"),
        Refuse(400),
        "RFC 9110 §7.2: Host = uri-host [ \":\" port ], no userinfo; `a@b` is host b to a \
         URI parser and `a@b` to a string match.",
    );
    case(
        c,
        g,
        "host-with-path",
        with_host(b"battery.example/admin"),
        Refuse(400),
        "RFC 9110 §7.2: an authority, nothing after it.",
    );
    case(
        c,
        g,
        "host-port-not-a-number",
        with_host(b"battery.example:http"),
        Refuse(400),
        "RFC 3986 §3.2.3: port = *DIGIT.",
    );
    case(
        c,
        g,
        "host-port-too-big",
        with_host(b"battery.example:99999"),
        Refuse(400),
        "RFC 3986 allows any digits, but no TCP port is above 65535: a target parsing it as \
         16 bits reads 34463.",
    );
    case(
        c,
        g,
        "host-two-colons",
        with_host(b"battery.example:80:80"),
        Refuse(400),
        "Not host [ \":\" port ].",
    );
    case(
        c,
        g,
        "host-empty-port",
        with_host(b"battery.example:"),
        Forward(&[Seen::Header("host", "battery.example:")]),
        "RFC 3986 §3.2.3: an empty port is valid and means the default one.",
    );
    case(
        c,
        g,
        "host-ipv4",
        with_host(b"127.0.0.1:8080"),
        Forward(&[Seen::Header("host", "127.0.0.1:8080")]),
        "RFC 3986 §3.2.2: IPv4address with a port.",
    );
    case(
        c,
        g,
        "host-ipv6",
        with_host(b"[::1]:8080"),
        Forward(&[Seen::Header("host", "[::1]:8080")]),
        "RFC 3986 §3.2.2: an IP-literal in brackets, with a port.",
    );
    case(
        c,
        g,
        "host-ipv6-unbracketed",
        with_host(b"::1"),
        Refuse(400),
        "RFC 3986 §3.2.2: an IPv6 address in a URI goes in brackets; without them the last \
         group reads as a port.",
    );
    case(
        c,
        g,
        "host-ipv6-bad",
        with_host(b"[::g]"),
        Refuse(400),
        "RFC 3986 §3.2.2: `g` is not a hex digit.",
    );
    case(
        c,
        g,
        "host-ipv6-unclosed",
        with_host(b"[::1"),
        Refuse(400),
        "RFC 3986 §3.2.2: IP-literal = \"[\" ... \"]\".",
    );
    case(
        c,
        g,
        "host-ipvfuture",
        with_host(b"[v1.fe80::a+en1]"),
        Refuse(400),
        "RFC 3986 §3.2.2 syntax, but no address Weir could route or connect to.",
    );
    case(
        c,
        g,
        "host-non-ascii",
        with_host("b\u{e4}ttery.example".as_bytes()),
        Refuse(400),
        "RFC 3986 §3.2.2: a reg-name is ASCII; internationalised names are sent as punycode \
         (RFC 5890).",
    );
    case(
        c,
        g,
        "host-percent-encoded",
        with_host(b"b%61ttery.example"),
        Refuse(400),
        "RFC 3986 allows pct-encoded in a reg-name, but no DNS name has `%`, and a target \
         that decodes it sees another host than the one Weir routed by.",
    );
    case(
        c,
        g,
        "host-space",
        with_host(b"battery .example"),
        Refuse(400),
        "RFC 3986 §3.2.2: no whitespace in a host.",
    );
    case(
        c,
        g,
        "host-backslash",
        with_host(b"battery.example\\@other.example"),
        Refuse(400),
        "Not a reg-name character; URL parsers that read `\\` as `/` see another host.",
    );
    case(
        c,
        g,
        "host-underscore",
        with_host(b"my_service.battery.example"),
        Forward(&[Seen::Header("host", "my_service.battery.example")]),
        "RFC 3986 §3.2.2: `_` is unreserved and valid in a reg-name (and common in internal \
         names).",
    );
    case(
        c,
        g,
        "host-trailing-dot",
        with_host(b"battery.example."),
        Forward(&[Seen::Header("host", "battery.example.")]),
        "A fully qualified name: valid, and routed like the name without the dot.",
    );
}

fn methods(c: &mut Vec<Case>) {
    use Expect::{Forward, Refuse};
    let g = Group::Methods;
    case(
        c,
        g,
        "connect",
        req("CONNECT battery.example:443 HTTP/1.1", &[], ""),
        Refuse(405),
        "A reverse proxy is not a tunnel: CONNECT would open a TCP connection to wherever \
         the client names.",
    );
    case(
        c,
        g,
        "connect-origin-form",
        req("CONNECT /headers HTTP/1.1", &[], ""),
        Refuse(405),
        "CONNECT in any form.",
    );
    case(
        c,
        g,
        "trace",
        req("TRACE /headers HTTP/1.1", &[], ""),
        Refuse(405),
        "TRACE echoes the request as the target received it: cookies and credentials to \
         script (cross-site tracing), and the headers the proxy added. NGINX refuses it.",
    );
    case(
        c,
        g,
        "extension-method",
        req("PROPFIND /headers HTTP/1.1", &[], ""),
        Forward(&[Seen::Method("PROPFIND"), Seen::Uri("/headers")]),
        "A well-formed method the proxy does not know (WebDAV here) is the target's to \
         answer: RFC 9110 §9.1 has a target answer 501 for methods it does not implement.",
    );
    case(
        c,
        g,
        "extension-method-with-dash",
        req("VERSION-CONTROL /headers HTTP/1.1", &[], ""),
        Forward(&[Seen::Method("VERSION-CONTROL")]),
        "A registered method (RFC 3253) with a dash.",
    );
}

fn negotiation(c: &mut Vec<Case>) {
    use Expect::{Echo, Forward};
    let g = Group::Negotiation;
    case(
        c,
        g,
        "expect-100-continue",
        req(
            "POST /echo HTTP/1.1",
            &["Expect: 100-continue", "Content-Length: 5"],
            "hello",
        ),
        Echo("hello"),
        "RFC 9110 §10.1.1; the body is sent at once without waiting, as a client may.",
    );
    case(
        c,
        g,
        "expect-100-continue-mixed-case",
        req(
            "POST /echo HTTP/1.1",
            &["Expect: 100-Continue", "Content-Length: 5"],
            "hello",
        ),
        Echo("hello"),
        "RFC 9110 §10.1.1: the token is case-insensitive.",
    );
    case(
        c,
        g,
        "expect-100-continue-http-1.0",
        req(
            "POST /echo HTTP/1.0",
            &["Expect: 100-continue", "Content-Length: 5"],
            "hello",
        ),
        Echo("hello"),
        "RFC 9110 §10.1.1: a server MUST ignore 100-continue from an HTTP/1.0 client.",
    );
    case(
        c,
        g,
        "expect-unknown",
        req("GET /headers HTTP/1.1", &["Expect: teapot"], ""),
        Forward(&[Seen::Header("expect", "teapot")]),
        "Expect is end to end: the target decides (RFC 9110 §10.1.1 lets it answer 417).",
    );
    case(
        c,
        g,
        "h2c-upgrade",
        req(
            "GET /headers HTTP/1.1",
            &[
                "Connection: Upgrade, HTTP2-Settings",
                "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAAQAAP__",
            ],
            "",
        ),
        Forward(&[Seen::NoHeader("upgrade"), Seen::NoHeader("http2-settings")]),
        "h2c smuggling: a target that accepts the upgrade talks HTTP/2 with the client \
         directly, past the proxy's routing. The upgrade is dropped (RFC 9110 §7.8 lets a \
         server ignore Upgrade; RFC 9113 §3.1 deprecates h2c) and the request goes on as \
         HTTP/1.1.",
    );
    case(
        c,
        g,
        "upgrade-without-connection-upgrade",
        req("GET /headers HTTP/1.1", &["Upgrade: websocket"], ""),
        Forward(&[Seen::NoHeader("upgrade")]),
        "RFC 9110 §7.8: Upgrade is hop-by-hop and only means something when Connection \
         lists it.",
    );
    case(
        c,
        g,
        "upgrade-in-http-1.0",
        req(
            "GET /headers HTTP/1.0",
            &["Connection: Upgrade", "Upgrade: websocket"],
            "",
        ),
        Expect::Refuse(400),
        "RFC 9110 §7.8 has a server ignore Upgrade in HTTP/1.0, where it cannot work; \
         HAProxy refuses the request instead, and so does Weir.",
    );
    case(
        c,
        g,
        "connection-names-host",
        req("GET /headers HTTP/1.1", &["Connection: Host"], ""),
        Forward(&[Seen::Header("host", HOST)]),
        "Hop-by-hop abuse: fields listed in Connection are removed, but Host is what the \
         request is routed by and must reach the target.",
    );
    case(
        c,
        g,
        "connection-names-content-length",
        req(
            "POST /echo HTTP/1.1",
            &["Connection: Content-Length", "Content-Length: 5"],
            "hello",
        ),
        Echo("hello"),
        "Hop-by-hop abuse: removing the framing field would send the body unframed.",
    );
}

/// What came back from one raw exchange.
#[derive(Debug, Default)]
pub struct Answer {
    /// The final status (1xx skipped), when a status line arrived.
    pub status: Option<u16>,
    /// The final response's head.
    pub head: String,
    /// The final response's body, de-chunked.
    pub body: Vec<u8>,
    /// Interim 1xx statuses seen before it.
    pub interim: Vec<u16>,
    /// Bytes that arrived but did not parse as an HTTP/1.x response (an HTTP/0.9 answer).
    pub garbage: Option<String>,
    /// Whether nothing complete came back before the deadline.
    pub timed_out: bool,
}

impl Answer {
    /// The value of field `name` in the final response.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One table cell: `400`, `100 then 200`, `closed`, `no answer`, `not HTTP/1.x`.
    pub fn label(&self) -> String {
        match (self.status, &self.garbage) {
            (Some(status), _) if !self.interim.is_empty() => {
                let interim: Vec<String> = self.interim.iter().map(u16::to_string).collect();
                format!("{} then {status}", interim.join(", "))
            }
            (Some(status), _) => status.to_string(),
            (None, Some(_)) => "not HTTP/1.x".to_owned(),
            (None, None) if self.timed_out => "no answer".to_owned(),
            (None, None) => "closed".to_owned(),
        }
    }
}

/// Connects to `addr`, writes `request` as is (without closing the write side, which a proxy
/// could take as the client leaving) and reads one final response, within `deadline`.
pub fn exchange(addr: SocketAddr, request: &[u8], deadline: Duration) -> std::io::Result<Answer> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, deadline)?;
    stream.set_nodelay(true)?;
    // A proxy may answer before reading everything and close: what it answered counts, not
    // the write error.
    let _ = stream.write_all(request);
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut answer = Answer::default();
    loop {
        match parse(&received, &mut answer) {
            Parsed::Complete | Parsed::NotHttp => break,
            Parsed::Partial => {}
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            answer.timed_out = true;
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => {
                // Closed: what arrived so far is the answer, if any (a close-delimited body).
                parse_at_close(&received, &mut answer);
                break;
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                answer.timed_out = true;
                break;
            }
            // A reset after an answer is the proxy closing a connection it would not reuse.
            Err(_) => {
                parse_at_close(&received, &mut answer);
                break;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(answer)
}

/// The [`Answer`] `wire` reads as, as if it had arrived and the connection then closed.
#[cfg(test)]
pub fn exchange_bytes(wire: &[u8]) -> Answer {
    let mut answer = Answer::default();
    if !matches!(parse(wire, &mut answer), Parsed::Complete) {
        answer = Answer::default();
        parse_at_close(wire, &mut answer);
    }
    answer
}

enum Parsed {
    Complete,
    Partial,
    NotHttp,
}

/// Parses `received` into `answer`: interim responses, then the final head and body.
fn parse(received: &[u8], answer: &mut Answer) -> Parsed {
    let mut at = 0;
    answer.interim.clear();
    loop {
        let rest = &received[at..];
        if rest.is_empty() {
            return Parsed::Partial;
        }
        let n = rest.len().min(7);
        if rest[..n] != b"HTTP/1."[..n] {
            answer.garbage = Some(String::from_utf8_lossy(rest).chars().take(40).collect());
            return Parsed::NotHttp;
        }
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return Parsed::Partial;
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let Some(status) = head.get(9..12).and_then(|s| s.parse::<u16>().ok()) else {
            answer.garbage = Some(head.chars().take(40).collect());
            return Parsed::NotHttp;
        };
        let body = &rest[end + 4..];
        if (100..200).contains(&status) {
            answer.interim.push(status);
            at += end + 4;
            continue;
        }
        answer.status = Some(status);
        answer.head = head;
        let lower = answer.head.to_ascii_lowercase();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
        {
            let Ok(len) = len.trim().parse::<usize>() else {
                return Parsed::Complete;
            };
            if body.len() < len {
                answer.body = body.to_vec();
                return Parsed::Partial;
            }
            answer.body = body[..len].to_vec();
            return Parsed::Complete;
        }
        if lower.contains("transfer-encoding: chunked") {
            return match dechunk(body) {
                Some(decoded) => {
                    answer.body = decoded;
                    Parsed::Complete
                }
                None => Parsed::Partial,
            };
        }
        // No length: the body runs to the close.
        answer.body = body.to_vec();
        return Parsed::Partial;
    }
}

/// At the close, a head that arrived is the answer even if its body is cut.
fn parse_at_close(received: &[u8], answer: &mut Answer) {
    let _ = parse(received, answer);
    if answer.status.is_none() && answer.garbage.is_none() && !received.is_empty() {
        answer.garbage = Some(String::from_utf8_lossy(received).chars().take(40).collect());
    }
}

/// The data of a whole chunked body, or `None` while it is incomplete.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = size.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return find(body, b"\r\n").map(|_| out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `answer` (with `reached` requests counted by the target meanwhile) is what `case`
/// asks of Weir; the error says what differs.
pub fn judge(case: &Case, answer: &Answer, reached: u64) -> Result<(), String> {
    let got = || {
        format!(
            "got {} ({}), target saw {reached} request(s)",
            answer.label(),
            answer.head.lines().next().unwrap_or("")
        )
    };
    match case.expect {
        Expect::Refuse(status) => {
            if answer.status != Some(status) {
                return Err(format!("want {status}; {}", got()));
            }
            if reached != 0 {
                return Err(format!("want nothing sent to the target; {}", got()));
            }
            if answer.header("x-backend").is_some() {
                return Err(format!("the target answered; {}", got()));
            }
        }
        Expect::RefuseBody(status) => {
            if answer.status != Some(status) {
                return Err(format!("want {status}; {}", got()));
            }
            if answer.header("x-backend").is_some() {
                return Err(format!("the target answered; {}", got()));
            }
        }
        Expect::Forward(seen) => {
            if answer.status != Some(200) || reached != 1 {
                return Err(format!("want 200 from the target, once; {}", got()));
            }
            let report: serde_json::Value = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("the target's report is not JSON ({e}): {}", answer.text()))?;
            for fact in seen {
                check(fact, &report)?;
            }
        }
        Expect::Echo(body) => {
            if answer.status != Some(200) || reached != 1 {
                return Err(format!("want 200 from the target, once; {}", got()));
            }
            if answer.body != body.as_bytes() {
                return Err(format!(
                    "want the target to read {body:?}, it read {:?}",
                    answer.text()
                ));
            }
        }
    }
    Ok(())
}

fn check(fact: &Seen, report: &serde_json::Value) -> Result<(), String> {
    let values = |name: &str| -> Vec<String> {
        report["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pair| pair[0].as_str() == Some(name))
            .filter_map(|pair| pair[1].as_str().map(str::to_owned))
            .collect()
    };
    let ok = match *fact {
        Seen::Method(m) => report["method"] == m,
        Seen::Uri(u) => report["uri"] == u,
        Seen::Header(name, value) => values(name) == [value],
        Seen::NoHeader(name) => values(name).is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("the target did not see {fact:?}: {report}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_battery_has_forty_uniquely_named_cases_with_reasons() {
        let cases = all();
        assert!(cases.len() >= 40, "only {} cases", cases.len());
        let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "two cases share a name");
        for case in &cases {
            assert!(!case.why.is_empty(), "{} says not why", case.name);
        }
        for group in Group::ALL {
            assert!(
                cases.iter().any(|c| c.group == group),
                "no case in {}",
                group.title()
            );
        }
    }

    #[test]
    fn responses_are_read_through_interim_answers_and_chunks() {
        let answer = exchange_bytes(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!(
            (answer.status, answer.label().as_str()),
            (Some(200), "100 then 200")
        );
        assert_eq!(answer.body, b"hello");
        let cut = exchange_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
        assert_eq!(
            (cut.status, cut.body.as_slice()),
            (Some(200), b"hel".as_slice())
        );
        let old = exchange_bytes(b"<html>HTTP/0.9 has no status line");
        assert_eq!((old.status, old.label().as_str()), (None, "not HTTP/1.x"));
        assert_eq!(exchange_bytes(b"").label(), "closed");
    }
}
