//! The statement log's mark reading (`LineMark::parse`: the detective's, with its fast path
//! for lines as Gatehouse writes them) against the full reading (`SqlLogLine::parse`: the
//! review's) on arbitrary lines: the same lines taken and refused, the same times and
//! markers. Start it from lines as written (`fuzz/seeds/sql_line_marks`), so that its
//! mutations are the near misses of the fast path:
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run sql_line_marks seeds/sql_line_marks -- -max_total_time=600
//! (cargo fuzz reads the first directory as the corpus: copy the seeds to a scratch corpus
//! first to keep them unchanged).
#![no_main]
use gatehouse_recorder::sql_log::{LineMark, SqlLogLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = SqlLogLine::parse(data).map(|line| match line {
        SqlLogLine::Statement(s) => LineMark::Statement { t: s.t },
        SqlLogLine::Marker(m) => LineMark::Marker(m),
        SqlLogLine::Target(l) => LineMark::Target { t: l.t },
        SqlLogLine::Other { t, .. } => LineMark::Other { t },
    });
    assert_eq!(LineMark::parse(data), whole);
});
