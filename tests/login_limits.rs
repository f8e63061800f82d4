//! Failed-login limits end to end, through the real PostgreSQL front: wrong passwords
//! count against the operator's account, a locked account is refused even with the right
//! password, and another operator from the same address is not.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use gatehouse_e2e::pg::{OPERATOR_PASSWORD, PgWorld, psql_as};
use gatehouse_e2e::stdout;
use gatehouse_testbed::PgOptions;

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn wrong_passwords_lock_the_account_not_the_address() {
    let w = PgWorld::with(
        &PgOptions {
            password_auth: true,
            ..Default::default()
        },
        "disable",
        "login_account_failure_limit = 3\n",
    );
    let g = &w.gatehouse;
    let out = g.cli_with_stdin(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"));
    assert!(out.status.success(), "{}", stderr_of(&out));
    g.cli_ok(&["grant", "bob", "prod"]);
    let alice = w.conninfo("orders", "sslmode=disable");
    let bob = alice.replace("user=alice", "user=bob");

    for _ in 0..3 {
        let o = psql_as(&alice, "wrong", &["-c", "select 1"], None);
        assert!(
            stderr_of(&o).contains("password authentication failed for user \"alice\""),
            "{}",
            stderr_of(&o)
        );
    }
    // the right password no longer gets a try
    let o = psql_as(&alice, OPERATOR_PASSWORD, &["-c", "select 1"], None);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr_of(&o).contains("too many failed logins for user \"alice\""),
        "{}",
        stderr_of(&o)
    );
    // the address is not locked out: bob logs in from it
    let o = psql_as(&bob, "bob-pw", &["-c", "select 'bob-in'"], None);
    assert!(stdout(&o).contains("bob-in"), "{}", stderr_of(&o));

    let failures: Vec<_> = g
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures.iter().all(|e| e["operator"] == "alice"
        && e["detail"]["protocol"] == "postgres"
        && e["detail"]["source_locked_out"] == false));
    assert_eq!(failures[2]["detail"]["account_locked_out"], true);
    assert!(
        g.log()
            .contains("login refused: too many failures for this account"),
        "{}",
        g.log()
    );
}
