//! The raw-head tap (`weir_dataplane::validate::Wire`): it reads every byte a client sends on
//! an HTTP/1 connection, follows requests and their bodies (Content-Length, chunked) and
//! records what hyper hides of each head ([`WireHead`]: repeated framing lines, a fragment).
//!
//! Input: one byte giving the largest read (1 to 255 bytes; 0 for reads of 4 KiB), then the
//! bytes the client sends. Properties:
//! - the tap is transparent: what is read through it is exactly what was sent;
//! - what it records does not depend on how the stream arrives: the heads are the same read
//!   in one piece, in reads of the given size, and byte by byte.

#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Version};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use weir_dataplane::validate::{Heads, Wire, WireHead};

/// hyper's default read buffer limit, which the data plane passes as `--max-header-bytes`.
const MAX_HEAD: usize = 16 * 1024;

fn reads_of(stream: &[u8], size: usize) -> Vec<WireHead> {
    let heads = Heads::default();
    let mut wire = Wire::new(stream, heads.clone(), MAX_HEAD);
    let mut context = Context::from_waker(Waker::noop());
    let mut read = Vec::with_capacity(stream.len());
    let mut buf = vec![0; size];
    loop {
        let mut b = ReadBuf::new(&mut buf);
        match Pin::new(&mut wire).poll_read(&mut context, &mut b) {
            Poll::Ready(Ok(())) if b.filled().is_empty() => break,
            Poll::Ready(Ok(())) => read.extend_from_slice(b.filled()),
            other => panic!("reading a slice gave {other:?}"),
        }
    }
    assert!(
        read == stream,
        "the tap changed the bytes read in pieces of {size}"
    );
    let mut seen = Vec::new();
    loop {
        let mut req = Request::builder()
            .version(Version::HTTP_11)
            .body(())
            .expect("a request");
        heads.attach(&mut req);
        match req.extensions().get::<WireHead>() {
            Some(head) => seen.push(*head),
            None => return seen,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let size = if size == 0 { 4096 } else { usize::from(size) };
    let whole = reads_of(stream, stream.len().max(1));
    assert_eq!(reads_of(stream, size), whole, "in reads of {size} bytes");
    assert_eq!(reads_of(stream, 1), whole, "byte by byte");
});
