//! Borrowed views of the messages Gatehouse looks at: startup packets, the frontend messages
//! that carry statements and the backend messages that finish them. Anything else is
//! relayed without being decoded.

use std::borrow::Cow;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
}

/// A little reader over a message body.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }
    fn err(&self) -> ProtoError {
        ProtoError::Malformed(self.what)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.bytes(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, ProtoError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, ProtoError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A count of items (parameters, format codes, arguments): PostgreSQL reads these as
    /// *unsigned* 16-bit integers (`pq_getmsgint(msg, 2)`), so 32,768 to 65,535 are valid.
    fn count(&mut self) -> Result<usize, ProtoError> {
        let b = self.bytes(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A NUL-terminated string (lossily decoded: it is only shown, never re-encoded).
    fn cstr(&mut self) -> Result<&'a [u8], ProtoError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or(ProtoError::Malformed(self.what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn string(&mut self) -> Result<String, ProtoError> {
        Ok(self.text()?.into_owned())
    }
    /// [`Cursor::string`] borrowed from the message where it is valid UTF-8 (nearly
    /// always): the relay's messages are read without copying their names and texts.
    fn text(&mut self) -> Result<Cow<'a, str>, ProtoError> {
        Ok(String::from_utf8_lossy(self.cstr()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// A count, then that many type OIDs (Parse, ParameterDescription).
    fn oids(&mut self) -> Result<Vec<u32>, ProtoError> {
        let n = self.count()?;
        if n * 4 > self.buf.len() {
            return Err(self.err());
        }
        (0..n).map(|_| self.i32().map(|o| o as u32)).collect()
    }

    /// Format codes then values, as Bind and FunctionCall carry them: a count of format
    /// codes (none: all text; one: for all values; else one per value), a count of values,
    /// and each value as a length (-1: NULL) and its bytes.
    fn values(&mut self) -> Result<Vec<Param<'a>>, ProtoError> {
        let nformats = self.count()?;
        // every item takes at least 2 (or 4) bytes: a count larger than the message is
        // malformed, and no allocation follows a claimed count
        if nformats * 2 > self.buf.len() {
            return Err(self.err());
        }
        // (read where they lie: a format code is 1 for binary)
        let formats = self.bytes(nformats * 2)?;
        let is_binary = |i: usize| i16::from_be_bytes([formats[2 * i], formats[2 * i + 1]]) == 1;
        let nvalues = self.count()?;
        if (nformats > 1 && nformats != nvalues) || nvalues * 4 > self.buf.len() {
            return Err(self.err());
        }
        let mut values = Vec::with_capacity(nvalues);
        for i in 0..nvalues {
            let len = self.i32()?;
            let value = match len {
                -1 => None,
                n if n >= 0 => Some(self.bytes(n as usize)?),
                _ => return Err(self.err()),
            };
            let binary = match nformats {
                0 => false,
                1 => is_binary(0),
                _ => is_binary(i),
            };
            values.push(Param { value, binary });
        }
        Ok(values)
    }
}

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// The first packet of a connection (body after the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        key: Vec<u8>,
    },
    /// A StartupMessage: protocol 3.`minor`, its parameters (user, database, options…).
    Params {
        minor: u16,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    pub fn parse(body: &[u8]) -> Result<Startup, ProtoError> {
        let mut c = Cursor::new(body, "startup");
        let code = c.i32()?;
        match code {
            SSL_REQUEST => Ok(Startup::SslRequest),
            GSSENC_REQUEST => Ok(Startup::GssEncRequest),
            CANCEL_REQUEST => {
                let pid = c.i32()?;
                let key = c.rest().to_vec();
                if key.is_empty() || key.len() > 256 {
                    return Err(ProtoError::Malformed("cancel request"));
                }
                Ok(Startup::Cancel { pid, key })
            }
            _ => {
                let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
                if major != 3 {
                    return Err(ProtoError::UnsupportedVersion { major, minor });
                }
                let mut params = Vec::new();
                loop {
                    let name = c.string()?;
                    if name.is_empty() {
                        break;
                    }
                    params.push((name, c.string()?));
                }
                Ok(Startup::Params { minor, params })
            }
        }
    }
}

/// A frontend message, as far as Gatehouse cares.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Names and texts are borrowed from the message (`Cow::Owned` only where the bytes are not
/// UTF-8 and are shown with replacement characters): the relay parses every message the
/// operator sends, and copies only what the statement log keeps.
pub enum Frontend<'a> {
    Query(Cow<'a, str>),
    Parse {
        name: Cow<'a, str>,
        text: Cow<'a, str>,
        /// Parameter type OIDs given by the client (0: left to the server).
        types: Vec<u32>,
    },
    /// Describe of a prepared statement (`Some(name)`) or of a portal (`None`).
    Describe {
        statement: Option<Cow<'a, str>>,
    },
    Bind {
        portal: Cow<'a, str>,
        statement: Cow<'a, str>,
        params: Vec<Param<'a>>,
    },
    Execute {
        portal: Cow<'a, str>,
    },
    /// Close of a prepared statement (`statement: true`) or of a portal.
    Close {
        statement: bool,
        name: Cow<'a, str>,
    },
    /// A fast-path function call: the function's OID and its arguments (which can be SQL
    /// text, e.g. for `query_to_xml`).
    FunctionCall {
        oid: u32,
        args: Vec<Param<'a>>,
    },
    Sync,
    Flush,
    Terminate,
    /// CopyData, CopyDone, CopyFail, password/SASL answers…
    Other(u8),
}

/// One Bind parameter: its bytes (None for SQL NULL) and whether they are binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub value: Option<&'a [u8]>,
    pub binary: bool,
}

impl Param<'_> {
    /// How the audit log shows it: text as text, binary as `\x` hex, NULL as None.
    pub fn display(&self) -> Option<String> {
        self.display_typed(None)
    }

    /// As [`Param::display`], decoding binary values of common types when the parameter's
    /// type OID is known (drivers such as tokio-postgres, pgjdbc, psycopg 3 and asyncpg send
    /// binary parameters; see [`crate::binary`]).
    pub fn display_typed(&self, oid: Option<u32>) -> Option<String> {
        let v = self.value?;
        if self.binary
            && let Some(shown) =
                oid.and_then(|o| crate::binary::decode(o, v, crate::tracker::MAX_PARAM))
        {
            return Some(shown);
        }
        Some(if self.binary {
            crate::binary::hex(v)
        } else {
            String::from_utf8_lossy(v).into_owned()
        })
    }

    /// How the audit log shows a function-call argument, whose type Gatehouse does not
    /// know: binary values are shown as text when they are printable UTF-8 (a `text`
    /// argument sent in binary, e.g. the query given to `query_to_xml`), else as `\x` hex.
    pub fn display_argument(&self) -> Option<String> {
        let v = self.value?;
        match std::str::from_utf8(v) {
            Ok(text)
                if self.binary
                    && !text
                        .chars()
                        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
            {
                Some(text.to_owned())
            }
            _ => self.display(),
        }
    }
}

