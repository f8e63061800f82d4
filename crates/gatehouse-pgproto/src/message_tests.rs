//! Tests of the message views: startup packets, counts as PostgreSQL reads them, Bind and
//! FunctionCall values, error fields.

use super::*;

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut b = 196_608_i32.to_be_bytes().to_vec();
    for (k, v) in params {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    b
}

#[test]
fn startup_packets() {
    assert_eq!(
        Startup::parse(&startup(&[("user", "alice"), ("database", "orders")])),
        Ok(Startup::Params {
            minor: 0,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "orders".into())
            ]
        })
    );
    assert_eq!(
        Startup::parse(&SSL_REQUEST.to_be_bytes()),
        Ok(Startup::SslRequest)
    );
    let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
    cancel.extend_from_slice(&[0, 0, 0, 7, 1, 2, 3, 4]);
    assert_eq!(
        Startup::parse(&cancel),
        Ok(Startup::Cancel {
            pid: 7,
            key: vec![1, 2, 3, 4]
        })
    );
    assert!(Startup::parse(&[0, 2, 0, 0]).is_err());
    // unterminated parameter list
    let mut bad = startup(&[("user", "alice")]);
    bad.truncate(bad.len() - 2);
    assert!(Startup::parse(&bad).is_err());
}

#[test]
fn bind_parameters() {
    // portal "", statement "s1", one format code (binary), two params: 0x01, NULL
    let mut b = vec![0, b's', b'1', 0, 0, 1, 0, 1, 0, 2];
    b.extend_from_slice(&[0, 0, 0, 1, 0x01, 0xff, 0xff, 0xff, 0xff]);
    b.extend_from_slice(&[0, 0]); // no result format codes
    let Frontend::Bind {
        statement, params, ..
    } = Frontend::parse(b'B', &b).unwrap()
    else {
        panic!("not a bind")
    };
    assert_eq!(statement, "s1");
    assert_eq!(params[0].display().as_deref(), Some("\\x01"));
    assert_eq!(params[1].display(), None);
    assert_eq!(params[0].display_typed(Some(16)).as_deref(), Some("true"));
    let minus_two = Param {
        value: Some(&[0xff, 0xff, 0xff, 0xfe]),
        binary: true,
    };
    assert_eq!(minus_two.display_typed(Some(23)).as_deref(), Some("-2"));
    assert_eq!(
        minus_two.display_typed(Some(20)).as_deref(),
        Some("\\xfffffffe")
    );
    let text = Param {
        value: Some(b"key3"),
        binary: true,
    };
    assert_eq!(text.display_typed(Some(25)).as_deref(), Some("key3"));
    // a length running past the end
    let bad = [0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 1];
    assert!(Frontend::parse(b'B', &bad).is_err());
}

/// A Parse and a Bind with `n` parameters, as a driver sends them (text values).
fn parse_and_bind(n: usize) -> (Vec<u8>, Vec<u8>) {
    let count = u16::try_from(n).unwrap().to_be_bytes();
    let mut parse = b"s1\0delete from t where id in (...)\0".to_vec();
    parse.extend_from_slice(&count);
    for _ in 0..n {
        parse.extend_from_slice(&23_u32.to_be_bytes());
    }
    let mut bind = b"\0s1\0".to_vec();
    bind.extend_from_slice(&[0, 0]); // no format codes: all text
    bind.extend_from_slice(&count);
    for i in 0..n {
        let v = i.to_string();
        bind.extend_from_slice(&(v.len() as i32).to_be_bytes());
        bind.extend_from_slice(v.as_bytes());
    }
    bind.extend_from_slice(&count); // as many result format codes (all text)
    bind.extend(std::iter::repeat_n(0, 2 * n));
    (parse, bind)
}

/// PostgreSQL reads parameter counts as unsigned 16-bit: 40,000 (psycopg's `IN (%s ×
/// 40000)`) and the 65,535 maximum are valid, and must be parsed, not skipped.
#[test]
fn counts_are_unsigned_up_to_65535() {
    for n in [32_767, 40_000, 65_535] {
        let (parse, bind) = parse_and_bind(n);
        let Ok(Frontend::Parse { name, text, types }) = Frontend::parse(b'P', &parse) else {
            panic!("Parse with {n} parameters not parsed")
        };
        assert_eq!((name.as_ref(), types.len()), ("s1", n));
        assert!(text.starts_with("delete from t"));
        let Ok(Frontend::Bind { params, .. }) = Frontend::parse(b'B', &bind) else {
            panic!("Bind with {n} parameters not parsed")
        };
        assert_eq!(params.len(), n);
        assert_eq!(params[n - 1].display(), Some((n - 1).to_string()));
        let mut description = parse[parse.len() - 2 - 4 * n..].to_vec();
        description.truncate(2 + 4 * n);
        assert_eq!(
            Backend::parse(b't', &description),
            Ok(Backend::ParameterDescription(vec![23; n]))
        );
    }
    // a count the message cannot hold is malformed (and allocates nothing)
    let mut short = b"\0s1\0\0\0\xff\xff".to_vec();
    short.extend_from_slice(&[0, 0, 0, 1, b'x']);
    assert!(Frontend::parse(b'B', &short).is_err());
    assert!(Frontend::parse(b'P', b"s\0select\0\xff\xff\0\0\0\x17").is_err());
}

#[test]
fn function_calls_carry_their_arguments() {
    // query_to_xml(text, bool, bool, text): one format code (binary) for all four
    let mut body = 2924_i32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 1, 0, 4]);
    for arg in [&b"select 1"[..], &[1], &[0], b""] {
        body.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        body.extend_from_slice(arg);
    }
    body.extend_from_slice(&[0, 0]);
    let Ok(Frontend::FunctionCall { oid, args }) = Frontend::parse(b'F', &body) else {
        panic!("FunctionCall not parsed")
    };
    assert_eq!(oid, 2924);
    let shown: Vec<_> = args.iter().map(Param::display_argument).collect();
    assert_eq!(
        shown,
        vec![
            Some("select 1".into()),
            Some("\\x01".into()),
            Some("\\x00".into()),
            Some(String::new())
        ]
    );
    // without its result format code the message is cut short
    assert!(Frontend::parse(b'F', &body[..body.len() - 2]).is_err());
    assert!(Frontend::parse(b'F', &[0, 0]).is_err());
}

#[test]
fn error_fields() {
    let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
    assert_eq!(
        Backend::parse(b'E', body),
        Ok(Backend::Error(ErrorFields {
            severity: "ERROR".into(),
            code: "42P01".into(),
            message: "relation \"x\" does not exist".into()
        }))
    );
    assert!(Backend::parse(b'E', b"SERROR").is_err());
}
