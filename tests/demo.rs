//! `gatehouse demo` as a newcomer uses it: start it, then follow each line it prints — the
//! ssh line, the psql line, `sessions list` and `review` (in tmux) — and check each works.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gatehouse_e2e::{Tmux, gatehouse_bin, stderr, stdout, tool};

/// The running demo; stopped (SIGTERM) when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Runs a printed command line through `sh`, with `extra` appended.
fn follow(line: &str, extra: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{line} {extra}"))
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

#[test]
fn every_line_the_demo_prints_works() {
    tool("psql", "postgresql-client");
    tool("ssh", "openssh-client");
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-demo-")
        .tempdir()
        .expect("temp dir");
    let child = Command::new(gatehouse_bin())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--pg-listen",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).expect("log file"))
        .spawn()
        .expect("start gatehouse demo");
    let mut demo = Demo(child);
    let mut printed = Vec::new();
    let mut lines = BufReader::new(demo.0.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        let done = line.trim_end().ends_with(" review");
        printed.push(line);
        if done {
            break;
        }
    }
    // keep reading what it prints later: a closed pipe would end it
    std::thread::spawn(move || lines.for_each(drop));
    let text = printed.join("\n");
    let find = |start: &str| {
        printed
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(start) || l.contains(start))
            .unwrap_or_else(|| panic!("no line with '{start}' in:\n{text}"))
            .to_owned()
    };
    assert!(text.contains("locks a session idle for 2m"), "{text}");

    let ssh = find("ssh -p ");
    let out = follow(&ssh, "-o BatchMode=yes 'echo demo-$((6*7))'");
    let log = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert!(
        stdout(&out).contains("demo-42"),
        "{ssh}: {}\ndemo log:\n{}",
        stderr(&out),
        log()
    );

    let psql = find("psql \"host=");
    let out = follow(&psql, "-At -c 'select count(*) from hosts'");
    assert_eq!(stdout(&out).trim(), "3", "{psql}: {}", stderr(&out));

    let sessions = find(" sessions list");
    let out = follow(&sessions, "");
    let list = stdout(&out);
    assert!(
        list.contains("sandboxdb") && list.contains("sandbox"),
        "{sessions}: {list}{}",
        stderr(&out)
    );

    let review = find(" review");
    let tmux = Tmux::start(dir.path(), &format!("{review}; sleep 30"));
    // the two sessions just made: the shell and the SQL session
    let screen = tmux.wait_for("2 of 2 sessions");
    assert!(
        screen.contains("sandbox") && screen.contains("postgres"),
        "{screen}"
    );
    tmux.type_keys("q");
    drop(demo);
}
