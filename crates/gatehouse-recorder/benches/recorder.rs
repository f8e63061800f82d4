//! `cargo bench -p gatehouse-recorder --bench recorder`: the recorder alone on 200 MiB of
//! terminal text in 32 KiB chunks, the pipeline of the throughput bench's "recorder alone"
//! block (UTF-8 assembly, asciicast event line, hash chain, file and sidecar, seal) against
//! raw writes of the same bytes; then each stage on its own, so it shows where the time
//! goes. Needs nothing but a temp dir (the throughput bench needs sshd and friends).

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_recorder::file::{RecordError, RecordingFile};
use gatehouse_recorder::format::{Chain, Code, Utf8Assembler, event_line, push_event_line};

const SIZE: usize = 200 * 1024 * 1024;
const CHUNK: usize = 32 * 1024;
const RUNS: usize = 3;
const HEADER: &str = r#"{"env":{"SHELL":"/bin/sh"},"height":24,"timestamp":0,"title":"bench","version":2,"width":80}"#;

/// Lines a terminal shows, with what the JSON escaper must handle: quotes, backslashes,
/// tabs, `\r\n`, escape sequences and other control bytes, multibyte UTF-8 (2, 3 and 4
/// bytes, U+2028 included), and long runs of plain ASCII, the common case.
const LINES: &[&str] = &[
    "2026-11-23T12:00:00Z app[1234]: request served in 12ms status=200 path=/api/v1/items\r\n",
    "2026-11-23T12:00:01Z app[1234]: GET /api/v1/items/42 user=\"alice\" agent=\"curl/8.5\"\r\n",
    "drwxr-xr-x  2 root root  4096 Nov 23 12:00 \u{1b}[01;34mbin\u{1b}[0m\r\n",
    "-rw-r--r--  1 root root   220 Nov 23 12:00 .bashrc\r\n",
    "\u{1b}[1;32malice@web1\u{1b}[0m:\u{1b}[1;34m~\u{1b}[0m$ ls -la\r\n",
    "C:\\Users\\alice\\AppData\\Local\\Temp\\build.log\tsize=12345\tok\r\n",
    "{\"level\":\"info\",\"msg\":\"user logged in\",\"user\":\"bob\",\"ip\":\"10.0.0.7\"}\r\n",
    "Résumé: naïve café, Ærøskøbing, Straße — “quoted” ‘text’ … 12 €\r\n",
    "│ id │ name     │ état    │\r\n├────┼──────────┼─────────┤\r\n",
    "日本語のログ出力: 接続が確立されました (ポート 5432)\r\n",
    "build ✔ tests ✔ deploy 🚀 warnings ⚠ 3\r\n",
    "line\u{2028}separator and paragraph\u{2029}separator in a message\r\n",
    "\u{1b}[2J\u{1b}[H\u{1b}[?25l\u{1b}[38;5;208mtop - 12:00:00 up 3 days\u{1b}[m\u{1b}[K\r\n",
    "progress [#####     ] 50%\r\u{8}\u{8}\u{7}\u{1b}]0;title\u{7}\r\n",
    "    at com.example.Service.handle(Service.java:128)\r\n",
    "  PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND\r\n",
    "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{b}\u{c}\u{e}\u{f}\u{10}\u{1f}\u{7f} binary noise\r\n",
];

/// 200 MiB of [`LINES`] in a deterministic pseudo-random order, mostly the first two.
fn terminal_text() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = Vec::with_capacity(SIZE + 256);
    while out.len() < SIZE {
        // xorshift64: no dependency for a benchmark's dice
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pick = (state % 40) as usize;
        let line = LINES.get(pick).unwrap_or(&LINES[pick % 2]);
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(SIZE);
    out
}

/// The fastest of [`RUNS`] runs, each starting from an empty `dir` with nothing left to
/// write back: the disk's writeback of one run must not slow the next (it did by 5x).
fn best_of(dir: &Path, mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS)
        .map(|_| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
                std::fs::remove_file(&path).unwrap();
            }
            run()
        })
        .min()
        .unwrap()
}

fn mbps(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

/// Records `data` in `dir`, `add` appending chunk `i`: the time it took and the digest.
/// The time ends with the last write to the OS, before the seal: what a live session's
/// recording costs (the seal's sync to disk comes once, after the session, on a blocking
/// thread, and is timed apart below; raw writes do not sync either).
fn record(
    data: &[u8],
    dir: &Path,
    mut add: impl FnMut(&mut RecordingFile, &mut Utf8Assembler, usize, &[u8]) -> Result<(), RecordError>,
) -> (Duration, String) {
    let start = Instant::now();
    let mut rec = RecordingFile::create_at(dir.join("bench.cast"), HEADER).unwrap();
    let mut utf8 = Utf8Assembler::default();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        add(&mut rec, &mut utf8, i, chunk).unwrap();
    }
    rec.flush().unwrap();
    let elapsed = start.elapsed();
    let digest = rec.seal().unwrap().digest;
    (elapsed, digest)
}

fn at(i: usize) -> Duration {
    Duration::from_micros(i as u64)
}

fn row(name: &str, d: Duration, raw: Option<Duration>) {
    let ratio = raw.map_or(String::new(), |r| format!("  {:.2}x", mbps(d) / mbps(r)));
    println!(
        "  {name:<40} {:8.1} MB/s {:7.1} ms{ratio}",
        mbps(d),
        d.as_secs_f64() * 1e3
    );
}

