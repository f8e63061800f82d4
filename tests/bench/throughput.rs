//! Throughput of `cat` of a 200 MiB file: straight to the target's sshd, through an
//! OpenSSH bastion (`ssh -J`), and through Gatehouse (relayed and recorded), in one run,
//! reported as MB/s and as ratios to the direct baseline. Also the recorder on its own:
//! the same bytes written as asciicast output events vs written raw to a file, i.e. what
//! recording costs. And the session through a benchmark build that does not record
//! terminal output (feature `bench-unrecorded`, `GATEHOUSE_UNRECORDED_BIN`), so recording
//! on vs off is a ratio of two real sessions. The four sessions are measured in interleaved
//! rounds (each round starting at another path): a figure is the median of its rounds, a
//! ratio the median of the rounds' ratios, so that two paths compared were measured seconds
//! apart (this VM's speed drifts by tens of percent within minutes). Run with `./bench/run`
//! (it builds both release binaries first).

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use gatehouse_e2e::{World, files_under, tool};
use gatehouse_recorder::file::RecordingFile;
use gatehouse_recorder::format::{Code, Header, Utf8Assembler};
use gatehouse_testbed::bench_summary::Rounds;

const SIZE: usize = 200 * 1024 * 1024;
/// Runs of the recorder alone (the best counts).
const RUNS: usize = 3;
/// Interleaved rounds of the four sessions.
const ROUNDS: usize = 5;
/// Indexes of the sessions in a round.
const DIRECT: usize = 0;
const JUMP: usize = 1;
const ON: usize = 2;
const OFF: usize = 3;

fn text_file(path: &std::path::Path) {
    // terminal-like text: printable lines, so the recording is realistic
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let line =
        b"2026-11-23T12:00:00Z app[1234]: request served in 12ms status=200 path=/api/v1/items\n";
    let mut written = 0;
    while written < SIZE {
        f.write_all(line).unwrap();
        written += line.len();
    }
}

