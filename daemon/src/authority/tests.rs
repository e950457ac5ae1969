//! [`AuthorityStream`] in front of h2's own server, fed header blocks in every encoding and
//! framing a client may use: what h2 decodes must be what the client sent, with only refused
//! `:authority` values replaced.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frames::Rewriter;
use super::hpack::STATIC_NAMES;
use super::hpack::tests::hex;
use super::huffman::tests::encode as huffman;
use super::{AuthorityStream, replacement};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// xorshift64*: reproducible choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// §5.1 integer: `first` holds the representation's pattern bits above an N-bit prefix.
fn int(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value % 0x80) as u8 | 0x80);
        value /= 0x80;
    }
    out.push(value as u8);
}

fn string(out: &mut Vec<u8>, text: &[u8], coded: bool) {
    if coded {
        let body = huffman(text);
        int(out, 0x80, 7, body.len());
        out.extend(body);
    } else {
        int(out, 0, 7, text.len());
        out.extend(text);
    }
}

/// An HPACK encoder that picks among all representations at random and keeps a full model of
/// its dynamic table, as a client's would be.
struct Encoder {
    rng: Rng,
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Encoder {
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + 32;
        while self.size + size > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
        if size <= self.max {
            self.size += size;
            self.table.push_front((name.to_vec(), value.to_vec()));
        }
    }

    fn resize(&mut self, out: &mut Vec<u8>, max: usize) {
        int(out, 0x20, 5, max);
        self.max = max;
        while self.size > self.max {
            let (n, v) = self.table.pop_back().unwrap();
            self.size -= n.len() + v.len() + 32;
        }
    }

    /// Indices (static and dynamic) whose name is `name`, and whose value too.
    fn find(&self, name: &[u8], value: &[u8]) -> (Vec<usize>, Vec<usize>) {
        const STATIC_PAIRS: [(usize, &[u8], &[u8]); 4] = [
            (2, b":method", b"GET"),
            (3, b":method", b"POST"),
            (4, b":path", b"/"),
            (6, b":scheme", b"http"),
        ];
        let mut names: Vec<usize> = (1..=61)
            .filter(|&i| STATIC_NAMES[i - 1].as_bytes() == name)
            .collect();
        let mut pairs: Vec<usize> = STATIC_PAIRS
            .iter()
            .filter(|(_, n, v)| *n == name && *v == value)
            .map(|(i, _, _)| *i)
            .collect();
        if name == b":authority" && value.is_empty() {
            pairs.push(1);
        }
        for (i, (n, v)) in self.table.iter().enumerate() {
            if n == name {
                names.push(62 + i);
                if v == value {
                    pairs.push(62 + i);
                }
            }
        }
        (names, pairs)
    }

    fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        let (names, pairs) = self.find(name, value);
        if !pairs.is_empty() && !self.rng.one_in(3) {
            let index = pairs[self.rng.below(pairs.len())];
            int(out, 0x80, 7, index);
            return;
        }
        let (pattern, prefix) = [(0x40, 6), (0x00, 4), (0x10, 4)][self.rng.below(3)];
        if !names.is_empty() && self.rng.one_in(2) {
            int(out, pattern, prefix, names[self.rng.below(names.len())]);
        } else {
            out.push(pattern);
            let coded = self.rng.one_in(2);
            string(out, name, coded);
        }
        let coded = self.rng.one_in(2);
        string(out, value, coded);
        if pattern == 0x40 {
            self.insert(name, value);
        }
    }
}

/// A request as h2 hands it to the server: path, authority, the other headers sorted.
type Seen = (String, Option<String>, Vec<(String, String)>);

const AUTHORITIES: [&str; 9] = [
    "localhost",
    "run%2Fspore%2Fspored.sock",
    "/run/spore/spored.sock",
    "[::1]:50051",
    "a:b:c",
    "user@host",
    "h\u{e9}te",
    "",
    "/a/very/long/path/that/needs/a/multi-byte/length/prefix/for/its/huffman/and/its/plain/encoding/alike/spored.sock",
];

const NAMES: [&str; 6] = [
    "content-type",
    "user-agent",
    "grpc-timeout",
    "x-a",
    "x-spore-trace",
    "x-long-header-name-to-fill-the-table",
];

