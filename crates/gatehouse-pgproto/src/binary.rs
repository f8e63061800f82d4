//! Binary-format parameter values shown as text for the statement log: the types drivers
//! send in binary (pgjdbc: integers, floats, `numeric`, `bytea`, `uuid`; psycopg 3 with
//! `binary=True` and asyncpg: nearly everything), decoded by their type OID as PostgreSQL
//! would print them (timestamps as UTC). A value that is not what its type's binary format
//! allows is not guessed at: [`decode`] returns `None` and the caller shows it as hex.
//!
//! Hostile input must not cost more than it weighs: every scalar's text is bounded by its
//! own size or by a small constant (a `numeric` whose plain form would be long zero padding
//! is shown in scientific notation), and an array stops once its text passes the caller's
//! limit.

use std::fmt::Write as _;

/// A `numeric` whose plain form would need more digits than this beyond its significant
/// ones (zero padding from a large weight or display scale) is shown as `d.ddde±N`.
const NUMERIC_MAX_PADDING: i64 = 64;
/// PostgreSQL's own bound on a binary `numeric`'s digit count (`numeric_recv`).
const NUMERIC_MAX_NDIGITS: usize = 1000 + 2000;
/// PostgreSQL's MAXDIM.
const ARRAY_MAX_DIMS: usize = 6;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const USECS_PER_DAY: i64 = 86_400_000_000;

/// The text of a binary value of type `oid`, or None if the type is not one Gatehouse
/// decodes or the bytes are not a valid value of it. `limit` bounds an array's text (it
/// stops, marked `…`, once past it); scalars are bounded by their own size.
pub fn decode(oid: u32, v: &[u8], limit: usize) -> Option<String> {
    match array_element(oid) {
        Some(element) => array(element, v, limit),
        None => scalar(oid, v),
    }
}

/// The element type of an array type Gatehouse decodes.
fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1001 => 17,
        1002 => 18,
        1003 => 19,
        1005 => 21,
        1007 => 23,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1028 => 26,
        199 => 114,
        143 => 142,
        1182 => 1082,
        1183 => 1083,
        1115 => 1114,
        1185 => 1184,
        1187 => 1186,
        1270 => 1266,
        1231 => 1700,
        2951 => 2950,
        3807 => 3802,
        1041 => 869,
        651 => 650,
        _ => return None,
    })
}

fn be<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    <[u8; N]>::try_from(v).ok()
}

fn scalar(oid: u32, v: &[u8]) -> Option<String> {
    match oid {
        16 => match v {
            [0] => Some("false".into()),
            [1] => Some("true".into()),
            _ => None,
        },
        17 => Some(format!("{}::bytea", hex(v))),
        18 => match v {
            [c] if c.is_ascii() => Some(char::from(*c).to_string()),
            _ => None,
        },
        21 => be(v).map(|b| i16::from_be_bytes(b).to_string()),
        23 => be(v).map(|b| i32::from_be_bytes(b).to_string()),
        20 => be(v).map(|b| i64::from_be_bytes(b).to_string()),
        26 => be(v).map(|b| u32::from_be_bytes(b).to_string()),
        700 => be(v).map(|b| float(f32::from_be_bytes(b))),
        701 => be(v).map(|b| float(f64::from_be_bytes(b))),
        25 | 1043 | 1042 | 19 | 114 | 142 | 705 => std::str::from_utf8(v).ok().map(str::to_owned),
        // jsonb and jsonpath: a version byte (1), then the text
        3802 | 4072 => match v.split_first() {
            Some((1, j)) => std::str::from_utf8(j).ok().map(str::to_owned),
            _ => None,
        },
        2950 => be::<16>(v).map(|b| uuid(&b)),
        1700 => numeric(v),
        1082 => be(v).map(|b| date(i32::from_be_bytes(b))),
        1083 => be(v).and_then(|b| time(i64::from_be_bytes(b))),
        1266 => timetz(v),
        1114 => be(v).map(|b| timestamp(i64::from_be_bytes(b), "")),
        1184 => be(v).map(|b| timestamp(i64::from_be_bytes(b), "+00")),
        1186 => interval(v),
        869 | 650 => inet(v, oid == 650),
        _ => None,
    }
}

