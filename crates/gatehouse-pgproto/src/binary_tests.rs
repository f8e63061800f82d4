//! Binary values as drivers send them, and the edges hostile ones could send.

use super::*;

fn show(oid: u32, v: &[u8]) -> Option<String> {
    decode(oid, v, 4096)
}

/// A binary numeric from its header words and base-10000 digits.
fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut v = (digits.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(&weight.to_be_bytes());
    v.extend_from_slice(&sign.to_be_bytes());
    v.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

fn num(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Option<String> {
    show(1700, &numeric_bytes(weight, sign, dscale, digits))
}

#[test]
fn numerics_as_postgresql_prints_them() {
    // pgjdbc's BigDecimal("1.25"), as logged in hex before: \x0002000000000002000109c4
    assert_eq!(
        show(1700, &[0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x09, 0xc4]).as_deref(),
        Some("1.25")
    );
    assert_eq!(num(0, 0x4000, 2, &[1, 2500]).as_deref(), Some("-1.25"));
    assert_eq!(num(0, 0, 0, &[]).as_deref(), Some("0"));
    assert_eq!(num(0, 0, 3, &[]).as_deref(), Some("0.000"));
    assert_eq!(num(0, 0x4000, 0, &[]).as_deref(), Some("0"));
    // 123456789.5 = 1|2345|6789.5000
    assert_eq!(
        num(2, 0, 1, &[1, 2345, 6789, 5000]).as_deref(),
        Some("123456789.5")
    );
    // 10000 (weight 1, one digit, trailing zero groups left out)
    assert_eq!(num(1, 0, 0, &[1]).as_deref(), Some("10000"));
    // negative weights: 0.00012 = 0.0001|2000, 0.0000000012 = 0.0000|0000|1200
    assert_eq!(num(-1, 0, 5, &[1, 2000]).as_deref(), Some("0.00012"));
    assert_eq!(num(-3, 0, 10, &[1200]).as_deref(), Some("0.0000000012"));
    // digits beyond the display scale are dropped, as numeric_recv does
    assert_eq!(num(0, 0, 1, &[3, 1415]).as_deref(), Some("3.1"));
    assert_eq!(num(-2, 0, 2, &[5]).as_deref(), Some("0.00"));
    // special values
    assert_eq!(num(0, 0xC000, 0, &[]).as_deref(), Some("NaN"));
    assert_eq!(num(0, 0xD000, 0, &[]).as_deref(), Some("Infinity"));
    assert_eq!(num(0, 0xF000, 0, &[]).as_deref(), Some("-Infinity"));
}

#[test]
fn huge_numerics_are_shown_in_scientific_notation_not_padded() {
    // 1e300 would be 301 characters of mostly zeros: 10000^75 = 1e300
    assert_eq!(num(75, 0, 0, &[1]).as_deref(), Some("1e+300"));
    assert_eq!(
        num(32767, 0x4000, 0, &[12, 3400]).as_deref(),
        Some("-1.234e+131069")
    );
    assert_eq!(num(-100, 0, 0x3FFF, &[7]).as_deref(), Some("7e-400"));
    // below the display scale: zero, as PostgreSQL reads it
    assert_eq!(num(i16::MIN, 0, 0x3FFF, &[7]).as_deref(), Some("0"));
    // a huge scale of nothing is zero
    assert_eq!(num(0, 0, 0x3FFF, &[]).as_deref(), Some("0"));
    for weight in [i16::MIN, -1, 0, 1, i16::MAX] {
        for dscale in [0, 1, 100, 0x3FFF] {
            let s = num(weight, 0, dscale, &[9999, 1, 9999]).expect("valid");
            assert!(s.len() < 200, "{weight} {dscale}: {s}");
        }
    }
}

#[test]
fn malformed_numerics_are_not_guessed_at() {
    // a digit over 9999, an unknown sign, a dscale over the mask
    assert_eq!(num(0, 0, 0, &[10_000]), None);
    assert_eq!(num(0, 0x8000, 0, &[1]), None);
    assert_eq!(num(0, 0, 0x4000, &[1]), None);
    // the digit count disagrees with the length, both ways; too many digits
    let mut v = numeric_bytes(0, 0, 0, &[1, 2]);
    assert_eq!(show(1700, &v[..v.len() - 2]), None);
    v.push(0);
    assert_eq!(show(1700, &v), None);
    assert_eq!(show(1700, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]), None);
    assert_eq!(num(0, 0, 0, &vec![1; 3001]), None);
    for n in 0..8 {
        assert_eq!(show(1700, &[0; 8][..n]), None);
    }
}

#[test]
fn integers_floats_booleans_and_text() {
    assert_eq!(show(21, &(-2_i16).to_be_bytes()).as_deref(), Some("-2"));
    assert_eq!(
        show(23, &i32::MIN.to_be_bytes()).as_deref(),
        Some("-2147483648")
    );
    assert_eq!(
        show(20, &i64::MAX.to_be_bytes()).as_deref(),
        Some("9223372036854775807")
    );
    assert_eq!(
        show(26, &u32::MAX.to_be_bytes()).as_deref(),
        Some("4294967295")
    );
    assert_eq!(show(23, &[0, 0, 1]), None);
    assert_eq!(show(701, &1.25_f64.to_be_bytes()).as_deref(), Some("1.25"));
    assert_eq!(show(700, &1.1_f32.to_be_bytes()).as_deref(), Some("1.1"));
    assert_eq!(show(701, &f64::NAN.to_be_bytes()).as_deref(), Some("NaN"));
    assert_eq!(
        show(701, &f64::NEG_INFINITY.to_be_bytes()).as_deref(),
        Some("-Infinity")
    );
    assert_eq!(
        show(701, &1e300_f64.to_be_bytes()).as_deref(),
        Some("1e300")
    );
    assert_eq!(
        show(700, &f32::INFINITY.to_be_bytes()).as_deref(),
        Some("Infinity")
    );
    assert_eq!(show(16, &[1]).as_deref(), Some("true"));
    assert_eq!(show(16, &[0]).as_deref(), Some("false"));
    assert_eq!(show(16, &[2]), None);
    assert_eq!(show(25, "naïve".as_bytes()).as_deref(), Some("naïve"));
    assert_eq!(show(1043, &[0xff]), None);
    assert_eq!(show(3802, b"\x01{\"a\": 1}").as_deref(), Some("{\"a\": 1}"));
    assert_eq!(show(3802, b"\x02{}"), None);
    assert_eq!(show(17, &[0xde, 0xad]).as_deref(), Some("\\xdead::bytea"));
    assert_eq!(show(17, &[]).as_deref(), Some("\\x::bytea"));
    assert_eq!(
        show(2950, &[0x12; 16]).as_deref(),
        Some("12121212-1212-1212-1212-121212121212")
    );
    assert_eq!(show(2950, &[0; 15]), None);
    assert_eq!(show(999_999, &[1, 2]), None);
}

#[test]
fn dates_times_and_timestamps() {
    let us = |d: i64, s: i64| (d * 86_400 + s) * 1_000_000;
    assert_eq!(
        show(1082, &0_i32.to_be_bytes()).as_deref(),
        Some("2000-01-01")
    );
    assert_eq!(
        show(1082, &(-1_i32).to_be_bytes()).as_deref(),
        Some("1999-12-31")
    );
    // 2024-02-29 is day 8825
    assert_eq!(
        show(1082, &8825_i32.to_be_bytes()).as_deref(),
        Some("2024-02-29")
    );
    assert_eq!(
        show(1082, &i32::MAX.to_be_bytes()).as_deref(),
        Some("infinity")
    );
    assert_eq!(
        show(1082, &i32::MIN.to_be_bytes()).as_deref(),
        Some("-infinity")
    );
    // 0001-01-01 is day -730119; the day before it is 1 BC
    assert_eq!(
        show(1082, &(-730_119_i32).to_be_bytes()).as_deref(),
        Some("0001-01-01")
    );
    assert_eq!(
        show(1082, &(-730_120_i32).to_be_bytes()).as_deref(),
        Some("0001-12-31 BC")
    );
    assert_eq!(
        show(1114, &(us(8825, 3723) + 500_000).to_be_bytes()).as_deref(),
        Some("2024-02-29 01:02:03.5")
    );
    assert_eq!(
        show(1184, &(-1_i64).to_be_bytes()).as_deref(),
        Some("1999-12-31 23:59:59.999999+00")
    );
    assert_eq!(
        show(1184, &i64::MAX.to_be_bytes()).as_deref(),
        Some("infinity")
    );
    assert_eq!(
        show(1114, &i64::MIN.to_be_bytes()).as_deref(),
        Some("-infinity")
    );
    // the extremes of i64 do not overflow
    assert!(show(1114, &(i64::MIN + 1).to_be_bytes()).is_some_and(|s| s.ends_with(" BC")));
    assert!(show(1114, &(i64::MAX - 1).to_be_bytes()).is_some());
    assert_eq!(
        show(1083, &us(0, 45_296).to_be_bytes()).as_deref(),
        Some("12:34:56")
    );
    assert_eq!(
        show(1083, &us(1, 0).to_be_bytes()).as_deref(),
        Some("24:00:00")
    );
    assert_eq!(show(1083, &(us(1, 0) + 1).to_be_bytes()), None);
    assert_eq!(show(1083, &(-1_i64).to_be_bytes()), None);
    let mut tz = us(0, 3600).to_be_bytes().to_vec();
    tz.extend_from_slice(&(-19_800_i32).to_be_bytes()); // UTC+05:30
    assert_eq!(show(1266, &tz).as_deref(), Some("01:00:00+05:30"));
    let mut tz = us(0, 0).to_be_bytes().to_vec();
    tz.extend_from_slice(&3600_i32.to_be_bytes());
    assert_eq!(show(1266, &tz).as_deref(), Some("00:00:00-01"));
    assert_eq!(show(1266, &tz[..11]), None);
}

#[test]
fn intervals() {
    let iv = |us: i64, days: i32, months: i32| {
        let mut v = us.to_be_bytes().to_vec();
        v.extend_from_slice(&days.to_be_bytes());
        v.extend_from_slice(&months.to_be_bytes());
        show(1186, &v)
    };
    assert_eq!(
        iv(14_706_000_000, 3, 14).as_deref(),
        Some("1 year 2 mons 3 days 04:05:06")
    );
    assert_eq!(iv(0, 0, 0).as_deref(), Some("00:00:00"));
    assert_eq!(
        iv(7_200_000_000, -1, 0).as_deref(),
        Some("-1 days +02:00:00")
    );
    assert_eq!(iv(-1_500_000, 0, 0).as_deref(), Some("-00:00:01.5"));
    assert!(iv(i64::MIN, i32::MIN, i32::MIN).is_some());
}

#[test]
fn inet_and_cidr() {
    assert_eq!(
        show(869, &[2, 32, 0, 4, 10, 0, 0, 1]).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        show(869, &[2, 24, 0, 4, 10, 0, 0, 1]).as_deref(),
        Some("10.0.0.1/24")
    );
    assert_eq!(
        show(650, &[2, 8, 1, 4, 10, 0, 0, 0]).as_deref(),
        Some("10.0.0.0/8")
    );
    let mut v6 = vec![3, 128, 0, 16];
    v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(show(869, &v6).as_deref(), Some("::1"));
    assert_eq!(show(869, &[2, 33, 0, 4, 10, 0, 0, 1]), None);
    assert_eq!(show(869, &[2, 32, 0, 16, 10, 0, 0, 1]), None);
}

/// A binary array of `element` with `dims` (length, lower bound) and the given elements.
fn array_bytes(element: u32, dims: &[(i32, i32)], elements: &[Option<&[u8]>]) -> Vec<u8> {
    let mut v = (dims.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&i32::from(elements.iter().any(Option::is_none)).to_be_bytes());
    v.extend_from_slice(&element.to_be_bytes());
    for (len, lower) in dims {
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&lower.to_be_bytes());
    }
    for e in elements {
        match e {
            None => v.extend_from_slice(&(-1_i32).to_be_bytes()),
            Some(b) => {
                v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                v.extend_from_slice(b);
            }
        }
    }
    v
}

