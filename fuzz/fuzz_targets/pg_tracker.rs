//! A conversation with the statement tracker: frontend and backend messages interleaved in
//! any order (a frame whose type byte has the high bit set is the server's), so that portal
//! runs (Bind, Execute, Close; DataRow, PortalSuspended, CommandComplete, errors,
//! ReadyForQuery) meet every order. Never a panic, the tracker never logs more
//! statements than the client sent, and a server it deems at rest has no statement waiting.
#![no_main]
use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{Backend, Frontend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::new();
    let (mut sent, mut logged) = (0usize, 0usize);
    let mut now = std::time::Duration::ZERO;
    let _ = for_each_frame(data, |tag, body| {
        now += std::time::Duration::from_millis(1);
        if tag & 0x80 != 0 {
            if let Ok(m) = Backend::parse(tag & 0x7f, body) {
                logged += t.backend(&m, now).len();
            }
        } else if let Ok(m) = Frontend::parse(tag, body) {
            if matches!(
                m,
                Frontend::Query(_)
                    | Frontend::Parse { .. }
                    | Frontend::Execute { .. }
                    | Frontend::FunctionCall { .. }
            ) {
                sent += 1;
            }
            t.frontend(&m, now);
        }
    });
    // a server at rest (whose connection may be kept for another session) has nothing
    // left to log or cancel
    let at_rest = t.at_rest();
    let abandoned = t.abandon(now);
    assert!(
        !at_rest || abandoned.is_empty(),
        "at rest with {} statements waiting",
        abandoned.len()
    );
    logged += abandoned.len();
    assert!(logged <= sent, "{logged} statements logged, {sent} sent");
});
