//! Reviewing real sessions: a full-screen `vi` recorded by the real broker replays to the
//! same screen the operator saw, and `gatehouse review` runs in tmux (open a session, search
//! a marker, jump between markers), plus the `play` and `export` companions, and the SQL
//! view over a statement log written by the real PostgreSQL front.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use std::process::{Command, Stdio};

use gatehouse_e2e::{Tmux, World, asciinema_cat, gatehouse_bin, stderr, stdout, tool};
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

/// Masks what changes from run to run in a frame of the SQL view (statement times and
/// durations, the session's start) without moving anything else: the rest of the frame
/// is compared cell for cell. `frame` is `TestBackend`'s text: each row in quotes.
fn mask_sql_frame(frame: &str) -> String {
    fn put(chars: &mut [char], at: usize, text: &str) {
        for (i, c) in text.chars().enumerate() {
            if let Some(slot) = chars.get_mut(at + i) {
                *slot = c;
            }
        }
    }
    fn find(chars: &[char], needle: &str) -> Option<usize> {
        let n: Vec<char> = needle.chars().collect();
        chars.windows(n.len()).position(|w| w == n.as_slice())
    }
    frame
        .lines()
        .map(|line| {
            let mut c: Vec<char> = line.chars().collect();
            // the detail's "server process PID": the pid as `PID`, the popup's right
            // border kept where it was (pids differ in length)
            if let Some(at) = find(&c, "server process ") {
                let start = at + "server process ".len();
                let digits = c[start..]
                    .iter()
                    .take_while(|ch| ch.is_ascii_digit())
                    .count();
                let border = c.iter().rposition(|ch| *ch == '│');
                c.splice(start..start + digits, "PID".chars());
                if let Some(border) = border {
                    let border = border + 3 - digits;
                    let pad = vec![' '; digits.saturating_sub(3)];
                    c.splice(border..border, pad);
                    if digits < 3 {
                        c.drain(border - (3 - digits)..border);
                    }
                }
            }
            // header: "… · YYYY-MM-DD hh:mm:ss · N statements"
            if let Some(at) = find(&c, " · 20") {
                put(&mut c, at + 3, "YYYY-MM-DD hh:mm:ss");
            }
            // table rows: TIME in cells 1..8, DURATION in 9..19 (blank for markers);
            // one more for the opening quote
            if c.get(4) == Some(&':') && c.get(2).is_some_and(char::is_ascii_digit) {
                put(&mut c, 2, "mm:ss.f");
                if c[10..20].iter().any(|ch| *ch != ' ') {
                    put(&mut c, 10, "#.##ms    ");
                }
            }
            // statement detail: "at mm:ss.f · … · D.DD ms · TAG", same width kept
            if let Some(at) = find(&c, "│at ") {
                put(&mut c, at + 4, "mm:ss.f");
                if let Some(ms) = find(&c, " ms · ") {
                    // the number's width varies: rewrite up to the box's right edge
                    let start = c[..ms].iter().rposition(|ch| *ch == ' ').unwrap() + 1;
                    let edge = start + c[start..].iter().position(|ch| *ch == '│').unwrap();
                    let rest: String = c[ms..edge].iter().collect();
                    let masked = format!(
                        "{:<w$}",
                        format!("#.##{}", rest.trim_end()),
                        w = edge - start
                    );
                    put(&mut c, start, &masked);
                }
            }
            c.into_iter().collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sql_view_of_a_statement_log_written_by_the_real_postgres_front() {
    use gatehouse_e2e::pg::PgWorld;
    use gatehouse_review::{App, SearchIndex, StoreCatalog};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

    let w = PgWorld::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&w.tokio_config(), tokio_postgres::NoTls)
                .await
                .expect("connect through gatehouse");
        let conn = tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)")
            .await
            .unwrap();
        for (id, name) in [(1, "anvil"), (2, "rope")] {
            client
                .execute(
                    "INSERT INTO items (id, name, price) VALUES ($1, $2, 9.5)",
                    &[&id, &name],
                )
                .await
                .unwrap();
        }
        let rows = client
            .query(
                "SELECT name FROM items WHERE id >= $1 ORDER BY id",
                &[&1i32],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let err = client
            .simple_query("SELECT * FROM itemz")
            .await
            .unwrap_err();
        assert!(err.as_db_error().is_some(), "{err}");
        client
            .simple_query("UPDATE items SET price = price * 2")
            .await
            .unwrap();
        drop(client);
        let _ = conn.await;
    });
    let closed = w.gatehouse.wait_session_closed();
    assert!(
        closed["recording_path"]
            .as_str()
            .is_some_and(|p| p.ends_with(".sql.jsonl")),
        "{closed}"
    );

    // the review app over the broker's own store, as `gatehouse review` opens it
    let dir = w.gatehouse.dir();
    let store = rt
        .block_on(async {
            let key =
                gatehouse_store::MasterKey::load_or_create(&dir.join("gatehouse_secret.key"))?;
            let url = format!("sqlite://{}", dir.join("gatehouse.db").display());
            gatehouse_store::Store::open(&url, key)
                .await
                .map_err(anyhow::Error::from)
        })
        .unwrap();
    let catalog = StoreCatalog::new(store, rt.handle().clone(), 100);
    let mut app = App::new(Box::new(catalog), SearchIndex::new(None), i64::MAX / 2);
    let frame = |app: &App| {
        let mut t = Terminal::new(TestBackend::new(80, 14)).unwrap();
        t.draw(|f| gatehouse_review::ui::draw(f, app)).unwrap();
        mask_sql_frame(&t.backend().to_string())
    };
    let key = |app: &mut App, code: KeyCode| {
        app.handle(&Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    };
    let list = frame(&app);
    let row = list
        .lines()
        .find(|l| l.contains("orders"))
        .unwrap_or_else(|| panic!("no session in the list:\n{list}"));
    assert!(row.contains("postgres") && row.contains(" ok"), "{row}");

    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("real_sql_log_list", frame(&app));
    // the second INSERT: a prepared statement with its parameters decoded by type
    for _ in 0..2 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("real_sql_log_detail", frame(&app));
}

/// Waits for `needle` on `tmux`'s screen for at most `within`; the screen, or a failure
/// naming how long it waited.
fn wait_within(tmux: &Tmux, needle: &str, within: Duration) -> String {
    let started = std::time::Instant::now();
    loop {
        let screen = tmux.screen();
        if screen.contains(needle) {
            return screen;
        }
        assert!(
            started.elapsed() < within,
            "'{needle}' not there after {within:?}; screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gatehouse review` with `args` in its own tmux (100×30).
fn review_in_tmux(w: &World, dir: &std::path::Path, args: &str) -> Tmux {
    let cmd = format!(
        "{} --config {} review {args}; echo REVIEW-EXIT=$?; sleep 60",
        gatehouse_bin().display(),
        w.gatehouse.config().display()
    );
    Tmux::start(dir, &cmd)
}

#[test]
fn a_live_session_is_followed_and_ended_from_review_naming_the_reviewer() {
    let w = World::new();
    w.gatehouse.set_policy(&["--idle-timeout", "10m"]);
    let operator = w.interactive("alice+web1");
    let id = w.gatehouse.wait_live();
    let dir = tempfile::tempdir().unwrap();
    let ui = review_in_tmux(&w, dir.path(), "--as rita-reviewer");
    let list = ui.wait_for("1 of 1 sessions");
    assert!(list.contains("● live") && list.contains("K end"), "{list}");
    // the live session's idle time, next limit and lock state (the window is 100 wide:
    // on the bottom line), from its recording and the environment's policy
    let state = ui.wait_for("next: idle 9m");
    assert!(state.contains("lock: -"), "{state}");

    // open the live session: it follows what the operator does, like tail -f
    ui.run(&["send-keys", "Enter"]);
    ui.wait_for("following live");
    ui.wait_for("ready-42");
    operator.type_line("echo typed-$((6*7))");
    wait_within(&ui, "typed-42", Duration::from_secs(2));
    // moving back stops following; G/End follows again and catches up
    ui.type_keys("g");
    ui.wait_for("paused");
    operator.type_line("echo later-$((6*7))");
    operator.wait_for("later-42");
    assert!(!ui.screen().contains("later-42"), "{}", ui.screen());
    ui.type_keys("G");
    wait_within(&ui, "later-42", Duration::from_secs(2));

    // K: a reason, then y; the operator's ssh ends with it
    ui.type_keys("K");
    ui.wait_for("reason (the operator sees it");
    ui.type_keys("rotating keys");
    ui.run(&["send-keys", "Enter"]);
    ui.wait_for("y ends it");
    ui.type_keys("y");
    ui.wait_for("will end within 2 seconds");
    let ended = wait_within(&operator, "EXIT=", Duration::from_secs(3));
    assert!(
        ended.contains("terminated by admin: rotating keys"),
        "{ended}"
    );
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["end_reason"], "admin_kill: rotating keys");
    let audit = w.gatehouse.wait_audit("session_kill_requested");
    assert_eq!(audit["detail"]["by"], "rita-reviewer", "{audit}");
    assert_eq!(audit["detail"]["session"], id.as_str(), "{audit}");
    assert_eq!(audit["source"], "review", "{audit}");
}

#[test]
fn lock_from_review_ends_the_operators_sessions_and_read_only_has_no_actions() {
    let w = World::new();
    let operator = w.interactive("alice+web1");
    w.gatehouse.wait_live();
    let dir = tempfile::tempdir().unwrap();

    // --read-only: K and L do nothing and are not offered
    let ro = review_in_tmux(&w, dir.path(), "--read-only");
    let list = ro.wait_for("1 of 1 sessions");
    assert!(!list.contains("K end"), "{list}");
    ro.type_keys("KL");
    ro.type_keys("?");
    let help = ro.wait_for("keys");
    assert!(!help.contains("lock the operator"), "{help}");
    assert!(!help.contains("y locks"), "{help}");
    ro.type_keys("xq");
    ro.wait_for("REVIEW-EXIT=0");
    drop(ro);

    let dir = tempfile::tempdir().unwrap();
    let ui = review_in_tmux(&w, dir.path(), "--as rita-reviewer");
    ui.wait_for("1 of 1 sessions");
    // a cancelled lock does nothing
    ui.type_keys("L");
    ui.wait_for("y locks");
    ui.type_keys("n");
    ui.wait_for("cancelled");
    ui.type_keys("L");
    ui.wait_for("y locks");
    ui.type_keys("y");
    ui.wait_for("operator alice locked; 1 live session will end");
    let ended = wait_within(&operator, "EXIT=", Duration::from_secs(3));
    assert!(ended.contains("account locked by admin"), "{ended}");
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "operator_locked"
    );
    let audit = w.gatehouse.wait_audit("user_locked");
    assert_eq!(audit["detail"]["by"], "rita-reviewer", "{audit}");
    assert_eq!(audit["detail"]["user"], "alice", "{audit}");
}

#[test]
fn an_exec_without_a_pty_replays_and_exports_without_a_staircase() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "printf 'one\\ntwo\\nthree\\n'");
    assert!(out.status.success());
    let s = w.gatehouse.wait_session_closed();
    let path = s["recording_path"].as_str().unwrap();
    let id = s["id"].as_str().unwrap();
    let cast = Arc::new(Cast::parse(&std::fs::read(path).unwrap()).unwrap());
    assert_eq!(cast.env("GATEHOUSE_PTY"), Some("no"));
    let mut p = Player::new(Arc::clone(&cast));
    p.seek(p.duration());
    let screen = rows(&p);
    let at = screen.iter().position(|r| r == "one").expect("'one' row");
    assert_eq!(&screen[at..at + 3], ["one", "two", "three"], "{screen:#?}");
    let txt = w
        .gatehouse
        .cli_ok(&["recordings", "export", id, "--format", "txt"]);
    assert!(txt.contains("one\ntwo\nthree\n"), "{txt}");
    let played = stdout(&w.gatehouse.cli(&["play", id, "--speed", "16"]));
    assert!(played.contains("one\r\ntwo\r\nthree\r\n"), "{played:?}");
}

