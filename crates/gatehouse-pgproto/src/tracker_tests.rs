//! The tracker against the message orders drivers produce.

use super::*;
use crate::message::Param;

const MS: Duration = Duration::from_millis(1);

fn err(code: &str) -> Backend<'static> {
    Backend::Error(ErrorFields {
        severity: "ERROR".into(),
        code: code.into(),
        message: "boom".into(),
    })
}

fn complete<'a>(tag: &'a str) -> Backend<'a> {
    Backend::CommandComplete { tag: tag.into() }
}

const READY: Backend<'static> = Backend::ReadyForQuery { status: b'I' };
const EXECUTE_UNNAMED: Frontend<'static> = Frontend::Execute {
    portal: std::borrow::Cow::Borrowed(""),
};

#[test]
fn simple_queries_collect_their_tags() {
    let mut t = Tracker::new();
    t.frontend(&Frontend::Query("select 1; select 2".into()), MS);
    assert!(t.backend(&complete("SELECT 1"), 2 * MS).is_empty());
    assert!(t.backend(&complete("SELECT 1"), 3 * MS).is_empty());
    let done = t.backend(&READY, 4 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].tags, vec!["SELECT 1", "SELECT 1"]);
    assert_eq!(done[0].duration, 3 * MS);
    t.frontend(&Frontend::Query("selec".into()), 5 * MS);
    t.backend(&err("42601"), 6 * MS);
    let done = t.backend(&READY, 6 * MS);
    assert_eq!(done[0].error, Some(("42601".into(), "boom".into())));
}

#[test]
fn pipelined_extended_queries_with_parameters() {
    let mut t = Tracker::new();
    for (name, text, v) in [("s1", "select $1", "42"), ("", "insert $1", "x")] {
        t.frontend(
            &Frontend::Parse {
                name: name.into(),
                text: text.into(),
                types: vec![],
            },
            MS,
        );
        t.frontend(
            &Frontend::Bind {
                portal: "".into(),
                statement: name.into(),
                params: vec![
                    Param {
                        value: Some(v.as_bytes()),
                        binary: false,
                    },
                    Param {
                        value: None,
                        binary: false,
                    },
                ],
            },
            MS,
        );
        t.frontend(&EXECUTE_UNNAMED, MS);
    }
    t.frontend(&Frontend::Sync, MS);
    let mut done = vec![];
    for m in [
        Backend::Other(b'1'),
        Backend::Other(b'2'),
        complete("SELECT 1"),
        Backend::Other(b'1'),
        Backend::Other(b'2'),
        complete("INSERT 0 1"),
        READY,
    ] {
        done.extend(t.backend(&m, 2 * MS));
    }
    assert_eq!(done.len(), 2);
    assert_eq!(&*done[0].text, "select $1");
    assert_eq!(done[0].name.as_deref(), Some("s1"));
    assert_eq!(
        done[0].params.as_deref(),
        Some(&[Some("42".into()), None][..])
    );
    assert_eq!(done[1].tags, vec!["INSERT 0 1"]);
}

fn parse<'a>(name: &'a str, text: &'a str) -> Frontend<'a> {
    Frontend::Parse {
        name: name.into(),
        text: text.into(),
        types: vec![],
    }
}

fn bind_binary<'a>(statement: &'a str, value: &'a [u8]) -> Frontend<'a> {
    Frontend::Bind {
        portal: "".into(),
        statement: statement.into(),
        params: vec![Param {
            value: Some(value),
            binary: true,
        }],
    }
}

fn describe<'a>(name: &'a str) -> Frontend<'a> {
    Frontend::Describe {
        statement: Some(name.into()),
    }
}

/// tokio-postgres closes a dropped statement (Close, Sync) and prepares the next one
/// (Parse, Describe, Sync) before the server has answered the Close: the answer's
/// ReadyForQuery must not forget the describe that is still in flight.
#[test]
fn parameter_types_survive_a_pipelined_ready_for_query() {
    let mut t = Tracker::new();
    t.frontend(&Frontend::Other(b'C'), MS);
    t.frontend(&Frontend::Sync, MS);
    t.frontend(&parse("s1", "select $1"), MS);
    t.frontend(&describe("s1"), MS);
    t.frontend(&Frontend::Sync, MS);
    for m in [Backend::Other(b'3'), READY, Backend::Other(b'1')] {
        t.backend(&m, 2 * MS);
    }
    t.backend(&Backend::ParameterDescription(vec![23]), 2 * MS);
    t.backend(&READY, 2 * MS);
    t.frontend(&bind_binary("s1", &[0, 0, 0, 7]), 3 * MS);
    t.frontend(&EXECUTE_UNNAMED, 3 * MS);
    t.frontend(&Frontend::Sync, 3 * MS);
    let mut done = t.backend(&complete("SELECT 1"), 4 * MS);
    done.extend(t.backend(&READY, 4 * MS));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].params.as_deref(), Some(&[Some("7".into())][..]));
}