impl<'a> Frontend<'a> {
    pub fn parse(tag: u8, body: &'a [u8]) -> Result<Frontend<'a>, ProtoError> {
        Ok(match tag {
            b'Q' => Frontend::Query(Cursor::new(body, "Query").text()?),
            b'P' => {
                let mut c = Cursor::new(body, "Parse");
                let name = c.text()?;
                let text = c.text()?;
                let types = c.oids()?;
                Frontend::Parse { name, text, types }
            }
            b'D' => {
                let mut c = Cursor::new(body, "Describe");
                let kind = c.u8()?;
                let name = c.text()?;
                Frontend::Describe {
                    statement: (kind == b'S').then_some(name),
                }
            }
            b'B' => {
                let mut c = Cursor::new(body, "Bind");
                let portal = c.text()?;
                let statement = c.text()?;
                let params = c.values()?;
                // result-column format codes: read so that a message PostgreSQL would take
                // apart differently is refused here rather than forwarded
                let nresults = c.count()?;
                c.bytes(nresults * 2)?;
                Frontend::Bind {
                    portal,
                    statement,
                    params,
                }
            }
            b'E' => Frontend::Execute {
                portal: Cursor::new(body, "Execute").text()?,
            },
            b'C' => {
                let mut c = Cursor::new(body, "Close");
                let kind = c.u8()?;
                let name = c.text()?;
                Frontend::Close {
                    statement: kind == b'S',
                    name,
                }
            }
            b'F' => {
                let mut c = Cursor::new(body, "FunctionCall");
                let oid = c.i32()? as u32;
                let args = c.values()?;
                c.i16()?; // the result's format code
                Frontend::FunctionCall { oid, args }
            }
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'X' => Frontend::Terminate,
            other => Frontend::Other(other),
        })
    }
}

/// Whether a frontend message is something the operator *does* (idle-limit activity):
/// everything but Sync, Flush and Terminate, which drivers send on their own.
pub fn is_activity(tag: u8) -> bool {
    !matches!(tag, b'S' | b'H' | b'X')
}

/// The fields of an ErrorResponse or NoticeResponse that the broker uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// A backend message, as far as Gatehouse cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    Authentication(Auth<'a>),
    /// The parameter types of a described statement.
    ParameterDescription(Vec<u32>),
    BackendKeyData {
        pid: i32,
        key: &'a [u8],
    },
    ParameterStatus,
    ReadyForQuery {
        status: u8,
    },
    CommandComplete {
        tag: Cow<'a, str>,
    },
    EmptyQuery,
    PortalSuspended,
    FunctionCallResponse,
    Error(ErrorFields),
    Notice,
    NegotiateProtocolVersion,
    /// DataRow, RowDescription, CopyData… relayed without decoding.
    Other(u8),
}