/// `\x` and the bytes in hex (how PostgreSQL prints a `bytea`).
pub(crate) fn hex(v: &[u8]) -> String {
    let mut s = String::with_capacity(2 + v.len() * 2);
    s.push_str("\\x");
    for b in v {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn uuid(b: &[u8; 16]) -> String {
    let h = hex(b);
    let h = &h[2..];
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// As PostgreSQL prints a float: `NaN`, `Infinity`, shortest round-trip digits, exponent
/// form for very large or small magnitudes.
fn float<F: Into<f64> + Copy + std::fmt::Display + std::fmt::LowerExp>(f: F) -> String {
    let wide: f64 = f.into();
    if wide.is_nan() {
        "NaN".into()
    } else if wide.is_infinite() {
        (if wide > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else if wide != 0.0 && !(1e-4..1e16).contains(&wide.abs()) {
        format!("{f:e}")
    } else {
        f.to_string()
    }
}

/// A binary `numeric`: ndigits, weight, sign, dscale (16 bits each), then ndigits base-10000
/// digits, the first worth 10000^weight. PostgreSQL drops digits beyond dscale; so does this.
fn numeric(v: &[u8]) -> Option<String> {
    let word = |i: usize| v.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = i64::from(word(6)?);
    if ndigits > NUMERIC_MAX_NDIGITS || v.len() != 8 + 2 * ndigits || dscale > 0x3FFF {
        return None;
    }
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    };
    // every decimal digit, the first worth 10^top
    let mut digits = Vec::with_capacity(4 * ndigits);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if d >= 10_000 {
            return None;
        }
        digits.extend_from_slice(format!("{d:04}").as_bytes());
    }
    let mut top = 4 * weight + 3;
    // digits below 10^-dscale are not part of the value
    let keep = (top + dscale + 1).clamp(0, digits.len() as i64) as usize;
    digits.truncate(keep);
    let lead = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..lead);
    top -= lead as i64;
    let sig = digits.len() as i64;
    let mut out = String::new();
    if negative && sig > 0 {
        out.push('-');
    }
    // plain form unless that would be mostly zero padding
    let int_len = if sig == 0 { 1 } else { top.max(0) + 1 };
    if int_len + dscale <= sig + NUMERIC_MAX_PADDING {
        let at = |p: i64| -> char {
            let i = top - p;
            if sig > 0 && (0..sig).contains(&i) {
                char::from(digits[i as usize])
            } else {
                '0'
            }
        };
        if sig == 0 || top < 0 {
            out.push('0');
        } else {
            out.extend((0..=top).rev().map(at));
        }
        if dscale > 0 {
            out.push('.');
            out.extend((1..=dscale).map(|k| at(-k)));
        }
        return Some(out);
    }
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    match digits.split_first() {
        None => out.push('0'),
        Some((first, rest)) => {
            out.push(char::from(*first));
            if !rest.is_empty() {
                out.push('.');
                out.extend(rest.iter().map(|d| char::from(*d)));
            }
            let _ = write!(out, "e{}{}", if top < 0 { '-' } else { '+' }, top.abs());
        }
    }
    Some(out)
}

/// `YYYY-MM-DD` of a day counted from 2000-01-01, and whether it is BC (year 0 is 1 BC).
fn ymd(pg_days: i64) -> (String, bool) {
    let (y, m, d) = gatehouse_core::civil_from_days(pg_days + PG_EPOCH_DAYS);
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    (format!("{year:04}-{m:02}-{d:02}"), bc)
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let (s, bc) = ymd(i64::from(days));
            if bc { s + " BC" } else { s }
        }
    }
}

/// `HH:MM:SS[.ffffff]` of a non-negative count of microseconds (hours may pass 24).
fn clock(us: u64) -> String {
    let secs = us / 1_000_000;
    let frac = us % 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac > 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

fn time(us: i64) -> Option<String> {
    (0..=USECS_PER_DAY).contains(&us).then(|| clock(us as u64))
}

/// `time with time zone`: microseconds, then the zone in seconds *west* of UTC.
fn timetz(v: &[u8]) -> Option<String> {
    let us = i64::from_be_bytes(be(v.get(..8)?)?);
    let west = i32::from_be_bytes(be(v.get(8..)?)?);
    let mut s = time(us)?;
    let east = -i64::from(west);
    let a = east.unsigned_abs();
    let _ = write!(s, "{}{:02}", if east < 0 { '-' } else { '+' }, a / 3600);
    if a % 3600 != 0 {
        let _ = write!(s, ":{:02}", a / 60 % 60);
        if a % 60 != 0 {
            let _ = write!(s, ":{:02}", a % 60);
        }
    }
    Some(s)
}

/// Microseconds since 2000-01-01 00:00:00; `zone` is appended (timestamptz: UTC, `+00`).
fn timestamp(us: i64, zone: &str) -> String {
    match us {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let days = us.div_euclid(USECS_PER_DAY);
            let (d, bc) = ymd(days);
            let t = clock(us.rem_euclid(USECS_PER_DAY) as u64);
            format!("{d} {t}{zone}{}", if bc { " BC" } else { "" })
        }
    }
}

