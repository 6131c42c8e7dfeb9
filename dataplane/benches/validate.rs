//! The cost of the pre-routing checks: `validate::check` on a browser-like request, and the
//! raw-head tap (`validate::Wire`) reading that request's head off the wire, against the
//! same read without the tap. `cargo bench -p weir-dataplane --bench validate`.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Waker};

use clap::Parser as _;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tokio::io::{AsyncRead, ReadBuf};
use weir_dataplane::settings::Args;
use weir_dataplane::validate::{self, Heads, Wire};

/// What a browser sends for a page: 12 fields, about 600 bytes.
const HEAD: &[u8] = b"GET /shop/cart?item=42&ref=home HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f1c0a9e8b7d6c5e4f3a2b1c0d9e8f7a; theme=dark; consent=1\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Priority: u=0, i\r\n\r\n";

fn read_once(mut io: impl AsyncRead + Unpin, buf: &mut [u8]) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = ReadBuf::new(buf);
    let _ = Pin::new(&mut io).poll_read(&mut cx, &mut read);
    read.filled().len()
}

fn tap(c: &mut Criterion) {
    let mut buf = vec![0u8; 8192];
    c.bench_function("wire/read head, untapped", |b| {
        b.iter(|| black_box(read_once(black_box(HEAD), &mut buf)))
    });
    // What hyper pays to parse the same head, for scale.
    c.bench_function("wire/httparse alone", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            black_box(req.parse(black_box(HEAD)).is_ok())
        })
    });
    let heads = Heads::default();
    c.bench_function("wire/read head, tapped and attached", |b| {
        b.iter(|| {
            let n = read_once(Wire::new(black_box(HEAD), heads.clone(), 65536), &mut buf);
            let mut req = Request::new(());
            heads.attach(&mut req);
            black_box((n, req))
        })
    });
}

fn check(c: &mut Criterion) {
    let settings = Args::parse_from(["weir-dataplane"]).proxy;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(HEAD).expect("a valid head");
    let mut builder = Request::builder()
        .method(parsed.method.expect("a method"))
        .uri(parsed.path.expect("a target"));
    for field in parsed.headers.iter() {
        builder = builder.header(field.name, field.value);
    }
    let req = builder.body(()).expect("a valid request");
    c.bench_function("validate/check browser request", |b| {
        b.iter(|| black_box(validate::check(&settings, black_box(&req)).is_ok()))
    });
}

// criterion's macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, tap, check);
}
use group::benches;
criterion_main!(benches);