#[test]
fn arrays_of_decoded_types() {
    let one = 1_i32.to_be_bytes();
    let two = 2_i32.to_be_bytes();
    let ints = array_bytes(23, &[(3, 1)], &[Some(&one), None, Some(&two)]);
    assert_eq!(show(1007, &ints).as_deref(), Some("{1,NULL,2}"));
    let square = array_bytes(
        23,
        &[(2, 1), (2, 1)],
        &[Some(&one), Some(&two), Some(&two), Some(&one)],
    );
    assert_eq!(show(1007, &square).as_deref(), Some("{{1,2},{2,1}}"));
    let shifted = array_bytes(23, &[(2, 0)], &[Some(&one), Some(&two)]);
    assert_eq!(show(1007, &shifted).as_deref(), Some("[0:1]={1,2}"));
    let texts = array_bytes(
        25,
        &[(5, 1)],
        &[
            Some(b"a"),
            Some(b""),
            Some(b"null"),
            Some(b"x,\"y\" z"),
            Some(b"{\\}"),
        ],
    );
    assert_eq!(
        show(1009, &texts).as_deref(),
        Some(r#"{a,"","null","x,\"y\" z","{\\}"}"#)
    );
    let numerics = array_bytes(
        1700,
        &[(2, 1)],
        &[
            Some(&numeric_bytes(0, 0, 2, &[1, 2500])),
            Some(&numeric_bytes(0, 0xC000, 0, &[])),
        ],
    );
    assert_eq!(show(1231, &numerics).as_deref(), Some("{1.25,NaN}"));
    let stamps = array_bytes(1114, &[(1, 1)], &[Some(&0_i64.to_be_bytes())]);
    assert_eq!(
        show(1115, &stamps).as_deref(),
        Some("{\"2000-01-01 00:00:00\"}")
    );
    assert_eq!(
        show(1007, &array_bytes(23, &[], &[])).as_deref(),
        Some("{}")
    );
}

#[test]
fn malformed_arrays_are_not_guessed_at() {
    let one = 1_i32.to_be_bytes();
    // the wrong element type for the array type
    assert_eq!(show(1007, &array_bytes(20, &[(1, 1)], &[Some(&one)])), None);
    // an element the element type rejects
    assert_eq!(
        show(1007, &array_bytes(23, &[(1, 1)], &[Some(&[1, 2])])),
        None
    );
    // more elements claimed than present, fewer claimed than present
    assert_eq!(show(1007, &array_bytes(23, &[(2, 1)], &[Some(&one)])), None);
    assert_eq!(
        show(1007, &array_bytes(23, &[(1, 1)], &[Some(&one), Some(&one)])),
        None
    );
    // dimensions whose product overflows, negative lengths, too many dimensions
    let huge = array_bytes(23, &[(i32::MAX, 1); 3], &[Some(&one)]);
    assert_eq!(show(1007, &huge), None);
    assert_eq!(show(1007, &array_bytes(23, &[(-1, 1)], &[])), None);
    assert_eq!(
        show(1007, &array_bytes(23, &[(1, 1); 7], &[Some(&one)])),
        None
    );
    // a zero dimension beside huge ones has no elements
    let empty = array_bytes(23, &[(0, 1), (i32::MAX, 1), (i32::MAX, 1)], &[]);
    assert_eq!(show(1007, &empty).as_deref(), Some("{}"));
    // an element length running past the end
    let mut cut = array_bytes(23, &[(1, 1)], &[Some(&one)]);
    cut.pop();
    assert_eq!(show(1007, &cut), None);
    for n in 0..20 {
        assert_eq!(
            show(1007, &array_bytes(23, &[(1, 1)], &[Some(&one)])[..n]),
            None
        );
    }
}

#[test]
fn a_long_array_stops_at_the_limit() {
    let zero = numeric_bytes(0, 0, 60, &[]);
    let elements: Vec<Option<&[u8]>> = vec![Some(&zero[..]); 10_000];
    let v = array_bytes(1700, &[(10_000, 1)], &elements);
    let s = decode(1231, &v, 4096).expect("valid array");
    assert!(s.len() < 4096 + 100 && s.ends_with('…'), "{}", s.len());
}