/// An interval as PostgreSQL's default style prints it: `1 year 2 mons 3 days 04:05:06`.
fn interval(v: &[u8]) -> Option<String> {
    let us = i64::from_be_bytes(be(v.get(..8)?)?);
    let days = i32::from_be_bytes(be(v.get(8..12)?)?);
    let months = i32::from_be_bytes(be(v.get(12..)?)?);
    let mut parts = Vec::new();
    let mut unit = |n: i64, one: &str, many: &str| {
        if n != 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    };
    unit(i64::from(months / 12), "year", "years");
    unit(i64::from(months % 12), "mon", "mons");
    unit(i64::from(days), "day", "days");
    let negative_before = months < 0 || days < 0;
    if us != 0 || parts.is_empty() {
        let sign = if us < 0 {
            "-"
        } else if negative_before {
            "+"
        } else {
            ""
        };
        parts.push(format!("{sign}{}", clock(us.unsigned_abs())));
    }
    Some(parts.join(" "))
}

/// `inet`/`cidr`: family (2: IPv4, 3: IPv6), prefix bits, is-cidr flag, address length,
/// address.
fn inet(v: &[u8], cidr: bool) -> Option<String> {
    let (head, addr) = v.split_first_chunk::<4>()?;
    let [family, bits, _, len] = *head;
    let (ip, full) = match (family, len, addr.len()) {
        (2, 4, 4) => (
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?).to_string(),
            32,
        ),
        (3, 16, 16) => (
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?).to_string(),
            128,
        ),
        _ => return None,
    };
    if bits > full {
        return None;
    }
    Some(if cidr || bits != full {
        format!("{ip}/{bits}")
    } else {
        ip
    })
}

/// A binary array: dimensions, a has-nulls flag, the element type, each dimension's length
/// and lower bound, then each element as a length (-1: NULL) and its bytes. Shown as
/// PostgreSQL prints it: `{1,2,NULL}`, `{{1,2},{3,4}}`, `[0:1]={a,b}`.
fn array(element: u32, v: &[u8], limit: usize) -> Option<String> {
    let int = |at: usize| {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let ndim = usize::try_from(int(0)?).ok()?;
    let flags = int(4)?;
    if ndim > ARRAY_MAX_DIMS || !matches!(flags, 0 | 1) || int(8)? as u32 != element {
        return None;
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut bounds = String::new();
    let mut all_from_one = true;
    let mut count: usize = 1;
    for d in 0..ndim {
        let len = usize::try_from(int(12 + 8 * d)?).ok()?;
        let lower = i64::from(int(16 + 8 * d)?);
        all_from_one &= lower == 1;
        let _ = write!(bounds, "[{lower}:{}]", lower + len as i64 - 1);
        count = count.checked_mul(len)?;
        dims.push(len);
    }
    let mut rest = v.get(12 + 8 * ndim..)?;
    if ndim == 0 {
        return rest.is_empty().then(|| "{}".into());
    }
    // each element takes at least its length word: a count the bytes cannot hold is bad
    if count > rest.len() / 4 {
        return None;
    }
    let mut out = String::new();
    if !all_from_one {
        out.push_str(&bounds);
        out.push('=');
    }
    if count == 0 {
        out.push_str("{}");
        return rest.is_empty().then_some(out);
    }
    // elements per sub-array of each dimension (all dimensions are at least 1 here, and
    // their product is `count`), to know where braces open and close
    let mut blocks = vec![1usize; ndim + 1];
    for d in (0..ndim).rev() {
        blocks[d] = blocks[d + 1] * dims[d];
    }
    let blocks = &blocks[..ndim];
    for i in 0..count {
        let opens = blocks.iter().filter(|s| i % **s == 0).count();
        if i > 0 {
            out.push(',');
        }
        out.extend(std::iter::repeat_n('{', opens));
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        rest = tail;
        if len == -1 {
            out.push_str("NULL");
        } else {
            let n = usize::try_from(len).ok()?;
            if n > rest.len() {
                return None;
            }
            let (value, tail) = rest.split_at(n);
            rest = tail;
            quote_element(&mut out, &scalar(element, value)?);
        }
        let closes = blocks.iter().filter(|s| (i + 1) % **s == 0).count();
        out.extend(std::iter::repeat_n('}', closes));
        if out.len() > limit && i + 1 < count {
            out.push('…');
            return Some(out);
        }
    }
    rest.is_empty().then_some(out)
}

/// An array element as `array_out` writes it: quoted when empty, `NULL`, or holding
/// braces, commas, quotes, backslashes or white space.
fn quote_element(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s.eq_ignore_ascii_case("NULL")
        && !s
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if plain {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
#[path = "binary_tests.rs"]
mod tests;