/// The bytes a client sends for `count` requests, and what h2 should make of each when the
/// rewrite is (`.0`) and is not (`.1`) in front of it; None for a request it refuses.
fn client(seed: u64, count: usize) -> (Vec<u8>, Vec<Option<Seen>>, Vec<Option<Seen>>) {
    let mut encoder = Encoder {
        rng: Rng(seed),
        table: VecDeque::new(),
        size: 0,
        max: 4096,
    };
    let mut bytes = PREFACE.to_vec();
    bytes.extend(SETTINGS);
    let (mut fixed, mut plain) = (Vec::new(), Vec::new());
    for n in 0..count {
        let mut block = Vec::new();
        if encoder.rng.one_in(15) {
            let max = [0, 64, 256, 1000, 4096][encoder.rng.below(5)];
            encoder.resize(&mut block, max);
        }
        let path = format!("/spore.v1.Control/Call{n}");
        encoder.field(&mut block, b":method", b"POST");
        encoder.field(&mut block, b":scheme", b"http");
        encoder.field(&mut block, b":path", path.as_bytes());
        let authority = AUTHORITIES[encoder.rng.below(AUTHORITIES.len())];
        let start = block.len();
        encoder.field(&mut block, b":authority", authority.as_bytes());
        // h2 refuses an empty authority that is added to its table (nothing can replace it).
        let refused_empty = authority.is_empty() && block[start] & 0xc0 == 0x40;
        let mut headers = Vec::new();
        for name in NAMES {
            if encoder.rng.one_in(2) {
                continue;
            }
            let len = [0, 3, 20, 200, 1500][encoder.rng.below(5)];
            let value: String = (0..len)
                .map(|_| (b' ' + encoder.rng.below(95) as u8) as char)
                .collect();
            let value = value.trim().to_string();
            encoder.field(&mut block, name.as_bytes(), value.as_bytes());
            headers.push((name.to_string(), value));
        }
        headers.sort();
        let value = authority.as_bytes();
        let accepted = tonic::codegen::http::uri::Authority::try_from(value).is_ok();
        let expect_fixed = (!refused_empty).then(|| {
            let authority = (!value.is_empty())
                .then(|| String::from_utf8(replacement(value).unwrap_or(value.to_vec())).unwrap());
            (path.clone(), authority, headers.clone())
        });
        fixed.push(expect_fixed);
        plain.push(accepted.then(|| (path, Some(authority.to_string()), headers)));
        frame(&mut bytes, &mut encoder.rng, 2 * n as u32 + 1, &block);
    }
    (bytes, fixed, plain)
}

/// Frames a header block as a client may: HEADERS, maybe padded and with priority fields,
/// then CONTINUATION frames at random cuts.
fn frame(out: &mut Vec<u8>, rng: &mut Rng, stream: u32, block: &[u8]) {
    let mut cuts = vec![0, block.len()];
    for _ in 0..rng.below(4) {
        cuts.push(rng.below(block.len() + 1));
    }
    cuts.sort();
    for (i, pair) in cuts.windows(2).enumerate() {
        let fragment = &block[pair[0]..pair[1]];
        let last = i == cuts.len() - 2;
        let mut flags = if last { 0x4 } else { 0 };
        let mut payload = Vec::new();
        if i == 0 {
            flags |= 0x1; // END_STREAM: the request has no body
            let pad = rng.one_in(3).then(|| rng.below(20));
            if let Some(pad) = pad {
                flags |= 0x8;
                payload.push(pad as u8);
            }
            if rng.one_in(3) {
                flags |= 0x20;
                payload.extend([0, 0, 0, 0, 15]);
            }
            payload.extend(fragment);
            payload.extend(vec![0; pad.unwrap_or(0)]);
        } else {
            payload.extend(fragment);
        }
        let kind = if i == 0 { 0x1 } else { 0x9 };
        out.extend(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
    }
}

/// Runs h2's server over `server_side`, the client's bytes written in 7-byte pieces at most,
/// and returns the requests it accepted by path.
async fn serve<S>(
    server_side: S,
    client_side: tokio::io::DuplexStream,
    mut bytes: Vec<u8>,
) -> Vec<Seen>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A last request, without indexing so it changes no table, tells the server the client's
    // requests have all been accepted (h2 accepts streams in the order they open).
    let mut end = vec![0x83, 0x86, 0x04];
    string(&mut end, b"/end", false);
    end.push(0x01);
    string(&mut end, b"localhost", false);
    frame(&mut bytes, &mut Rng(1), 0x7fff_ffff, &end);
    let (mut from_server, mut to_server) = tokio::io::split(client_side);
    let writer = tokio::spawn(async move {
        to_server.write_all(&bytes).await.unwrap();
        to_server
    });
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = from_server.read_to_end(&mut sink).await;
    });
    let mut seen = Vec::new();
    let mut connection = h2::server::handshake(server_side).await.unwrap();
    while let Some(accepted) = connection.accept().await {
        let (request, mut respond) = accepted.unwrap();
        if request.uri().path() == "/end" {
            break;
        }
        let mut headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        let authority = request.uri().authority().map(|a| a.to_string());
        seen.push((request.uri().path().to_string(), authority, headers));
        let _ = respond.send_response(tonic::codegen::http::Response::new(()), true);
    }
    drop(writer.await.unwrap());
    drop(connection);
    drain.await.unwrap();
    seen
}