/// A describe the server skipped (its Parse failed) is retired by its segment's
/// ReadyForQuery, so the next ParameterDescription goes to the next statement.
#[test]
fn a_skipped_describe_does_not_shift_later_parameter_types() {
    let mut t = Tracker::new();
    t.frontend(&parse("bad", "selec $1"), MS);
    t.frontend(&describe("bad"), MS);
    t.frontend(&Frontend::Sync, MS);
    t.frontend(&parse("good", "select $1"), MS);
    t.frontend(&describe("good"), MS);
    t.frontend(&Frontend::Sync, MS);
    for m in [
        err("42601"),
        READY,
        Backend::Other(b'1'),
        Backend::ParameterDescription(vec![20]),
        READY,
    ] {
        t.backend(&m, 2 * MS);
    }
    t.frontend(&bind_binary("good", &[0, 0, 0, 0, 0, 0, 0, 9]), 3 * MS);
    t.frontend(&EXECUTE_UNNAMED, 3 * MS);
    t.frontend(&Frontend::Sync, 3 * MS);
    let mut done = t.backend(&complete("SELECT 1"), 4 * MS);
    done.extend(t.backend(&READY, 4 * MS));
    assert_eq!(done[0].params.as_deref(), Some(&[Some("9".into())][..]));
}

#[test]
fn an_error_skips_the_rest_of_the_pipeline() {
    let mut t = Tracker::new();
    for text in ["bad sql", "select 2"] {
        t.frontend(
            &Frontend::Parse {
                name: "".into(),
                text: text.into(),
                types: vec![],
            },
            MS,
        );
        t.frontend(&EXECUTE_UNNAMED, MS);
    }
    t.frontend(&Frontend::Sync, MS);
    let done = t.backend(&err("42601"), 2 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!(&*done[0].text, "bad sql");
    assert!(t.backend(&READY, 3 * MS).is_empty());
    // in step again afterwards
    t.frontend(&Frontend::Query("select 3".into()), 4 * MS);
    t.backend(&complete("SELECT 1"), 5 * MS);
    assert_eq!(&*t.backend(&READY, 5 * MS)[0].text, "select 3");
}

#[test]
fn function_calls_are_logged_with_their_arguments() {
    let mut t = Tracker::new();
    t.frontend(
        &Frontend::FunctionCall {
            oid: 2924,
            args: vec![
                Param {
                    value: Some(b"delete from orders returning 1"),
                    binary: true,
                },
                Param {
                    value: Some(&[1]),
                    binary: true,
                },
                Param {
                    value: Some(b"t"),
                    binary: false,
                },
                Param {
                    value: None,
                    binary: false,
                },
            ],
        },
        MS,
    );
    t.backend(&Backend::FunctionCallResponse, 2 * MS);
    let done = t.backend(&READY, 2 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].protocol, Protocol::FunctionCall);
    assert_eq!(&*done[0].text, "<function call, oid 2924>");
    assert_eq!(
        done[0].params.as_deref(),
        Some(
            &[
                Some("delete from orders returning 1".into()),
                Some("\\x01".into()),
                Some("t".into()),
                None
            ][..]
        )
    );
}

#[test]
fn abandoned_statements_are_logged_and_long_text_is_clipped() {
    let mut t = Tracker::new();
    t.frontend(&Frontend::Query("x".repeat(MAX_TEXT + 10).into()), MS);
    let done = t.abandon(3 * MS);
    assert_eq!(done.len(), 1);
    assert!(done[0].text.ends_with("…[10 bytes truncated]"));
    assert!(done[0].error.is_some());
}

fn bind_portal<'a>(portal: &'a str, statement: &'a str) -> Frontend<'a> {
    Frontend::Bind {
        portal: portal.into(),
        statement: statement.into(),
        params: vec![],
    }
}

fn execute<'a>(portal: &'a str) -> Frontend<'a> {
    Frontend::Execute {
        portal: portal.into(),
    }
}

const ROW: Backend<'static> = Backend::Other(b'D');
const IN_TRANSACTION: Backend<'static> = Backend::ReadyForQuery { status: b'T' };

