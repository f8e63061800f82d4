//! Startup packets and frontend messages from a hostile client: never a panic, and the
//! tracker stays consistent whatever arrives.
#![no_main]
use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{Frontend, Startup, startup_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = startup_len(data) {
        let _ = Startup::parse(&data[4..n]);
    }
    let mut t = Tracker::new();
    let _ = for_each_frame(data, |tag, body| {
        if let Ok(m) = Frontend::parse(tag, body) {
            t.frontend(&m, std::time::Duration::ZERO);
        }
    });
    let _ = t.abandon(std::time::Duration::ZERO);
});