/// Compares request lists, naming the first difference rather than printing both.
fn assert_same(seen: &[Seen], expected: &[Seen], what: &str) {
    let short = |s: Option<&Seen>| {
        s.map(|(path, authority, headers)| {
            let headers: Vec<_> = headers.iter().map(|(n, v)| (n, v.len())).collect();
            format!("{path} {authority:?} {headers:?}")
        })
    };
    if let Some(i) = (0..seen.len().max(expected.len())).find(|&i| seen.get(i) != expected.get(i)) {
        panic!(
            "{what}: request {i} of {} seen, {} expected:\n  seen     {:?}\n  expected {:?}",
            seen.len(),
            expected.len(),
            short(seen.get(i)),
            short(expected.get(i))
        );
    }
}

#[tokio::test]
async fn h2_decodes_every_encoding_and_framing_with_only_the_authority_replaced() {
    for seed in [1, 2, 3, 0x5eed] {
        let (bytes, fixed, plain) = client(seed, 250);
        let expected: Vec<Seen> = fixed.into_iter().flatten().collect();
        let (client_side, server_side) = tokio::io::duplex(7);
        let seen = tokio::time::timeout(
            Duration::from_secs(30),
            serve(
                AuthorityStream::new(server_side),
                client_side,
                bytes.clone(),
            ),
        )
        .await
        .unwrap();
        assert_same(&seen, &expected, &format!("seed {seed}"));
        // Without the rewrite, h2 refuses exactly the requests whose authority it cannot parse.
        let expected: Vec<Seen> = plain.into_iter().flatten().collect();
        let (client_side, server_side) = tokio::io::duplex(4096);
        let seen = tokio::time::timeout(
            Duration::from_secs(30),
            serve(server_side, client_side, bytes),
        )
        .await
        .unwrap();
        assert_same(
            &seen,
            &expected,
            &format!("seed {seed}, without the rewrite"),
        );
    }
}

#[tokio::test]
async fn a_rewritten_block_over_one_frame_is_split_into_continuations() {
    // A Huffman-coded authority of 1,000 '/' (6 bits each: 750 bytes) grows by 250 bytes
    // written plain; with a 15,500-byte header beside it, the block no longer fits a frame.
    let mut block = vec![0x83, 0x86, 0x44];
    string(&mut block, b"/spore.v1.Control/GetHostStatus", false);
    block.push(0x01);
    string(&mut block, &[b'/'; 1000], true);
    block.push(0x00);
    string(&mut block, b"x-big", false);
    string(&mut block, &[b'v'; 15_500], false);
    assert!(block.len() <= 16_384);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(SETTINGS);
    bytes.extend(&(block.len() as u32).to_be_bytes()[1..]);
    bytes.extend([0x1, 0x5, 0, 0, 0, 1]);
    bytes.extend(&block);
    let mut input = BytesMut::from(&bytes[..]);
    let mut output = BytesMut::new();
    let mut rewriter = Rewriter::new();
    rewriter.feed(&mut input, &mut output);
    assert!(!rewriter.is_transparent());
    let after = &output[PREFACE.len() + SETTINGS.len()..];
    // HEADERS of 16,384 bytes with END_STREAM but not END_HEADERS, then a CONTINUATION
    // with END_HEADERS and the rest.
    assert_eq!(&after[..9], &[0x00, 0x40, 0x00, 0x1, 0x1, 0, 0, 0, 1]);
    let second = &after[9 + 16_384..];
    assert_eq!(&second[3..9], &[0x9, 0x4, 0, 0, 0, 1]);
    assert_eq!(second.len(), 9 + block.len() + 250 - 16_384);
    let (client_side, server_side) = tokio::io::duplex(4096);
    let seen = serve(AuthorityStream::new(server_side), client_side, bytes).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.as_deref(), Some(&"-".repeat(1000)[..]));
    assert_eq!(seen[0].2, [("x-big".to_string(), "v".repeat(15_500))]);
}