/// Empties `dir`, its files synced first, before a run of the recorder alone: each run
/// starts with nothing of the last one left to write back, and writes into page-cache
/// memory the last one freed, as the recorder's own bench does
/// (`crates/gatehouse-recorder/benches/recorder.rs`). Without it the raw writes (one file,
/// rewritten) reused their pages while each recording took fresh ones, and fresh memory is
/// slow on a VM whose host takes freed pages back (virtio-balloon free page reporting: the
/// first touch of 16 GiB here took 45 s, the second 2 s): the recorder alone measured
/// 320-660 MB/s here against 1.0-1.5 GB/s with the pages reused.
fn emptied(dir: &std::path::Path) {
    for file in files_under(dir) {
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

fn best_of(mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| run()).min().unwrap()
}

fn time_ssh(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

fn dir_size(dir: &std::path::Path) -> u64 {
    assert!(dir.is_dir(), "no recordings root at {}", dir.display());
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn mbps(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let w = World::new();
    let file = w.keys.path().join("big.txt");
    text_file(&file);
    let remote_cmd = format!("cat {}", file.display());
    let ssh = tool("ssh", "openssh-client");
    let base_opts = |port: u16| -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-p".into(),
            port.to_string(),
            "-i".into(),
            w.target_identity.display().to_string(),
        ])
        .collect()
    };
    let user = w.sshd.user().to_owned();
    let port = w.sshd.port();
    // the same session through a build that does not record output: recording on vs off
    let unrecorded_bin = std::env::var_os("GATEHOUSE_UNRECORDED_BIN").map(std::path::PathBuf::from).unwrap_or_else(|| {
        panic!("GATEHOUSE_UNRECORDED_BIN is not set: run ./bench/run, which builds gatehouse with --features bench-unrecorded")
    });
    let off = World::with_binary(unrecorded_bin, "");
    let session = |path: usize| -> Command {
        match path {
            DIRECT => {
                let mut c = Command::new(&ssh);
                c.args(base_opts(port)).arg(format!("{user}@127.0.0.1"));
                c
            }
            JUMP => {
                let mut c = Command::new(&ssh);
                c.args(base_opts(port))
                    .arg("-o")
                    .arg(format!(
                        "ProxyCommand={} {} -W %h:%p {user}@127.0.0.1",
                        ssh.display(),
                        base_opts(port).join(" ")
                    ))
                    .arg(format!("{user}@127.0.0.1"));
                c
            }
            ON => w.gatehouse.ssh("alice+web1", &w.alice_key),
            _ => off.gatehouse.ssh("alice+web1", &off.alice_key),
        }
    };
    let sessions = Rounds::<4>::measure(ROUNDS, |path| {
        let mut c = session(path);
        c.arg(&remote_cmd);
        mbps(time_ssh(c))
    });

    // check that the builds differ as claimed: one recorded the bytes, the other did not
    let recorded_bytes = dir_size(&w.gatehouse.dir().join("recordings"));
    let unrecorded_bytes = dir_size(&off.gatehouse.dir().join("recordings"));
    assert!(
        recorded_bytes >= (ROUNDS * SIZE) as u64,
        "the recorded sessions wrote only {recorded_bytes} bytes"
    );
    assert!(
        unrecorded_bytes < 1024 * 1024,
        "the bench-unrecorded build wrote {unrecorded_bytes} bytes of recordings: it records"
    );

    // the recorder alone, same bytes: asciicast events (with chain) vs raw writes
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(&file).unwrap();
    let raw = best_of(|| {
        emptied(dir.path());
        let start = Instant::now();
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.path().join("raw")).unwrap());
        for chunk in data.chunks(32 * 1024) {
            f.write_all(chunk).unwrap();
        }
        f.flush().unwrap();
        start.elapsed()
    });
    let mut n = 0;
    let recorded = best_of(|| {
        n += 1;
        emptied(dir.path());
        let start = Instant::now();
        let header = Header {
            width: 80,
            height: 24,
            timestamp: 0,
            term: None,
            title: "bench".into(),
            env: vec![],
        };
        let mut rec =
            RecordingFile::create(dir.path(), &format!("bench{n}"), SystemTime::now(), &header)
                .unwrap();
        // the recorder task's way; timed up to the last write (the seal's sync to disk comes
        // after the session, on a blocking thread; raw writes do not sync either)
        let (mut utf8, mut scratch) = (Utf8Assembler::default(), String::new());
        for (i, chunk) in data.chunks(32 * 1024).enumerate() {
            let text = utf8.text(chunk, &mut scratch);
            rec.append_event(Duration::from_micros(i as u64), Code::Output, text)
                .unwrap();
        }
        rec.flush().unwrap();
        let elapsed = start.elapsed();
        rec.seal().unwrap();
        elapsed
    });

    let s = &sessions;
    let rounds =
        s.0.iter()
            .map(|r| format!("{:.2}", r[ON] / r[DIRECT]))
            .collect::<Vec<_>>()
            .join(" ");
    println!(
        "cat of a {} MiB file, {ROUNDS} interleaved rounds: median MB/s, median of the rounds' ratios",
        SIZE / 1024 / 1024
    );
    println!(
        "  direct ssh                        {:8.1} MB/s  1.00x",
        s.value(DIRECT)
    );
    println!(
        "  ssh -J (OpenSSH bastion)          {:8.1} MB/s  {:.2}x",
        s.value(JUMP),
        s.ratio(JUMP, DIRECT)
    );
    println!(
        "  through gatehouse, recording on   {:8.1} MB/s  {:.2}x  (rounds: {rounds})",
        s.value(ON),
        s.ratio(ON, DIRECT)
    );
    println!(
        "  through gatehouse, recording off  {:8.1} MB/s  {:.2}x  (bench-only build)",
        s.value(OFF),
        s.ratio(OFF, DIRECT)
    );
    println!(
        "  recording on vs off                            {:.2}x  (recordings written: {} MiB on, {} KiB off)",
        s.ratio(ON, OFF),
        recorded_bytes / 1024 / 1024,
        unrecorded_bytes / 1024
    );
    {
        use gatehouse_testbed::bench_summary::{Row, record};
        let what = format!(
            "`cat` of {} MiB over SSH, recorded (median of {ROUNDS} rounds)",
            SIZE / 1024 / 1024
        );
        record(&Row {
            what: &what,
            gatehouse: format!("{:.0} MB/s", s.value(ON)),
            baseline: format!(
                "direct ssh {:.0} MB/s; `ssh -J` {:.0} MB/s",
                s.value(DIRECT),
                s.value(JUMP)
            ),
            ratio: format!(
                "{:.2}× direct, {:.2}× `ssh -J`",
                s.ratio(ON, DIRECT),
                s.ratio(ON, JUMP)
            ),
            target: "≥ 0.85× direct",
            met: Some(s.ratio(ON, DIRECT) >= 0.85),
        });
        record(&Row {
            what: &format!("{what}: recording on vs off"),
            gatehouse: format!("{:.0} MB/s", s.value(ON)),
            baseline: format!("bench-only unrecorded build {:.0} MB/s", s.value(OFF)),
            ratio: format!("{:.2}×", s.ratio(ON, OFF)),
            target: "≥ 0.95×",
            met: Some(s.ratio(ON, OFF) >= 0.95),
        });
    }
    println!("recorder alone, same bytes");
    println!(
        "  raw file writes                   {:8.1} MB/s  1.00x",
        mbps(raw)
    );
    println!(
        "  asciicast + hash chain            {:8.1} MB/s  {:.2}x",
        mbps(recorded),
        mbps(recorded) / mbps(raw)
    );
}
