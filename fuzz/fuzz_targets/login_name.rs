//! The SSH user name `operator+target`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = gatehouse_core::LoginName::parse(s);
    }
});
