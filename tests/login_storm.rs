//! A login storm is served, not refused (issue 14 §1): 200 OpenSSH clients started at the
//! same moment all reach the target through one broker on the default SQLite store, and none
//! is told its target is misconfigured because the store was busy.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use gatehouse_e2e::{Gatehouse, World, stderr, stdout, target_dir};

#[test]
fn a_burst_of_200_logins_is_served_in_full() {
    const LOGINS: usize = 200;
    let w = World::new();
    let clients: Vec<_> = (0..LOGINS)
        .map(|i| {
            w.gatehouse
                .ssh("alice+web1", &w.alice_key)
                .arg(format!("echo storm-{i}-$((6*7))"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start ssh")
        })
        .collect();
    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().expect("ssh output");
        if !stdout(&out).contains(&format!("storm-{i}-42")) {
            failures.push(format!("#{i}: {:?} {}", out.status, stderr(&out).trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {LOGINS} logins failed:\n{}\nbroker log (tail):\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&w.gatehouse.log(), 60)
    );
    // Every one of them is a session in the registry.
    let out = w
        .gatehouse
        .cli_ok(&["sessions", "list", "--json", "--limit", "1000"]);
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&out).expect("sessions JSON");
    assert_eq!(sessions.len(), LOGINS, "one session row per login");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The start queue is bounded in time: with one start slot held by a session whose target
/// accepts TCP and never answers, the next login waits `start_wait` and is refused with a
/// message saying the broker is busy — its command never runs —, a PostgreSQL login too
/// (one line for the node's fronts), and once the slot is free again logins go through.
#[test]
fn a_login_that_cannot_start_in_time_is_refused_as_busy_and_nothing_runs() {
    let w = World::with_config("[node]\nmax_starting_sessions = 1\nstart_wait = \"1s\"\n");
    // a target that accepts connections and never says a word
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    w.gatehouse.cli_ok(&[
        "target",
        "add",
        "mute",
        "--env",
        "prod",
        "--ssh",
        &format!("nobody@127.0.0.1:{silent_port}"),
        "--identity",
        &w.target_identity.display().to_string(),
        "--host-key",
        w.sshd.host_public_key(),
    ]);
    let holder = w
        .gatehouse
        .ssh("alice+mute", &w.alice_key)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    // the holder is in its target login (the slot held) once its session row exists
    w.gatehouse.wait_live();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ran = w.keys.path().join("ran-while-busy");
    let out = w.ssh_exec("alice+web1", &format!("touch {}", ran.display()));
    let err = stderr(&out);
    assert!(
        err.contains("too busy to open the session now") && err.contains("nothing was run"),
        "the queued login is told why: {err}"
    );
    assert!(
        !ran.exists(),
        "a refused session ran its command on the target"
    );
    // the PostgreSQL front waits in the same line: refused with 53300 too_many_connections
    let message = pg_login_refused_as_full(&w, "mute");
    assert!(message.contains("too busy"), "{message}");
    // the holder's target login times out; the slot is free again
    let held = holder.wait_with_output().expect("holder output");
    assert!(
        stderr(&held).contains("cannot reach target 'mute'"),
        "{}",
        stderr(&held)
    );
    let out = w.ssh_exec("alice+web1", "echo after-$((5*5))");
    assert!(stdout(&out).contains("after-25"), "{}", stderr(&out));
    assert!(
        w.gatehouse
            .log()
            .contains("start queue did not move in time"),
        "the refusal is in the broker's log"
    );
    // and on record: one access_denied (busy) per front, with the operator and target
    let audit = access_denied(&w);
    let busy: Vec<(String, String, String)> = audit
        .iter()
        .filter(|e| e["detail"]["reason"] == "busy")
        .map(|e| {
            (
                e["operator"].as_str().unwrap_or("").to_owned(),
                e["detail"]["target"].as_str().unwrap_or("").to_owned(),
                e["detail"]["protocol"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        busy,
        [
            ("alice".to_owned(), "web1".to_owned(), "ssh".to_owned()),
            ("alice".to_owned(), "mute".to_owned(), "postgres".to_owned())
        ],
        "{audit:?}"
    );
}

/// `ssh alice+web1 'echo ready; touch DIR/ran-NAME; exec sleep 60'` through `w`'s broker;
/// `Ok` with the client once the command runs on the target, `Err` with the client if it
/// did not within `wait`.
fn try_sleeping_session(
    w: &World,
    ran: &std::path::Path,
    name: &str,
    wait: Duration,
) -> Result<Child, Child> {
    let mut child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg(format!(
            "echo ready; touch {}/ran-{name}; exec sleep 60",
            ran.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = [0u8; 6];
        let ok = out.read_exact(&mut ready).is_ok() && &ready == b"ready\n";
        let _ = tx.send(ok);
        // (keeps reading: the client must not block on a full pipe)
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    match rx.recv_timeout(wait) {
        Ok(true) => Ok(child),
        _ => Err(child),
    }
}

/// A PostgreSQL login as alice to `dbname` through `w`'s broker, refused with 53300
/// too_many_connections (what PostgreSQL itself says when it is full); its message.
fn pg_login_refused_as_full(w: &World, dbname: &str) -> String {
    w.add_password("full-pw-1");
    let conf = format!(
        "host=127.0.0.1 port={} user=alice dbname={dbname} password=full-pw-1 sslmode=disable",
        w.gatehouse.pg_port()
    );
    let pg = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(tokio_postgres::connect(&conf, tokio_postgres::NoTls))
        .map(|_| ())
        .expect_err("a PostgreSQL login while the node is full");
    let db = pg
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {pg}"));
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS,
        "{db:?}"
    );
    db.message().to_owned()
}

/// Ends the `clients` (ssh processes) and waits for them.
fn stop(clients: impl IntoIterator<Item = Child>) {
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Recordings of `w`'s broker (casts) in which `text` appears.
fn recordings_showing(w: &World, text: &str) -> usize {
    gatehouse_e2e::files_under(&w.gatehouse.dir().join("recordings"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cast"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(text)))
        .count()
}

/// The `access_denied` audit events of `w`'s broker.
fn access_denied(w: &World) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.gatehouse.cli_ok(&[
        "audit",
        "list",
        "--json",
        "--kind",
        "access_denied",
    ]))
    .expect("audit JSON")
}

/// Those of [`access_denied`] for logins refused because `max_sessions` (`limit`) were live.
fn refused_as_full(w: &World, limit: u64) -> Vec<serde_json::Value> {
    access_denied(w)
        .into_iter()
        .filter(|e| e["kind"] == "access_denied" && e["detail"]["max_sessions"] == limit)
        .collect()
}

/// CPU time (user + system) the process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // the fields after the command name's closing parenthesis: utime and stime are 14 and 15
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..].split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The default session limit is what the open-files limit leaves room for: a broker whose
/// hard limit leaves room for 3 sessions (beside one connection logging in) raises its soft limit to it, says so, serves 3,
/// and refuses a fourth at once on both fronts, with the reason and before anything reaches
/// the target (not with `EMFILE` somewhere in its start); an ended session frees a room.
#[test]
fn past_the_open_files_room_a_login_is_refused_at_once_and_nothing_runs() {
    use gatehouse_session::open_files::{FILES_FOR_THE_NODE, FILES_PER_LOGIN, FILES_PER_SESSION};
    // one login at a time on each front, and room for 3 sessions beside them
    let hard = FILES_FOR_THE_NODE + 2 * FILES_PER_LOGIN + 3 * FILES_PER_SESSION;
    let w = World::around(Gatehouse::start_with_open_files(
        "[node]\nmax_unauthenticated = 1\n",
        64,
        hard,
    ));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", w.gatehouse.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files in /proc/PID/limits");
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        [hard.to_string(), hard.to_string()],
        "the soft limit is raised to the hard one: {open_files}"
    );
    assert!(
        w.gatehouse
            .log()
            .contains("leaves room for only 3 live sessions"),
        "the broker says how many sessions its limit allows"
    );
    let ran = target_dir();
    let mut live: Vec<Child> = (0..3)
        .map(|i| {
            try_sleeping_session(&w, ran.path(), &i.to_string(), Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!(
                        "session {i} did not start: {}",
                        tail(&w.gatehouse.log(), 30)
                    )
                })
        })
        .collect();
    let out = w.ssh_exec(
        "alice+web1",
        &format!("touch {}/ran-4th", ran.path().display()),
    );
    let err = stderr(&out);
    assert!(
        err.contains("limit of 3 live sessions") && err.contains("nothing was run"),
        "the fourth login is told why: {err}"
    );
    assert!(
        !ran.path().join("ran-4th").exists(),
        "a login past the limit ran its command on the target"
    );
    // the PostgreSQL front counts toward the same limit: 53300, as PostgreSQL when full
    let message = pg_login_refused_as_full(&w, "web1");
    assert!(message.contains("limit of 3 live sessions"), "{message}");
    // on record, one per front
    let audit = refused_as_full(&w, 3);
    let refused: Vec<&serde_json::Value> = audit.iter().collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused.iter().all(|e| e["detail"]["reason"] == "busy"));
    // an ended session frees its room
    stop([live.remove(0)]);
    let mut after = None;
    for _ in 0..50 {
        let out = w.ssh_exec("alice+web1", "echo after-$((5*5))");
        if stdout(&out).contains("after-25") {
            after = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        after.is_some(),
        "no login after a session ended: {}",
        tail(&w.gatehouse.log(), 30)
    );
    stop(live);
}

/// A login refused because the node is full is let in far enough to read why, and no
/// further: a client that then asks for nothing (`ssh -N`) would hold its login slot for as
/// long as it liked, and with the slots held no one could log in even once rooms were free.
/// It is dropped at its login grace.
#[test]
fn a_login_refused_as_full_is_dropped_at_its_login_grace() {
    let w = World::with_config(
        "login_grace = \"2s\"\n[node]\nmax_sessions = 1\nmax_unauthenticated = 1\n",
    );
    let ran = target_dir();
    let live = try_sleeping_session(&w, ran.path(), "first", Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no first session: {}", tail(&w.gatehouse.log(), 30)));
    let mut args = w.gatehouse.client_options("-p", &w.alice_key);
    args.push("-N".into());
    args.push("alice+web1@127.0.0.1".into());
    let connected = std::time::Instant::now();
    let mut idle = std::process::Command::new(gatehouse_e2e::tool("ssh", "openssh-client"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh -N");
    // it logs in, and is refused for the full node (on record)
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !refused_as_full(&w, 1).is_empty()
    });
    assert!(
        refused,
        "not refused as full: {}",
        tail(&w.gatehouse.log(), 30)
    );
    // a room is free again; the refused client keeps asking for nothing
    stop([live]);
    let mut gone = None;
    while connected.elapsed() < Duration::from_secs(10) {
        if let Some(status) = idle.try_wait().expect("try_wait") {
            gone = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = connected.elapsed();
    stop([idle]);
    assert!(
        gone.is_some(),
        "a client refused as full still held its connection (and the node's one login slot) after {at:?}: {}",
        tail(&w.gatehouse.log(), 30)
    );
    assert!(
        at >= Duration::from_secs(2),
        "dropped before its login grace: {at:?}"
    );
    // the slot is free: a login is served
    let out = w.ssh_exec("alice+web1", "echo after-$((6*7))");
    assert!(
        stdout(&out).contains("after-42"),
        "no login after the refused client was dropped: {}",
        stderr(&out)
    );
}

/// Out of descriptors below the session limit (`max_sessions` set past what the open-files
/// limit allows): at the edge a login either waits in the listen backlog or is refused
/// naming the cause, never runs unrecorded; the broker neither dies nor spins on its
/// readable listener, and serves logins again once sessions end.
#[test]
fn out_of_open_files_nothing_runs_unrecorded_and_the_node_recovers() {
    let w = World::around(Gatehouse::start_with_open_files(
        "[node]\nmax_sessions = 1000\n",
        160,
        160,
    ));
    assert!(
        w.gatehouse
            .log()
            .contains("max_sessions is 1000 but the open-files limit"),
        "the broker warns that its limit allows fewer sessions than configured"
    );
    let ran = target_dir();
    let mut live = Vec::new();
    let edge = loop {
        assert!(live.len() < 100, "160 open files held 100 sessions");
        let name = live.len().to_string();
        match try_sleeping_session(&w, ran.path(), &name, Duration::from_secs(2)) {
            Ok(c) => live.push(c),
            Err(c) => break c,
        }
    };
    assert!(
        live.len() >= 10,
        "only {} sessions before the limit",
        live.len()
    );
    // more logins at the edge, and the broker out of descriptors must not spin
    let mut edge = vec![edge];
    for i in 0..3 {
        let name = format!("edge-{i}");
        match try_sleeping_session(&w, ran.path(), &name, Duration::from_millis(500)) {
            Ok(c) | Err(c) => edge.push(c),
        }
    }
    let before = cpu_time(w.gatehouse.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(w.gatehouse.pid()) - before;
    assert!(
        used < Duration::from_millis(300),
        "the broker used {used:?} of CPU in 1 s while out of files"
    );
    // a login refused at the edge says why: out of descriptors at its recording ("Too many
    // open files") or at the target's socket (the node has no open files left, the target
    // not contacted), or it was closed before the SSH banner (out of descriptors for the
    // connection itself, Gatehouse cannot speak SSH on it)
    for c in &mut edge {
        if let Ok(Some(_)) = c.try_wait() {
            let mut err = String::new();
            let _ = c.stderr.take().expect("piped").read_to_string(&mut err);
            assert!(
                err.contains("Too many open files")
                    || err.contains(gatehouse_session::open_files::OUT_OF_FILES)
                    || err.contains("kex_exchange_identification"),
                "a login refused out of files is told why: {err}"
            );
        }
    }
    // the logins at the edge give up (one still waiting in the backlog would take the
    // files the ended sessions free, before the login below), and sessions end: logins
    // are served again
    stop(edge);
    stop(live.drain(..4));
    let served = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        stdout(&w.ssh_exec("alice+web1", "echo after-$((5*5))")).contains("after-25")
    });
    assert!(
        served,
        "no login served after sessions ended: {}",
        tail(&w.gatehouse.log(), 30)
    );
    stop(live);
    // nothing ran unrecorded: every command that ran on the target printed `ready` into a
    // recording
    let ran_count = std::fs::read_dir(ran.path()).expect("ran dir").count();
    let recorded = recordings_showing(&w, "ready");
    assert!(
        recorded >= ran_count,
        "{ran_count} commands ran on the target, {recorded} recordings show them"
    );
}

/// The session limit's arithmetic holds: a live SSH session (the front that holds the most)
/// keeps at most `FILES_PER_SESSION` descriptors open in the broker. Measured over 40
/// sessions, with room for every pooled store connection opening meanwhile (2 files each).
#[test]
fn a_live_session_holds_no_more_descriptors_than_the_session_limit_counts() {
    use gatehouse_session::open_files::FILES_PER_SESSION;
    const SESSIONS: u64 = 40;
    const POOL_FILES: u64 = 8 * 2;
    let w = World::new();
    let open = || {
        std::fs::read_dir(format!("/proc/{}/fd", w.gatehouse.pid()))
            .expect("fd dir")
            .count() as u64
    };
    let ran = target_dir();
    // one session first, ended: what a node opens once (store connections, writers) is open
    let warm = try_sleeping_session(&w, ran.path(), "warm", Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no session: {}", tail(&w.gatehouse.log(), 30)));
    stop([warm]);
    w.gatehouse.wait_all_closed();
    let before = open();
    let live: Vec<Child> = (0..SESSIONS)
        .map(|i| {
            try_sleeping_session(&w, ran.path(), &i.to_string(), Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("session {i} did not start"))
        })
        .collect();
    let held = open() - before;
    assert!(
        held <= SESSIONS * FILES_PER_SESSION + POOL_FILES,
        "{SESSIONS} live sessions hold {held} descriptors: more than {FILES_PER_SESSION} each"
    );
    stop(live);
}

/// A flood of unauthenticated connections cannot take the descriptors live sessions need:
/// 200 silent sockets against a broker whose open-files limit (300) they would exhaust
/// twice over (an SSH connection holds 2) get the SSH front's 2 login slots between them, the
/// rest wait in the listen backlog; the node never runs out of files, a live session goes on and is
/// recorded, and a login started during the flood is served once the flood goes away.
#[test]
fn a_flood_of_silent_connections_cannot_take_the_files_of_live_sessions() {
    use gatehouse_session::open_files::{FILES_FOR_THE_NODE, OpenFiles};
    const FLOOD: usize = 200;
    let hard = FILES_FOR_THE_NODE + 44;
    let logins = OpenFiles {
        before: hard,
        limit: hard,
    }
    .login_room(2);
    assert_eq!(logins, 2, "login slots on each front");
    let w = World::around(Gatehouse::start_with_open_files("", hard, hard));
    let ran = target_dir();
    let mut live = try_sleeping_session(&w, ran.path(), "before", Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no session: {}", tail(&w.gatehouse.log(), 30)));
    let addr = format!("127.0.0.1:{}", w.gatehouse.port());
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    // the broker takes what its login slots allow, no more
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", w.gatehouse.pid()))
        .expect("fd dir")
        .count() as u64;
    assert!(
        fds < hard - 20,
        "the flood took the broker to {fds} of {hard} descriptors"
    );
    // a login during the flood waits behind it, and is served when it goes
    let waiting = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg(format!("touch {}", ran.path().join("ran-during").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !ran.path().join("ran-during").exists(),
        "a login got past the slots held by the flood"
    );
    drop(flood);
    let out = waiting.wait_with_output().expect("ssh output");
    assert!(
        ran.path().join("ran-during").exists(),
        "the login that waited was not served: {}\n{}",
        stderr(&out),
        tail(&w.gatehouse.log(), 30)
    );
    assert!(
        !w.gatehouse.log().contains("Too many open files"),
        "the node ran out of files: {}",
        tail(&w.gatehouse.log(), 30)
    );
    // the session that was live throughout is still there, and recorded
    assert!(
        matches!(live.try_wait(), Ok(None)),
        "the live session ended"
    );
    stop([live]);
    let recorded = recordings_showing(&w, "ready");
    assert_eq!(recorded, 1, "the live session's recording");
}

/// With `[node] max_unauthenticated_per_source`, one source's silent sockets take at most
/// its share of the login slots: further ones from it are closed at once, and an operator
/// from another address logs in (and runs) while they sit there — without it the flood
/// would hold every slot and the operator would wait behind it until its login grace.
#[test]
fn a_flood_from_one_source_leaves_the_login_slots_to_others() {
    let w =
        World::with_config("[node]\nmax_unauthenticated = 4\nmax_unauthenticated_per_source = 2\n");
    let addr = format!("127.0.0.1:{}", w.gatehouse.port());
    let started = std::time::Instant::now();
    let mut flood: Vec<std::net::TcpStream> = (0..6)
        .map(|_| {
            let s = std::net::TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .expect("timeout");
            s
        })
        .collect();
    // past the share: closed at once, not left waiting for a login grace
    let closed = flood
        .iter_mut()
        .map(|s| s.read(&mut [0u8; 64]))
        .filter(|r| matches!(r, Ok(0)))
        .count();
    assert_eq!(
        closed,
        4,
        "sockets of one source closed at once, of 6 with a share of 2 ({:?})",
        started.elapsed()
    );
    // another address gets in while the two hold their slots
    let ran = target_dir();
    let mut args = w.gatehouse.client_options("-p", &w.alice_key);
    args.extend([
        "-b".into(),
        "127.0.0.2".into(),
        "alice+web1@127.0.0.1".into(),
    ]);
    args.push(format!(
        "touch {}/ran-other; echo other-$((6*7))",
        ran.path().display()
    ));
    let mut ssh = std::process::Command::new(gatehouse_e2e::tool("ssh", "openssh-client"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh from 127.0.0.2");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ssh.try_wait().expect("try_wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ssh.kill();
    let out = ssh.wait_with_output().expect("ssh output");
    assert!(
        stdout(&out).contains("other-42") && ran.path().join("ran-other").exists(),
        "a login from another address was not served: {}",
        stderr(&out)
    );
    assert!(
        w.gatehouse
            .log()
            .contains("its source holds its share of login slots"),
        "the closed connections are in the log"
    );
    drop(flood);
}
