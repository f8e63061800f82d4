//! The passive SFTP tap on a hostile or broken stream: operator and target bytes
//! interleaved and cut at arbitrary points. Each input is a list of chunks, one control
//! byte each (top bit: direction, low 7 bits: length). Besides never panicking, a chunk fed
//! byte by byte must give the same log as the chunk fed whole (packets split across SSH
//! data messages are the normal case).
#![no_main]
use gatehouse_recorder::sftp::{SftpTap, Transfer};
use libfuzzer_sys::fuzz_target;

fn feed(tap: &mut SftpTap, to_target: bool, bytes: &[u8]) -> Vec<Transfer> {
    if to_target {
        tap.target_bytes(bytes)
    } else {
        tap.operator_bytes(bytes)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut whole = SftpTap::default();
    let mut bytewise = SftpTap::default();
    let (mut log_whole, mut log_bytewise) = (Vec::new(), Vec::new());
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = usize::from(ctl & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        let from_target = ctl & 0x80 != 0;
        log_whole.extend(feed(&mut whole, from_target, chunk));
        for b in chunk {
            log_bytewise.extend(feed(&mut bytewise, from_target, std::slice::from_ref(b)));
        }
        rest = tail;
    }
    let mut end_whole = whole.finish();
    let mut end_bytewise = bytewise.finish();
    // files still open at the end come out of a map: order is not part of the contract
    end_whole.sort_by_key(ToString::to_string);
    end_bytewise.sort_by_key(ToString::to_string);
    log_whole.extend(end_whole);
    log_bytewise.extend(end_bytewise);
    assert_eq!(log_whole, log_bytewise);
    for t in &log_whole {
        let _ = t.to_string();
    }
});
