//! SCRAM messages both ways: what clients send Gatehouse's front, the stored verifiers,
//! and what a target's server sends Gatehouse's own login (server-first, server-final).
#![no_main]
use gatehouse_pgproto::scram::{ServerExchange, Verifier, parse_initial_response};
use gatehouse_pgproto::scram_client::{ClientExchange, parse_server_first};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_initial_response(data);
    let _ = Verifier::parse(&String::from_utf8_lossy(data));
    let (first, last) = data.split_at(data.len() / 2);
    if let Ok((ex, _)) = ServerExchange::start(Verifier::mock("fuzz", b"k"), first) {
        let _ = ex.finish(last);
    }
    let _ = parse_server_first(data, "fuzz");
    let (client, _) = ClientExchange::start(b"pw");
    let _ = client.server_final(data);
});
