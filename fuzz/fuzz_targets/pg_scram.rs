//! SCRAM client messages and stored verifiers.
#![no_main]
use gatehouse_pgproto::scram::{ServerExchange, Verifier, parse_initial_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_initial_response(data);
    let _ = Verifier::parse(&String::from_utf8_lossy(data));
    let (first, last) = data.split_at(data.len() / 2);
    if let Ok((ex, _)) = ServerExchange::start(Verifier::mock("fuzz", b"k"), first) {
        let _ = ex.finish(last);
    }
});
