//! The part of HPACK (RFC 7541) the rewrite needs: a mirror of the client's dynamic table and
//! one pass over each header block that replaces an unacceptable `:authority` value.
//!
//! Every other byte of a block is kept, and a replacement value has exactly the decoded length
//! of the original. An entry's size in the dynamic table is its name's and value's lengths plus
//! 32 (§4.1), so the server's decoder inserts and evicts exactly what the client's encoder
//! does, and every index the client sends later names the same entry on both sides. That is
//! why the mirror needs only each entry's size and whether its name is `:authority`.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// The dynamic table's largest size: SETTINGS_HEADER_TABLE_SIZE as spored's HTTP/2 server
/// leaves it, the RFC 7540 initial value (tonic does not set it, so h2 never advertises
/// another and refuses a size update above it).
pub const MAX_TABLE_SIZE: usize = 4096;

/// The static table's names (RFC 7541 Appendix A), index 1 to 61.
pub(super) const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

const AUTHORITY: &[u8] = b":authority";

/// A header block the mirror cannot follow. The server's decoder refuses the same bytes
/// (a connection error), so the caller passes them on untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer does not fit in 32 bits")]
    Overflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("a dynamic table size update to {0} bytes, over the limit of {MAX_TABLE_SIZE}")]
    TableTooLarge(usize),
    #[error("a Huffman-coded string is invalid")]
    Huffman(#[source] HuffmanError),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name_len: usize,
    value_len: usize,
    authority: bool,
}

impl Entry {
    /// §4.1: the lengths of name and value (decoded, without Huffman coding) plus 32.
    fn size(&self) -> usize {
        self.name_len + self.value_len + 32
    }
}

/// What the client's encoder has in its dynamic table: the lengths of each entry, and which
/// entries are `:authority` (§2.3.2, §4).
#[derive(Debug)]
pub struct Table {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

/// A field's name as the block or a table gives it.
struct Name {
    len: usize,
    authority: bool,
}

impl Table {
    pub fn new() -> Table {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max_size: MAX_TABLE_SIZE,
        }
    }

    /// The sum of the entries' sizes (§4.1).
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The name at `index` of the joint address space (§2.3.3).
    fn name(&self, index: usize) -> Result<Name, HpackError> {
        if let Some(name) = index.checked_sub(1).and_then(|i| STATIC_NAMES.get(i)) {
            return Ok(Name {
                len: name.len(),
                authority: index == 1,
            });
        }
        let entry = index
            .checked_sub(STATIC_NAMES.len() + 1)
            .and_then(|i| self.entries.get(i))
            .ok_or(HpackError::BadIndex(index))?;
        Ok(Name {
            len: entry.name_len,
            authority: entry.authority,
        })
    }

    /// The value length of the dynamic entry at `index`, None for a static one.
    fn dynamic_value_len(&self, index: usize) -> Option<usize> {
        let i = index.checked_sub(STATIC_NAMES.len() + 1)?;
        Some(self.entries.get(i)?.value_len)
    }

    /// Adds an entry, evicting the oldest ones to make room; one larger than the whole table
    /// empties it and is not added (§4.4).
    fn insert(&mut self, entry: Entry) {
        while self.size + entry.size() > self.max_size {
            match self.entries.pop_back() {
                Some(old) => self.size -= old.size(),
                None => break,
            }
        }
        if entry.size() <= self.max_size {
            self.size += entry.size();
            self.entries.push_front(entry);
        }
    }

    /// A dynamic table size update (§4.3, §6.3).
    fn resize(&mut self, max_size: usize) -> Result<(), HpackError> {
        if max_size > MAX_TABLE_SIZE {
            return Err(HpackError::TableTooLarge(max_size));
        }
        self.max_size = max_size;
        while self.size > self.max_size {
            if let Some(old) = self.entries.pop_back() {
                self.size -= old.size();
            }
        }
        Ok(())
    }
}