/// An authentication request from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<String> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Other(i32),
}

pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, ProtoError> {
    let mut c = Cursor::new(body, "ErrorResponse");
    let mut f = ErrorFields::default();
    loop {
        let kind = c.u8()?;
        if kind == 0 {
            break;
        }
        let value = c.string()?;
        match kind {
            b'V' => f.severity = value,
            b'S' if f.severity.is_empty() => f.severity = value,
            b'C' => f.code = value,
            b'M' => f.message = value,
            _ => {}
        }
    }
    Ok(f)
}

impl<'a> Backend<'a> {
    pub fn parse(tag: u8, body: &'a [u8]) -> Result<Backend<'a>, ProtoError> {
        Ok(match tag {
            b'R' => {
                let mut c = Cursor::new(body, "Authentication");
                Backend::Authentication(match c.i32()? {
                    0 => Auth::Ok,
                    3 => Auth::Cleartext,
                    5 => {
                        let s = c.bytes(4)?;
                        Auth::Md5 {
                            salt: [s[0], s[1], s[2], s[3]],
                        }
                    }
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = c.string()?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(m);
                        }
                        Auth::Sasl { mechanisms }
                    }
                    11 => Auth::SaslContinue(c.rest()),
                    12 => Auth::SaslFinal(c.rest()),
                    n => Auth::Other(n),
                })
            }
            b'K' => {
                let mut c = Cursor::new(body, "BackendKeyData");
                let pid = c.i32()?;
                let key = c.rest();
                if key.is_empty() || key.len() > 256 {
                    return Err(ProtoError::Malformed("BackendKeyData"));
                }
                Backend::BackendKeyData { pid, key }
            }
            b'S' => Backend::ParameterStatus,
            b't' => {
                Backend::ParameterDescription(Cursor::new(body, "ParameterDescription").oids()?)
            }
            b'Z' => Backend::ReadyForQuery {
                status: Cursor::new(body, "ReadyForQuery").u8()?,
            },
            b'C' => Backend::CommandComplete {
                tag: Cursor::new(body, "CommandComplete").text()?,
            },
            b'I' => Backend::EmptyQuery,
            b's' => Backend::PortalSuspended,
            b'V' => Backend::FunctionCallResponse,
            b'E' => Backend::Error(parse_error_fields(body)?),
            b'N' => Backend::Notice,
            b'v' => Backend::NegotiateProtocolVersion,
            other => Backend::Other(other),
        })
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
