//! The backend messages Gatehouse writes to operators itself: authentication, key data,
//! parameter status, ready-for-query, and its own notices and errors.

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    // bodies written here are small and bounded; the cast cannot truncate
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    // a NUL inside would end the field early and shift the rest: drop it
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(extra);
    message(b'R', &body)
}

pub fn auth_ok() -> Vec<u8> {
    auth(0, &[])
}

pub fn auth_cleartext() -> Vec<u8> {
    auth(3, &[])
}

pub fn auth_sasl(mechanisms: &[&str]) -> Vec<u8> {
    let mut extra = Vec::new();
    for m in mechanisms {
        cstr(&mut extra, m);
    }
    extra.push(0);
    auth(10, &extra)
}

pub fn auth_sasl_continue(data: &[u8]) -> Vec<u8> {
    auth(11, data)
}

pub fn auth_sasl_final(data: &[u8]) -> Vec<u8> {
    auth(12, data)
}

pub fn backend_key_data(pid: i32, key: &[u8]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(key);
    message(b'K', &body)
}

pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, value);
    message(b'S', &body)
}

pub fn ready_for_query(status: u8) -> Vec<u8> {
    message(b'Z', &[status])
}

/// NegotiateProtocolVersion: the newest minor version supported and the startup options
/// (`_pq_.*`) that were not recognised.
pub fn negotiate_protocol_version(minor: u16, unrecognised: &[&str]) -> Vec<u8> {
    let mut body = i32::from(minor).to_be_bytes().to_vec();
    body.extend_from_slice(&(unrecognised.len() as i32).to_be_bytes());
    for o in unrecognised {
        cstr(&mut body, o);
    }
    message(b'v', &body)
}

fn fields(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(k);
        cstr(&mut body, v);
    }
    body.push(0);
    body
}

/// An ErrorResponse (`FATAL` ends the connection; `ERROR` only the current statement).
pub fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    message(b'E', &fields(severity, code, text))
}

/// A NoticeResponse, e.g. Gatehouse's `WARNING` before a limit.
pub fn notice_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    message(b'N', &fields(severity, code, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Backend, ErrorFields};

    #[test]
    fn errors_round_trip_through_the_parser() {
        let m = error_response("FATAL", "57P05", "idle\0 limit");
        assert_eq!(crate::frame_len(&m), Ok(Some(m.len())));
        assert_eq!(
            Backend::parse(m[0], &m[5..]),
            Ok(Backend::Error(ErrorFields {
                severity: "FATAL".into(),
                code: "57P05".into(),
                message: "idle limit".into()
            }))
        );
        assert_eq!(
            auth_sasl(&["SCRAM-SHA-256"]),
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0".to_vec()
        );
    }
}