fn main() {
    let data = terminal_text();
    let dir = tempfile::tempdir().unwrap();

    let raw = best_of(dir.path(), || {
        let start = Instant::now();
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.path().join("raw")).unwrap());
        for chunk in data.chunks(CHUNK) {
            f.write_all(chunk).unwrap();
        }
        f.flush().unwrap();
        start.elapsed()
    });

    // the throughput bench's way: a `String` per chunk and per line
    let mut digest = String::new();
    let recorded = best_of(dir.path(), || {
        let (time, d) = record(&data, dir.path(), |rec, utf8, i, chunk| {
            let text = utf8.push(chunk);
            rec.append(&event_line(at(i), Code::Output, &text))
        });
        digest = d;
        time
    });
    // the recorder task's way: text borrowed from the chunk (a scratch buffer only for
    // broken UTF-8), lines made in the file's buffer
    let mut scratch = String::new();
    let mut task_digest = String::new();
    let task = best_of(dir.path(), || {
        let (time, d) = record(&data, dir.path(), |rec, utf8, i, chunk| {
            let text = utf8.text(chunk, &mut scratch);
            rec.append_event(at(i), Code::Output, text)
        });
        task_digest = d;
        time
    });
    assert_eq!(task_digest, digest, "the task's way made another recording");

    if std::env::args().any(|a| a == "pipeline") {
        // `recorder pipeline`: the pipeline only, for a profiler
        return;
    }

    // each stage alone, on what the stage before it produced (made beforehand); a stage's
    // output is dropped at once, as in the pipeline, so fresh memory is not what is timed
    let mut utf8 = Utf8Assembler::default();
    let texts: Vec<String> = data.chunks(CHUNK).map(|c| utf8.push(c)).collect();
    let lines: Vec<String> = (texts.iter().enumerate())
        .map(|(i, t)| event_line(at(i), Code::Output, t))
        .collect();
    let assembly = best_of(dir.path(), || {
        let start = Instant::now();
        let mut utf8 = Utf8Assembler::default();
        for chunk in data.chunks(CHUNK) {
            black_box(utf8.push(chunk));
        }
        start.elapsed()
    });
    let encoding = best_of(dir.path(), || {
        let start = Instant::now();
        // into one buffer, as the recorder task encodes
        let mut line = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            line.clear();
            push_event_line(&mut line, at(i), Code::Output, text);
            black_box(&line);
        }
        start.elapsed()
    });
    let mut chain = Chain::new(HEADER);
    let hashing = best_of(dir.path(), || {
        let start = Instant::now();
        chain = Chain::new(HEADER);
        for line in &lines {
            chain.push(line);
        }
        black_box(chain.hex());
        start.elapsed()
    });
    assert_eq!(chain.hex(), digest, "the stages made another recording");
    let digest_line = format!("0 {}\n", chain.hex());
    let mut syncing = Duration::MAX;
    let writing = best_of(dir.path(), || {
        // what `RecordingFile` does with the lines: the cast's gathered up to 64 KiB and
        // written (after the sidecar's, through a 64 KiB buffer), then the seal's sync
        // (timed apart: raw writes do not sync)
        let start = Instant::now();
        let create = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut cast = create("w.cast");
        let mut sidecar = std::io::BufWriter::with_capacity(64 * 1024, create("w.cast.chain"));
        let mut pending = Vec::with_capacity(64 * 1024);
        for line in &lines {
            if !pending.is_empty() && pending.len() + line.len() + 1 > 64 * 1024 {
                sidecar.flush().unwrap();
                cast.write_all(&pending).unwrap();
                pending.clear();
            }
            sidecar.write_all(digest_line.as_bytes()).unwrap();
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
        }
        sidecar.flush().unwrap();
        cast.write_all(&pending).unwrap();
        let written = start.elapsed();
        let sync = Instant::now();
        sidecar.get_ref().sync_all().unwrap();
        cast.sync_all().unwrap();
        syncing = syncing.min(sync.elapsed());
        written
    });

    println!(
        "recorder alone, {} MiB of terminal text in {} KiB chunks, best of {RUNS}",
        SIZE / 1024 / 1024,
        CHUNK / 1024
    );
    row("raw file writes", raw, Some(raw));
    row("asciicast + hash chain", recorded, Some(raw));
    row("the same, reusing buffers (recorder task)", task, Some(raw));
    println!("stages, each alone (MB/s of terminal text)");
    row("UTF-8 assembly", assembly, None);
    row("JSON event encoding", encoding, None);
    row("hash chain (BLAKE3)", hashing, None);
    row("file write (cast + sidecar)", writing, None);
    row("seal's sync to disk", syncing, None);
    gatehouse_testbed::bench_summary::record(&gatehouse_testbed::bench_summary::Row {
        what: "recorder alone: asciicast + hash chain, same bytes",
        gatehouse: format!("{:.0} MB/s", mbps(task)),
        baseline: format!("raw file writes {:.0} MB/s", mbps(raw)),
        ratio: format!("{:.2}×", mbps(task) / mbps(raw)),
        target: "≥ 1 GB/s",
        met: Some(mbps(task) >= 1000.0),
    });
}
