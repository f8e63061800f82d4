//! Backend messages from a hostile or broken server.
#![no_main]
use gatehouse_pgproto::Backend;
use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::tracker::Tracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::new();
    let _ = for_each_frame(data, |tag, body| {
        if let Ok(m) = Backend::parse(tag, body) {
            let _ = t.backend(&m, std::time::Duration::ZERO);
        }
    });
});