/// `n` DataRows, then how the piece ended, then ReadyForQuery in a transaction.
fn piece(t: &mut Tracker, n: usize, end: Backend<'static>, at: Duration) -> Vec<Statement> {
    let mut done = Vec::new();
    for _ in 0..n {
        done.extend(t.backend(&ROW, at));
    }
    done.extend(t.backend(&end, at));
    done.extend(t.backend(&IN_TRANSACTION, at));
    done
}

/// pgjdbc with `setFetchSize(100)` over 250 rows: Execute with a row limit, answered by
/// PortalSuspended, twice, then the last piece completes. One entry, three executions.
#[test]
fn a_portal_read_in_pieces_is_one_statement() {
    let mut t = Tracker::new();
    t.frontend(&parse("", "select * from big"), MS);
    t.frontend(&bind_portal("C_1", ""), MS);
    t.frontend(&execute("C_1"), MS);
    t.frontend(&Frontend::Sync, MS);
    t.backend(&Backend::Other(b'1'), MS);
    assert!(piece(&mut t, 100, Backend::PortalSuspended, 2 * MS).is_empty());
    for at in [3, 4] {
        t.frontend(&execute("C_1"), at * MS);
        t.frontend(&Frontend::Sync, at * MS);
    }
    assert!(piece(&mut t, 100, Backend::PortalSuspended, 5 * MS).is_empty());
    let done = piece(&mut t, 50, complete("SELECT 50"), 6 * MS);
    assert_eq!(done.len(), 1);
    let s = &done[0];
    assert_eq!((s.executions, s.rows, s.suspended), (3, 250, false));
    assert_eq!(s.tags, vec!["SELECT 50"]);
    assert_eq!((s.at, s.duration), (MS, 5 * MS));
    assert_eq!(&*s.text, "select * from big");
}

/// A portal left suspended is logged, as suspended with its rows, when it goes away: closed,
/// replaced by a new Bind of its name, at the end of the transaction or of the session.
#[test]
fn a_suspended_portal_is_logged_when_it_goes_away() {
    let start = |t: &mut Tracker, portal: &str| {
        t.frontend(&bind_portal(portal, ""), MS);
        t.frontend(&execute(portal), MS);
        t.frontend(&Frontend::Sync, MS);
        assert!(piece(t, 10, Backend::PortalSuspended, 2 * MS).is_empty());
    };
    let mut t = Tracker::new();
    t.frontend(&parse("", "select * from big"), MS);
    t.backend(&Backend::Other(b'1'), MS);
    start(&mut t, "a");
    t.frontend(
        &Frontend::Close {
            statement: false,
            name: "a".into(),
        },
        3 * MS,
    );
    t.frontend(&Frontend::Sync, 3 * MS);
    let done = t.backend(&Backend::Other(b'3'), 4 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].executions, done[0].rows), (1, 10));
    assert!(done[0].suspended && done[0].tags.is_empty() && done[0].error.is_none());
    assert_eq!(done[0].duration, 2 * MS);
    t.backend(&IN_TRANSACTION, 4 * MS);

    start(&mut t, "");
    t.frontend(&bind_portal("", ""), 5 * MS);
    assert!(t.backend(&Backend::Other(b'2'), 5 * MS)[0].suspended);

    start(&mut t, "b");
    start(&mut t, "c");
    t.frontend(&Frontend::Query("commit".into()), 6 * MS);
    t.backend(&complete("COMMIT"), 6 * MS);
    let done = t.backend(&READY, 6 * MS);
    assert_eq!(done.len(), 3, "{done:?}");
    assert_eq!(&*done[0].text, "commit");
    assert!(done[1].suspended && done[2].suspended);

    start(&mut t, "d");
    let done = t.abandon(7 * MS);
    assert_eq!(done.len(), 1);
    assert!(done[0].suspended && done[0].error.is_none());
}

/// Executes of one portal pipelined before the first answer are still one statement.
#[test]
fn pipelined_pieces_of_one_portal_are_one_statement() {
    let mut t = Tracker::new();
    t.frontend(&parse("", "select * from big"), MS);
    t.frontend(&bind_portal("p", ""), MS);
    for _ in 0..3 {
        t.frontend(&execute("p"), MS);
    }
    t.frontend(&Frontend::Sync, MS);
    let mut done = vec![];
    done.extend(t.backend(&Backend::Other(b'1'), 2 * MS));
    for end in [Backend::PortalSuspended, Backend::PortalSuspended] {
        done.extend(t.backend(&ROW, 2 * MS));
        done.extend(t.backend(&end, 2 * MS));
    }
    done.extend(t.backend(&complete("SELECT 0"), 3 * MS));
    done.extend(t.backend(&READY, 3 * MS));
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!((done[0].executions, done[0].rows), (3, 2));
    assert!(!done[0].suspended);
}