/// Reads one complete header block (RFC 7541 §3, §6), updating `table` as the server's decoder
/// will, and returns the block to pass on in its place, or None to pass it on as it is.
///
/// An `:authority` value that `replace` refuses is replaced by what it returns, written as a
/// plain string (§5.2, no Huffman coding) of the same decoded length. An empty value has no
/// such replacement: its field is left out when that changes no table, and kept otherwise.
pub fn rewrite_block(
    table: &mut Table,
    block: &[u8],
    replace: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, HpackError> {
    let mut reader = Reader { block, pos: 0 };
    // The rewritten block, started at the first change.
    let mut out: Option<Vec<u8>> = None;
    // The end of the part of `block` already in `out`.
    let mut copied = 0;
    while reader.pos < block.len() {
        let start = reader.pos;
        let first = block[start];
        if first & 0x80 != 0 {
            // §6.1 indexed field. Static index 1 is `:authority` with an empty value; a
            // dynamic entry holds whatever value the server's table got, already replaced.
            // Leaving an indexed field out changes no table.
            let index = reader.int(7)?;
            let name = table.name(index)?;
            let empty = index == 1 || table.dynamic_value_len(index) == Some(0);
            if name.authority && empty {
                skip(block, &mut out, &mut copied, start, reader.pos);
            }
        } else if first & 0x20 != 0 && first & 0x40 == 0 {
            // §6.3 dynamic table size update.
            let size = reader.int(5)?;
            table.resize(size)?;
        } else {
            // §6.2 literal: with incremental indexing (01), without indexing (0000) or never
            // indexed (0001).
            let indexing = first & 0x40 != 0;
            let index = reader.int(if indexing { 6 } else { 4 })?;
            let name = if index == 0 {
                let name = reader.string()?;
                Name {
                    len: name.len(),
                    authority: *name == *AUTHORITY,
                }
            } else {
                table.name(index)?
            };
            let value_start = reader.pos;
            let value = reader.string()?;
            if indexing {
                table.insert(Entry {
                    name_len: name.len,
                    value_len: value.len(),
                    authority: name.authority,
                });
            }
            if !name.authority {
                continue;
            }
            if value.is_empty() {
                if !indexing {
                    skip(block, &mut out, &mut copied, start, reader.pos);
                }
            } else if let Some(new) = replace(&value) {
                debug_assert_eq!(new.len(), value.len());
                let out = out.get_or_insert_with(|| Vec::with_capacity(block.len() + 8));
                out.extend_from_slice(&block[copied..value_start]);
                plain_string(out, &new);
                copied = reader.pos;
            }
        }
    }
    Ok(out.map(|mut out| {
        out.extend_from_slice(&block[copied..]);
        out
    }))
}

/// Leaves `block[start..end]` out of the rewritten block.
fn skip(block: &[u8], out: &mut Option<Vec<u8>>, copied: &mut usize, start: usize, end: usize) {
    let out = out.get_or_insert_with(|| Vec::with_capacity(block.len()));
    out.extend_from_slice(&block[*copied..start]);
    *copied = end;
}

/// Appends a string literal without Huffman coding (§5.2): a 7-bit prefix length, the bytes.
fn plain_string(out: &mut Vec<u8>, value: &[u8]) {
    // §5.1 integer with a 7-bit prefix; the H bit stays 0.
    let mut len = value.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(value);
}

/// A cursor over one header block.
struct Reader<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// §5.1 integer with an N-bit prefix, in at most 5 bytes as h2's decoder accepts.
    fn int(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let first = *self.block.get(self.pos).ok_or(HpackError::Truncated)?;
        self.pos += 1;
        let mut value = usize::from(first & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        for shift in [0, 7, 14, 21] {
            let byte = *self.block.get(self.pos).ok_or(HpackError::Truncated)?;
            self.pos += 1;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError::Overflow)
    }

    /// §5.2 string literal, decoded when Huffman-coded.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, HpackError> {
        let huffman = self.block.get(self.pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self.pos.checked_add(len).ok_or(HpackError::Truncated)?;
        let raw = self.block.get(self.pos..end).ok_or(HpackError::Truncated)?;
        self.pos = end;
        if !huffman {
            return Ok(Cow::Borrowed(raw));
        }
        let mut text = Vec::with_capacity(len * 8 / 5);
        huffman::decode(raw, &mut text).map_err(HpackError::Huffman)?;
        Ok(Cow::Owned(text))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::authority::huffman::tests::encode as huffman;
    use crate::authority::replacement;
    use tonic::codegen::http::uri::Authority;

    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// A string literal, Huffman-coded or not (§5.2).
    fn string(text: &[u8], coded: bool) -> Vec<u8> {
        let body = if coded { huffman(text) } else { text.to_vec() };
        let mut out = Vec::new();
        plain_string(&mut out, &body);
        if coded {
            out[0] |= 0x80;
        }
        out
    }

    fn rewrite(table: &mut Table, block: &[u8]) -> Result<Option<Vec<u8>>, HpackError> {
        rewrite_block(table, block, replacement)
    }

    #[test]
    fn rfc_request_examples_pass_unchanged_and_fill_the_table_alike() {
        // RFC 7541 C.3 (plain) and C.4 (Huffman): three requests on one connection, with the
        // dynamic table's size after each.
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut table = Table::new();
            for (block, size) in blocks.iter().zip([57, 110, 164]) {
                assert_eq!(rewrite(&mut table, &hex(block)), Ok(None));
                assert_eq!(table.size(), size);
            }
        }
    }

    #[test]
    fn rfc_response_examples_evict_as_the_rfc_does() {
        // RFC 7541 C.5 and C.6, with SETTINGS_HEADER_TABLE_SIZE 256 (set by a size update).
        for blocks in [
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                 3d31",
            ],
            [
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
        ] {
            let mut table = Table::new();
            assert_eq!(rewrite(&mut table, &hex("3fe1 01")), Ok(None));
            for (block, size) in blocks.iter().zip([222, 222, 215]) {
                assert_eq!(rewrite(&mut table, &hex(block)), Ok(None));
                assert_eq!(table.size(), size);
            }
        }
    }

    #[test]
    fn grpcio_socket_path_is_replaced_and_its_index_then_names_the_replacement() {
        // The first two header blocks grpcio 1.85 sent to unix:///tmp/grpcx/cap.sock: a
        // literal name `:authority` with incremental indexing (`400a ...`, value `16 ...`),
        // then the same request by index (`c4` is that entry, dynamic index 68 - 61 = 7).
        let first = "40053a706174681c2f677270632e6865616c74682e76312e4865616c74682f436865636b\
                     400a3a617574686f7269747916746d7025324667727063782532466361702e736f636b8386\
                     400c636f6e74656e742d74797065106170706c69636174696f6e2f677270634002746508\
                     747261696c6572734014677270632d6163636570742d656e636f64696e67176964656e74\
                     6974792c206465666c6174652c20677a6970400c677270632d74696d656f7574023153\
                     400a757365722d6167656e7430677270632d707974686f6e2f312e38352e3320677270\
                     632d632f35382e302e3020286c696e75783b2063687474703229";
        let second = "c4c38386c2c1c0400c677270632d74696d656f757405313031306dbf";
        let mut table = Table::new();
        let rewritten = rewrite(&mut table, &hex(first)).unwrap().unwrap();
        let mut expected = hex(first);
        let at = expected
            .windows(22)
            .position(|w| w == b"tmp%2Fgrpcx%2Fcap.sock")
            .unwrap();
        expected[at..at + 22].copy_from_slice(b"tmp-2Fgrpcx-2Fcap.sock");
        assert_eq!(rewritten, expected);
        let size = table.size();
        assert_eq!(rewrite(&mut table, &hex(second)), Ok(None));
        // `grpc-timeout: 1010m` was added; nothing was evicted.
        assert_eq!(table.size(), size + 12 + 5 + 32);
    }

    #[test]
    fn every_literal_form_of_a_bad_authority_is_replaced() {
        let path = b"/run/spore/spored.sock";
        let fixed = b"-run-spore-spored.sock";
        for coded in [false, true] {
            // (prefix, whether the table grows)
            for (prefix, indexing) in [
                (vec![0x41], true),  // with indexing, static name 1
                (vec![0x01], false), // without indexing, static name 1
                (vec![0x11], false), // never indexed, static name 1
                (
                    {
                        let mut p = vec![0x40];
                        p.extend(string(AUTHORITY, coded));
                        p
                    },
                    true,
                ),
                (
                    {
                        let mut p = vec![0x00];
                        p.extend(string(AUTHORITY, coded));
                        p
                    },
                    false,
                ),
                (
                    {
                        let mut p = vec![0x10];
                        p.extend(string(AUTHORITY, coded));
                        p
                    },
                    false,
                ),
            ] {
                let mut block = vec![0x82, 0x86];
                block.extend(&prefix);
                block.extend(string(path, coded));
                block.push(0x84);
                let mut table = Table::new();
                let out = rewrite(&mut table, &block).unwrap().unwrap();
                let mut expected = vec![0x82, 0x86];
                expected.extend(&prefix);
                expected.extend(string(fixed, false));
                expected.push(0x84);
                assert_eq!(out, expected, "prefix {prefix:02x?}, Huffman {coded}");
                let size = if indexing { 10 + path.len() + 32 } else { 0 };
                assert_eq!(table.size(), size);
                // A later block that names the entry by index needs no change.
                if indexing {
                    assert_eq!(rewrite(&mut table, &[0x82, 0x86, 0xbe, 0x84]), Ok(None));
                }
            }
        }
    }

    #[test]
    fn a_dynamic_entry_named_authority_lends_its_name() {
        // Insert `:authority: localhost`, then a literal whose name is that entry (index 62).
        let mut table = Table::new();
        let mut block = vec![0x41];
        block.extend(string(b"localhost", true));
        assert_eq!(rewrite(&mut table, &block), Ok(None));
        let mut block = vec![0x0f, 0x2f]; // without indexing, name index 15 + 47 = 62
        block.extend(string(b"a b", false));
        let mut expected = vec![0x0f, 0x2f];
        expected.extend(string(b"a-b", false));
        assert_eq!(rewrite(&mut table, &block), Ok(Some(expected)));
    }

    #[test]
    fn acceptable_authorities_are_kept() {
        for value in [
            &b"localhost"[..],
            b"localhost:50051",
            b"[::1]:80",
            b"spored",
            b"a.b-c_d~e",
        ] {
            let mut block = vec![0x41];
            block.extend(string(value, false));
            assert_eq!(rewrite(&mut Table::new(), &block), Ok(None), "{value:?}");
        }
        for value in [
            &b"/run/x.sock"[..],
            b"run%2Fx.sock",
            b"a:b:c",
            b"[::1",
            b"h\xc3\xa9",
            b"a b",
        ] {
            let out = replacement(value).unwrap();
            assert_eq!(out.len(), value.len());
            assert!(Authority::try_from(out.as_slice()).is_ok(), "{out:?}");
        }
    }

    #[test]
    fn empty_authorities_are_left_out_where_no_table_changes() {
        let mut table = Table::new();
        // Static `:authority` by index, and a literal without indexing: both left out.
        assert_eq!(
            rewrite(&mut table, &[0x82, 0x81, 0x86]),
            Ok(Some(vec![0x82, 0x86]))
        );
        assert_eq!(
            rewrite(&mut table, &[0x82, 0x01, 0x00, 0x86]),
            Ok(Some(vec![0x82, 0x86]))
        );
        // With indexing it must reach the server's table, so it stays (and h2 refuses it).
        assert_eq!(rewrite(&mut table, &[0x82, 0x41, 0x00]), Ok(None));
        assert_eq!(table.size(), 42);
        // A later reference to that entry changes no table: left out.
        assert_eq!(
            rewrite(&mut table, &[0x82, 0xbe, 0x86]),
            Ok(Some(vec![0x82, 0x86]))
        );
    }

    #[test]
    fn long_values_keep_a_multi_byte_length() {
        let value = vec![b'/'; 300];
        let mut block = vec![0x01];
        block.extend(string(&value, true));
        let out = rewrite(&mut Table::new(), &block).unwrap().unwrap();
        // 300 = 127 + 173: 0x7f, then 173 as 0xad | 0x80, 0x01.
        assert_eq!(&out[..4], &[0x01, 0x7f, 0xad, 0x01]);
        assert_eq!(&out[4..], &[b'-'; 300][..]);
    }

    #[test]
    fn size_updates_evict_and_are_bounded() {
        let mut table = Table::new();
        let mut block = vec![0x41];
        block.extend(string(b"/a.sock", false));
        assert!(rewrite(&mut table, &block).unwrap().is_some());
        assert_eq!(table.size(), 49);
        assert_eq!(rewrite(&mut table, &[0x20]), Ok(None));
        assert_eq!(table.size(), 0);
        // The entry is gone: its index is now invalid.
        assert_eq!(rewrite(&mut table, &[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(rewrite(&mut table, &hex("3fe1 1f")), Ok(None)); // back to 4096
        assert_eq!(
            rewrite(&mut table, &hex("3fe2 1f")),
            Err(HpackError::TableTooLarge(4097))
        );
        // An entry larger than the table empties it and is not added (§4.4).
        assert_eq!(rewrite(&mut table, &hex("3f21")), Ok(None)); // 64
        assert!(rewrite(&mut table, &block).unwrap().is_some());
        assert_eq!(table.size(), 49);
        let mut big = vec![0x40];
        big.extend(string(b"x-big", false));
        big.extend(string(&[b'v'; 40], false));
        assert_eq!(rewrite(&mut table, &big), Ok(None));
        assert_eq!(table.size(), 0);
    }

    #[test]
    fn undecodable_blocks_are_errors() {
        let mut table = Table::new();
        let cases: [(&[u8], HpackError); 8] = [
            (&[0x80], HpackError::BadIndex(0)),
            (&[0xbe], HpackError::BadIndex(62)),
            (&[0xff, 0x80, 0x80, 0x80, 0x80, 0x01], HpackError::Overflow),
            (&[0xff, 0x80], HpackError::Truncated),
            (&[0x41, 0x05, b'a'], HpackError::Truncated),
            (&[0x40], HpackError::Truncated),
            (
                &[0x41, 0x81, 0x00],
                HpackError::Huffman(HuffmanError::Padding),
            ),
            (
                &[0x41, 0x84, 0xff, 0xff, 0xff, 0xff],
                HpackError::Huffman(HuffmanError::Eos),
            ),
        ];
        for (block, error) in cases {
            assert_eq!(rewrite(&mut table, block), Err(error), "{block:02x?}");
        }
    }
}