#[test]
fn a_controlmaster_session_keeps_each_channels_terminal_mode() {
    let w = World::new();
    let socket = w.keys.path().join("cm.sock");
    let (master, control) = w.controlmaster(&socket);
    let tmux = Tmux::start(
        w.keys.path(),
        &format!("env TERM=xterm {master}; echo EXIT=$?; sleep 60"),
    );
    tmux.type_line("export PS1='gh$ '; echo ready-$((6*7))");
    tmux.wait_for("ready-42");
    // a second channel through the master, without a pty
    let out = Command::new(tool("ssh", "openssh-client"))
        .args(w.gatehouse.client_options("-p", &w.alice_key))
        .args(&control)
        .arg("alice+web1@127.0.0.1")
        .arg("printf 'cm-one\\ncm-two\\n'")
        .stdin(Stdio::null())
        .output()
        .expect("ssh through the master");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "cm-one\ncm-two\n");
    tmux.type_line("echo back-$((6*7))");
    tmux.wait_for("back-42");
    let (_, path) = finish(&w, &tmux);

    let bytes = std::fs::read(&path).unwrap();
    let cast = Arc::new(Cast::parse(&bytes).unwrap());
    assert_eq!(cast.env("GATEHOUSE_PTY"), Some("yes"));
    let output_with = |needle: &str| {
        cast.events
            .iter()
            .find(|e| e.kind == EventKind::Output && cast.data(e).contains(needle))
            .unwrap_or_else(|| panic!("no output with {needle}"))
    };
    assert!(!output_with("cm-one").pty, "the exec channel had no pty");
    assert!(
        output_with("back-42").pty,
        "the shell's output after it is a pty's"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(r#""t", "no-pty"]"#), "{text}");
    assert!(text.contains(r#""t", "pty"]"#), "{text}");
    let mut p = Player::new(Arc::clone(&cast));
    p.seek(output_with("cm-two").at);
    let screen = rows(&p);
    let at = screen
        .iter()
        .position(|r| r.ends_with("cm-one"))
        .unwrap_or_else(|| panic!("{screen:#?}"));
    assert_eq!(screen[at + 1], "cm-two", "{screen:#?}");
    // still a plain asciicast v2 file for asciinema
    let cat = asciinema_cat(&path);
    assert!(cat.status.success(), "{}", stderr(&cat));
    assert!(stdout(&cat).contains("back-42"), "{}", stdout(&cat));
}

/// The idle time on the list's detail line (`idle 3.4s ·`, `idle 12s ·`, `idle 1m05s ·`),
/// in tenths of a second.
fn shown_idle(screen: &str) -> Option<u64> {
    let at = screen.find("  idle ")? + "  idle ".len();
    let text = screen[at..].split_whitespace().next()?;
    let (mins, rest) = match text.split_once('m') {
        Some((m, s)) => (m.parse::<u64>().ok()?, s),
        None => (0, text),
    };
    let secs: f64 = rest.strip_suffix('s')?.parse().ok()?;
    Some(mins * 600 + (secs * 10.0) as u64)
}

#[test]
fn live_columns_come_from_the_guard_idle_grows_reauth_is_named_and_the_lock_shows() {
    let w = World::new();
    w.add_password("lock-pw-15");
    w.gatehouse.set_policy(&[
        "--idle-timeout",
        "10m",
        "--idle-action",
        "lock",
        "--lock-grace",
        "60s",
        "--reauth-after",
        "5m",
    ]);
    let operator = w.interactive("alice+web1");
    w.gatehouse.wait_live();
    let dir = tempfile::tempdir().unwrap();
    let ui = review_in_tmux(&w, dir.path(), "--read-only");
    ui.wait_for("1 of 1 sessions");
    // the reauthentication deadline is the nearest: only the guard knows it (the
    // recording and the policy alone would say idle)
    let screen = wait_within(&ui, "next: reauth 4m", Duration::from_secs(6));
    assert!(screen.contains("lock: -"), "{screen}");
    // the idle time grows from one refresh to the next
    let first = shown_idle(&ui.screen()).expect("an idle time on the detail line");
    let started = std::time::Instant::now();
    let grown = loop {
        let screen = ui.screen();
        let now = shown_idle(&screen).expect("an idle time on the detail line");
        if now >= first + 20 {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "idle time stuck at {first}: {screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(grown > first);

    // a shorter idle limit: the session is past it, so it locks (with a final notice);
    // the list shows the lock within the heartbeat's nudge and one refresh, and while
    // locked the next limit is the end of the lock grace
    w.gatehouse.set_policy(&["--idle-timeout", "3s"]);
    operator.wait_for("[gatehouse] password for alice: ");
    let screen = wait_within(&ui, "lock: session", Duration::from_secs(5));
    assert!(screen.contains("next: reauth 5"), "{screen}");
    // unlocked again (under a long idle limit, which reaches the guard within 0.5 s, well
    // before the short one could lock again): the list follows
    w.gatehouse.set_policy(&["--idle-timeout", "10m"]);
    operator.type_line("lock-pw-15");
    operator.wait_for("unlocked; resuming");
    wait_within(&ui, "lock: -", Duration::from_secs(5));
}
