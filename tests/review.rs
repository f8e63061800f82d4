//! Reviewing real sessions: a full-screen `vi` recorded by the real broker replays to the
//! same screen the operator saw, and `gatehouse review` runs in tmux (open a session, search
//! a marker, jump between markers), plus the `play` and `export` companions.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use gatehouse_e2e::{Tmux, World, gatehouse_bin, stdout, tool};
use gatehouse_review::cast::{Cast, EventKind};
use gatehouse_review::player::Player;

fn finish(w: &World, tmux: &Tmux) -> (String, String) {
    tmux.type_line("exit");
    tmux.wait_for("EXIT=");
    let s = w.gatehouse.wait_session_closed();
    (
        s["id"].as_str().unwrap().to_owned(),
        s["recording_path"].as_str().unwrap().to_owned(),
    )
}

fn rows(p: &Player) -> Vec<String> {
    let (rows, cols) = p.screen().size();
    (0..rows.get())
        .map(|r| {
            p.screen()
                .contents_between(r, 0, r, cols.get())
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_recorded_vi_session_replays_to_the_screen_the_operator_saw() {
    tool("vi", "vim");
    let w = World::new();
    let tmux = w.interactive("alice+web1");
    tmux.type_line("printf '\\033[31mred-alert\\033[0m plain\\n'");
    tmux.wait_for("red-alert plain");
    tmux.type_line(
        "f=$(mktemp); printf 'first line\\nsecond line\\nthird\\n' > $f; vi -u NONE -N $f",
    );
    tmux.wait_for("second line");
    std::thread::sleep(Duration::from_millis(500));
    tmux.type_keys("jllll");
    std::thread::sleep(Duration::from_millis(500));
    let seen = tmux.screen();
    tmux.type_keys(":q!");
    tmux.run(&["send-keys", "Enter"]);
    tmux.wait_for("gh$ ");
    let (_, path) = finish(&w, &tmux);

    let cast = Arc::new(Cast::parse(&std::fs::read(&path).unwrap()).unwrap());
    assert_eq!((cast.header.width, cast.header.height), (100, 30));
    // the moment just before the operator typed ':' to quit
    let colon = cast
        .events
        .iter()
        .find(|e| e.kind == EventKind::Input && cast.data(e).starts_with(':'))
        .expect("':' typed")
        .at;
    let mut p = Player::new(Arc::clone(&cast));
    p.seek(colon.saturating_sub(Duration::from_millis(1)));
    let replayed = rows(&p);
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(replayed.len(), 30);
    for (i, (r, s)) in replayed.iter().zip(&seen).enumerate() {
        assert_eq!(
            r,
            s.trim_end(),
            "row {i} differs:\nreplayed {replayed:#?}\nseen {seen:#?}"
        );
    }
    assert_eq!(replayed[0], "first line");
    assert!(replayed[3].starts_with('~'), "{replayed:#?}");
    // `j` then four `l`: second row, fifth column
    assert_eq!(p.screen().cursor_position(), (1, 4));

    // before vi started: the red text in red, the rest in the default colour
    let vi_start = cast
        .events
        .iter()
        .find(|e| e.kind == EventKind::Output && cast.data(e).contains("first line"))
        .unwrap()
        .at;
    p.seek(vi_start.saturating_sub(Duration::from_millis(1)));
    let screen = p.screen();
    let row = (0..30)
        .find(|r| {
            screen
                .contents_between(*r, 0, *r, 100)
                .starts_with("red-alert")
        })
        .expect("red-alert row");
    assert_eq!(screen.cell(row, 0).unwrap().fgcolor(), vt100::Color::Idx(1));
    assert_eq!(screen.cell(row, 10).unwrap().contents(), "p");
    assert_eq!(
        screen.cell(row, 10).unwrap().fgcolor(),
        vt100::Color::Default
    );
}

#[test]
fn review_in_tmux_opens_a_session_searches_a_marker_and_jumps_between_markers() {
    let w = World::new();
    let tmux = w.interactive("alice+web1");
    tmux.type_line("echo needle-$((40+2))");
    tmux.wait_for("needle-42");
    let (id, _) = finish(&w, &tmux);
    drop(tmux);

    let cmd = format!(
        "{} --config {} review; echo REVIEW-EXIT=$?; sleep 60",
        gatehouse_bin().display(),
        w.gatehouse.config().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let ui = Tmux::start(dir.path(), &cmd);
    let list = ui.wait_for("1 of 1 sessions");
    let row = list.lines().find(|l| l.contains("alice")).unwrap();
    for col in ["web1", "prod", "ssh", "target_closed", "ok"] {
        assert!(row.contains(col), "{col} missing from {row:?}");
    }
    assert!(list.contains(&id), "{list}");

    // open it: the player shows the session at the recorded size
    ui.run(&["send-keys", "Enter"]);
    let player = ui.wait_for("alice → web1");
    assert!(player.contains("100×30"), "{player}");
    ui.type_keys("G");
    ui.wait_for("needle-42");
    ui.type_keys("q");
    ui.wait_for("1 of 1 sessions");

    // search a marker string and open the player at that moment
    ui.type_keys("/session end");
    ui.run(&["send-keys", "Enter"]);
    let results = ui.wait_for("moment(s)");
    assert!(results.contains("session end: target_closed"), "{results}");
    ui.run(&["send-keys", "Enter"]);
    let at_end = ui.wait_for("◆");
    assert!(
        at_end
            .lines()
            .any(|l| l.contains("paused") && l.contains("session end: target_closed")),
        "{at_end}"
    );

    // back to the start, then the next marker is the channel's start
    ui.type_keys("g]");
    ui.wait_for("marker: channel");
    // then on, marker by marker (pty and shell channels first), to the end
    let mut reached_end = false;
    for _ in 0..4 {
        ui.type_keys("]");
        std::thread::sleep(Duration::from_millis(300));
        if ui.screen().contains("marker: session end") {
            reached_end = true;
            break;
        }
    }
    assert!(reached_end, "{}", ui.screen());
    ui.type_keys("]");
    ui.wait_for("no later marker");
    ui.type_keys("?");
    ui.wait_for("previous / next marker");
    ui.type_keys("x");
    ui.type_keys("q");
    ui.wait_for("moment(s)");
    ui.type_keys("q");
    ui.wait_for("1 of 1 sessions");
    ui.type_keys("q");
    ui.wait_for("REVIEW-EXIT=0");

    // the search left a cached document, which retention removes with the recording
    let idx = w
        .gatehouse
        .dir()
        .join("recordings/.index")
        .join(format!("{id}.idx"));
    assert!(idx.exists(), "{}", idx.display());
    w.gatehouse
        .cli_ok(&["recordings", "prune", "--older-than", "1ms"]);
    assert!(!idx.exists(), "prune leaves the search index of {id}");
}

#[test]
fn play_and_export_read_a_real_recording() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "echo exported-$((6*7))");
    assert!(out.status.success());
    let s = w.gatehouse.wait_session_closed();
    let id = s["id"].as_str().unwrap();
    let path = s["recording_path"].as_str().unwrap();

    let cast = w
        .gatehouse
        .cli_ok(&["recordings", "export", id, "--format", "cast"]);
    assert_eq!(
        cast.as_bytes(),
        std::fs::read(path).unwrap(),
        "cast export is the file"
    );
    let txt = w
        .gatehouse
        .cli_ok(&["recordings", "export", id, "--format", "txt"]);
    assert!(txt.lines().any(|l| l == "exported-42"), "{txt}");
    assert!(txt.contains("marker] session end"), "{txt}");
    let json: serde_json::Value = serde_json::from_str(&w.gatehouse.cli_ok(&[
        "recordings",
        "export",
        id,
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["kind"], "terminal");
    assert!(json["events"].as_array().unwrap().len() >= 2);

    let played = w.gatehouse.cli(&["play", id, "--speed", "16"]);
    assert!(played.status.success());
    assert!(
        stdout(&played).contains("exported-42"),
        "{}",
        stdout(&played)
    );
    let bad = w.gatehouse.cli(&["play", "no-such-session"]);
    assert!(!bad.status.success());
}