/// A piece that fails ends the statement with its error.
#[test]
fn a_failing_piece_ends_the_statement_with_its_error() {
    let mut t = Tracker::new();
    t.frontend(&parse("", "select 1/(10-n) from big"), MS);
    t.frontend(&bind_portal("p", ""), MS);
    t.frontend(&execute("p"), MS);
    t.frontend(&Frontend::Sync, MS);
    t.backend(&Backend::Other(b'1'), MS);
    piece(&mut t, 5, Backend::PortalSuspended, 2 * MS);
    t.frontend(&execute("p"), 3 * MS);
    t.frontend(&Frontend::Sync, 3 * MS);
    let done = piece(&mut t, 4, err("22012"), 4 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].executions, done[0].rows), (2, 9));
    assert_eq!(done[0].error.as_ref().map(|e| e.0.as_str()), Some("22012"));
    assert!(!done[0].suspended);
}

/// The queue of statements waiting for their result allocates four entries on its first
/// push and keeps them while the session lives: entries stay pointer-sized (memory per
/// live session).
#[test]
fn waiting_statements_are_queued_small() {
    assert!(
        std::mem::size_of::<Pending>() <= 16,
        "Pending is {} bytes",
        std::mem::size_of::<Pending>()
    );
}

/// What may be reset and handed to another session: only a server that answered every
/// segment, idle, with no extended-protocol message waiting for its Sync.
#[test]
fn a_server_is_at_rest_only_when_idle_and_synced() {
    let at_rest = |steps: &[&dyn Fn(&mut Tracker)]| {
        let mut t = Tracker::new();
        for step in steps {
            step(&mut t);
        }
        t.at_rest()
    };
    let query =
        |sql: &'static str| move |t: &mut Tracker| t.frontend(&Frontend::Query(sql.into()), MS);
    let ready = |status: u8| {
        move |t: &mut Tracker| {
            t.backend(&Backend::ReadyForQuery { status }, MS);
        }
    };
    let send = |m: Frontend<'static>| move |t: &mut Tracker| t.frontend(&m, MS);
    // a fresh session, and one whose queries were all answered
    assert!(at_rest(&[]));
    assert!(at_rest(&[&query("select 1"), &ready(b'I')]));
    // a query not answered yet
    assert!(!at_rest(&[&query("select pg_sleep(60)")]));
    // a transaction left open, or failed
    assert!(!at_rest(&[&query("begin"), &ready(b'T')]));
    assert!(!at_rest(&[
        &query("begin"),
        &ready(b'T'),
        &query("x"),
        &ready(b'E')
    ]));
    assert!(at_rest(&[
        &query("begin"),
        &ready(b'T'),
        &query("commit"),
        &ready(b'I')
    ]));
    // extended protocol: complete with its Sync, not without (Flush only)
    let extended = [
        &send(parse("", "select 1")) as &dyn Fn(&mut Tracker),
        &send(bind_portal("", "")),
        &send(EXECUTE_UNNAMED),
    ];
    let mut steps = extended.to_vec();
    let flush = send(Frontend::Flush);
    let done = |t: &mut Tracker| {
        t.backend(&Backend::Other(b'1'), MS);
        t.backend(&Backend::Other(b'2'), MS);
        t.backend(&complete("SELECT 1"), MS);
    };
    steps.extend([&flush as &dyn Fn(&mut Tracker), &done]);
    assert!(!at_rest(&steps), "executed without a Sync");
    let sync = send(Frontend::Sync);
    let idle = ready(b'I');
    steps.extend([&sync as &dyn Fn(&mut Tracker), &idle]);
    assert!(at_rest(&steps));
    // a Close or Describe alone also waits for its Sync
    let close = send(Frontend::Close {
        statement: true,
        name: "s1".into(),
    });
    assert!(!at_rest(&[&query("select 1"), &ready(b'I'), &close]));
    // COPY FROM STDIN: its data belongs to the query, at rest once the query is done
    let copy_data = send(Frontend::Other(b'd'));
    let copy_done = send(Frontend::Other(b'c'));
    let copy = [
        &query("copy t from stdin") as &dyn Fn(&mut Tracker),
        &copy_data,
        &copy_done,
    ];
    assert!(!at_rest(&copy));
    let mut copied = copy.to_vec();
    copied.push(&idle);
    assert!(at_rest(&copied));
    // the client's Terminate changes nothing
    let terminate = send(Frontend::Terminate);
    assert!(at_rest(&[&query("select 1"), &ready(b'I'), &terminate]));
    // a message the tracker does not know: not at rest
    assert!(!at_rest(&[&send(Frontend::Other(b'?'))]));
}
