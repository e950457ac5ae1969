//! HPACK's Huffman code (RFC 7541 Appendix B), decoding only.
//!
//! The code is canonical: codes of one length are consecutive and ordered by symbol, and each
//! length's first code follows the last code of the shorter lengths. So the 257 code lengths
//! below determine every code, and decoding needs only, per length, how many codes it has.

/// The code length in bits of each symbol, 0..=255 and EOS (256), from RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20 ' ' ..
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30 '0' ..
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40 '@' ..
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50 'P' ..
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60 '`' ..
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70 'p' ..
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const MAX_LEN: usize = 30;
const EOS: u16 = 256;

/// How many codes have each length (index 0 unused).
const COUNTS: [u16; MAX_LEN + 1] = {
    let mut counts = [0u16; MAX_LEN + 1];
    let mut symbol = 0;
    while symbol < LENGTHS.len() {
        counts[LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    counts
};

/// The symbols ordered by (code length, symbol): the order of their canonical codes.
const SORTED: [u16; 257] = {
    let mut sorted = [0u16; 257];
    let mut next = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut symbol = 0;
        while symbol < LENGTHS.len() {
            if LENGTHS[symbol] as usize == len {
                sorted[next] = symbol as u16;
                next += 1;
            }
            symbol += 1;
        }
        len += 1;
    }
    sorted
};

/// A Huffman-coded string that RFC 7541 §5.2 says to treat as a decoding error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("the Huffman string contains the EOS symbol")]
    Eos,
    #[error("the Huffman string's padding is longer than 7 bits or not the EOS prefix")]
    Padding,
}

/// Decodes a Huffman-coded string into `out`.
pub fn decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Canonical decoding one bit at a time (as zlib's puff does): `code` holds the bits read
    // for the current symbol, and `first` the first code of length `len`, whose symbols start
    // at `index` in SORTED. Header strings are short, so speed does not matter here.
    let (mut code, mut first, mut index, mut len) = (0u32, 0u32, 0usize, 0usize);
    for byte in coded {
        for shift in (0..8).rev() {
            code |= u32::from(byte >> shift) & 1;
            len += 1;
            let count = u32::from(COUNTS[len]);
            if code - first < count {
                let symbol = SORTED[index + (code - first) as usize];
                if symbol == EOS {
                    return Err(HuffmanError::Eos);
                }
                out.push(symbol as u8);
                (code, first, index, len) = (0, 0, 0, 0);
                continue;
            }
            if len == MAX_LEN {
                // Unreachable with a complete code (the lengths' Kraft sum is 1), kept so a
                // wrong table fails here rather than indexing past COUNTS.
                return Err(HuffmanError::Eos);
            }
            index += count as usize;
            first = (first + count) << 1;
            code <<= 1;
        }
    }
    // What is left must be a prefix of EOS (all ones) of at most 7 bits: `code` was shifted
    // once after its last bit.
    let pad = code >> 1;
    if len > 7 || (len > 0 && pad != (1 << len) - 1) {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The canonical code of every symbol, as the encoder in the tests uses it.
    pub(crate) fn codes() -> Vec<(u32, u8)> {
        let mut codes = vec![(0u32, 0u8); 257];
        let (mut code, mut prev) = (0u32, 0u8);
        for (i, &symbol) in SORTED.iter().enumerate() {
            let len = LENGTHS[symbol as usize];
            if i > 0 {
                code = (code + 1) << (len - prev);
            }
            prev = len;
            codes[symbol as usize] = (code, len);
        }
        codes
    }

    /// Huffman-encodes `text` with EOS padding (RFC 7541 §5.2).
    pub(crate) fn encode(text: &[u8]) -> Vec<u8> {
        let codes = codes();
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &b in text {
            let (code, len) = codes[b as usize];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
        }
        out
    }

    fn decoded(coded: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(coded, &mut out).map(|()| out)
    }

    #[test]
    fn the_lengths_make_a_complete_prefix_code() {
        // Kraft: the sum of 2^-len over all symbols is exactly 1.
        let sum: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(sum, 1 << MAX_LEN);
    }

    #[test]
    fn canonical_codes_match_the_rfc_table() {
        // Spot checks against RFC 7541 Appendix B, across lengths.
        let codes = codes();
        let rfc: [(usize, u32, u8); 12] = [
            (0, 0x1ff8, 13),
            (b' ' as usize, 0x14, 6),
            (b'%' as usize, 0x15, 6),
            (b'/' as usize, 0x18, 6),
            (b'0' as usize, 0x0, 5),
            (b':' as usize, 0x5c, 7),
            (b'a' as usize, 0x3, 5),
            (b'z' as usize, 0x7b, 7),
            (b'~' as usize, 0x1ffd, 13),
            (0x80, 0xfffe6, 20),
            (0xff, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ];
        for (symbol, code, len) in rfc {
            assert_eq!(codes[symbol], (code, len), "symbol {symbol}");
        }
    }

    #[test]
    fn rfc_7541_appendix_c_strings_decode() {
        // C.4.1, C.4.2, C.4.3 and C.6.1.
        let cases: [(&str, &[u8]); 6] = [
            ("f1e3c2e5f23a6ba0ab90f4ff", b"www.example.com"),
            ("a8eb10649cbf", b"no-cache"),
            ("25a849e95ba97d7f", b"custom-key"),
            ("25a849e95bb8e8b4bf", b"custom-value"),
            ("6402", b"302"),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                b"https://www.example.com",
            ),
        ];
        for (hex, text) in cases {
            let coded: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(decoded(&coded).unwrap(), text);
            assert_eq!(encode(text), coded);
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)).unwrap(), all);
        for b in 0..=255u8 {
            assert_eq!(decoded(&encode(&[b, b'/', b])).unwrap(), [b, b'/', b]);
        }
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        // '0' is 00000: padded with 111 it is 0x07; with zeros, or a whole byte of ones, not.
        assert_eq!(decoded(&[0x07]).unwrap(), b"0");
        assert_eq!(decoded(&[0x00]), Err(HuffmanError::Padding));
        assert_eq!(decoded(&[0x07, 0xff]), Err(HuffmanError::Padding));
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::Padding));
        // EOS itself (30 ones) followed by two padding ones.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
    }
}
