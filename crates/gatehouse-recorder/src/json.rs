//! JSON string literals for event lines, byte for byte as serde_json writes them, fast.
//!
//! Hand-written rather than serde_json's serializer on purpose: serde_json looks at one
//! byte at a time through a table and writes through a `fmt`/`io` adaptor, which made
//! escaping the recorder's largest cost. Terminal output is mostly runs of printable text
//! between a few bytes to escape (`\r\n`, ESC of colour sequences, quotes); this looks at
//! 16 bytes at a time and copies them whole.
//!
//! The output must stay serde_json's exactly (the hash chain covers the bytes, and readers
//! parse them with serde_json): `"` and `\` backslashed; U+0000–U+001F as `\b \t \n \f \r`
//! or `\u00XX` with lowercase hex; everything else as is (DEL, U+2028/U+2029, any non-ASCII).
//! The tests compare the two on every character and on random strings.

/// How many bytes [`first_escape`] looks at, and [`push_str`] copies, at once.
const BLOCK: usize = 16;
/// Room [`push_str`] keeps after what it has written: a block and an escape.
const SLACK: usize = BLOCK + 8;

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Where the first byte of `block` that needs escaping is, if one does: a 16-byte word's
/// bit tricks (a byte below 0x20, a `"`, a `\\`), no branch until the answer. The lowest
/// flag of each is exact (a borrow only runs upwards from a real match), so theirs is too.
fn first_escape(block: &[u8; BLOCK]) -> Option<usize> {
    const ONES: u128 = u128::from_le_bytes([1; BLOCK]);
    const HIGH: u128 = ONES * 0x80;
    let w = u128::from_le_bytes(*block);
    let zero_in = |v: u128| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let flags = below_space | zero_in(w ^ (ONES * 0x22)) | zero_in(w ^ (ONES * 0x5c));
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

/// Byte `b`'s escape, padded to 7 bytes, then its length (0: `b` needs none). Copied whole:
/// a word's store, and what follows the escape is overwritten or cut.
static ESCAPES: [[u8; 8]; 256] = escapes();

const fn escapes() -> [[u8; 8]; 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0; 8]; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = [b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 0xf], 0, 6];
        b += 1;
    }
    let short = [
        (b'"', b'"'),
        (b'\\', b'\\'),
        (0x08, b'b'),
        (b'\t', b't'),
        (b'\n', b'n'),
        (0x0c, b'f'),
        (b'\r', b'r'),
    ];
    let mut i = 0;
    while i < short.len() {
        let (b, c) = short[i];
        table[b as usize] = [b'\\', c, 0, 0, 0, 0, 0, 2];
        i += 1;
    }
    table
}

/// Writes the escape of `b` at `out[o..]` (8 bytes of room); returns its length.
fn put_escape(out: &mut [u8], o: usize, b: u8) -> usize {
    let escape = &ESCAPES[usize::from(b)];
    out[o..o + 8].copy_from_slice(escape);
    usize::from(escape[7])
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// A block of 16 bytes is copied whole, then kept up to the first byte that needs escaping;
/// the escape follows and the next block starts after that byte. Plain text costs a copy
/// per 16 bytes, an escape about as much. Only ever splits `s` after an ASCII byte, so what
/// it appends is UTF-8 when `s` is.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut o = out.len(); // where the next output byte goes; `out` is longer (zeroes)
    let room = |out: &mut Vec<u8>, o: usize, left: usize| {
        if out.len() < o + SLACK {
            out.resize(o + SLACK + left + left / 4, 0);
        }
    };
    room(out, o, bytes.len());
    out[o] = b'"';
    o += 1;
    let mut i = 0;
    while let Some(block) = bytes.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>) {
        room(out, o, bytes.len() - i);
        out[o..o + BLOCK].copy_from_slice(block);
        let Some(clean) = first_escape(block) else {
            (i, o) = (i + BLOCK, o + BLOCK);
            continue;
        };
        (i, o) = (i + clean, o + clean);
        o += put_escape(out, o, bytes[i]);
        i += 1;
    }
    for &b in &bytes[i..] {
        room(out, o, 0);
        if needs_escape(b) {
            o += put_escape(out, o, b);
        } else {
            out[o] = b;
            o += 1;
        }
    }
    room(out, o, 0);
    out[o] = b'"';
    out.truncate(o + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = b"before ".to_vec();
        push_str(&mut out, s);
        let out = String::from_utf8(out).unwrap_or_default();
        out.strip_prefix("before ").unwrap_or_default().to_owned()
    }

    fn assert_as_serde(s: &str) {
        let expected = serde_json::to_string(s).unwrap_or_default();
        assert_eq!(escaped(s), expected, "{s:?}");
    }

    #[test]
    fn every_character_alone_is_escaped_as_serde_json_does() {
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            assert_as_serde(c.encode_utf8(&mut [0; 4]));
        }
    }

    #[test]
    fn characters_to_escape_at_every_place_of_a_block_are_escaped_as_serde_json_does() {
        let special = [
            "\u{0}", "\u{1}", "\u{7}", "\u{8}", "\t", "\n", "\u{b}", "\u{c}", "\r", "\u{1b}",
            "\u{1f}", "\u{7f}", "\"", "\\", "/", "é", "€", "\u{2028}", "\u{2029}", "🚀",
        ];
        for len in 0..3 * BLOCK {
            for a in special {
                for b in special {
                    for place in 0..=len {
                        let filler = "x".repeat(len);
                        let s = format!("{}{a}{b}{}", &filler[..place], &filler[place..]);
                        assert_as_serde(&s);
                    }
                }
            }
        }
    }

    #[test]
    fn random_strings_are_escaped_as_serde_json_does() {
        // mostly the characters that need care, between runs of plain text
        let alphabet: Vec<char> = (0u8..0x80)
            .map(char::from)
            .chain(['é', '€', '\u{2028}', '\u{2029}', '\u{fffd}', '🚀', '日'])
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 200;
            let s: String = (0..len)
                .map(|_| match next() % 3 {
                    0 => 'a',
                    _ => alphabet[(next() % alphabet.len() as u64) as usize],
                })
                .collect();
            assert_as_serde(&s);
        }
    }
}