#[test]
fn what_h2_refuses_anyway_passes_on_untouched() {
    let mut good = PREFACE.to_vec();
    good.extend(SETTINGS);
    let mut headers_open = good.clone();
    // HEADERS without END_HEADERS, then a PING: h2 refuses a frame inside a header block.
    headers_open.extend(hex("000003 01 01 00000001 828684"));
    headers_open.extend(hex("000008 06 00 00000000 0000000000000000"));
    let mut lone_continuation = good.clone();
    lone_continuation.extend(hex("000001 09 04 00000001 82"));
    let mut bad_hpack = good.clone();
    bad_hpack.extend(hex("000002 01 05 00000001 82be"));
    let mut too_long = good.clone();
    too_long.extend(hex("004001 01 05 00000001"));
    too_long.extend(vec![0x82; 16_385]);
    let mut bad_padding = good.clone();
    bad_padding.extend(hex("000002 01 0d 00000001 0582"));
    let cases = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1"),
        (headers_open, "an interrupted header block"),
        (lone_continuation, "a CONTINUATION without HEADERS"),
        (bad_hpack, "an index past the table"),
        (too_long, "a HEADERS frame over 16 KiB"),
        (bad_padding, "padding longer than the frame"),
    ];
    for (bytes, what) in cases {
        // One byte at a time, as a slow client would send them.
        let mut rewriter = Rewriter::new();
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        for b in &bytes {
            input.extend_from_slice(&[*b]);
            rewriter.feed(&mut input, &mut output);
        }
        rewriter.finish(&mut input, &mut output);
        assert!(rewriter.is_transparent(), "{what}");
        assert_eq!(&output[..], &bytes[..], "{what}");
    }
}

#[test]
fn a_connection_cut_inside_a_frame_passes_on_what_came() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(SETTINGS);
    bytes.extend(hex("000010 01 05 00000001 8286"));
    let mut input = BytesMut::from(&bytes[..]);
    let mut output = BytesMut::new();
    let mut rewriter = Rewriter::new();
    rewriter.feed(&mut input, &mut output);
    assert_eq!(output.len(), PREFACE.len() + SETTINGS.len());
    rewriter.finish(&mut input, &mut output);
    assert_eq!(&output[..], &bytes[..]);
}

#[test]
fn hostile_bytes_never_panic() {
    // Valid client streams with random bytes changed, cut or repeated, delivered in random
    // pieces; and random header blocks and Huffman strings on their own.
    let mut rng = Rng(0xbad);
    for seed in 0..300 {
        let (mut bytes, _, _) = client(seed, 8);
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.truncate(at.max(PREFACE.len())),
                _ => {
                    let piece = bytes[at..(at + 1 + rng.below(40)).min(bytes.len())].to_vec();
                    bytes.splice(at..at, piece);
                }
            }
        }
        let mut rewriter = Rewriter::new();
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((1 + rng.below(300)).min(rest.len()));
            input.extend_from_slice(piece);
            rewriter.feed(&mut input, &mut output);
            rest = tail;
        }
        rewriter.finish(&mut input, &mut output);
        assert!(input.is_empty());
        // Replacements keep lengths and only drop empty authorities: the output can only be
        // longer by the plain encoding of Huffman-coded values and the frame headers of splits.
        assert!(output.len() <= bytes.len() * 2 + 64, "seed {seed}");
    }
    for _ in 0..20_000 {
        let len = rng.below(40);
        let block: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut table = super::hpack::Table::new();
        let _ = super::hpack::rewrite_block(&mut table, &block, replacement);
        let mut out = Vec::new();
        let _ = super::huffman::decode(&block, &mut out);
    }
}
