//! Exact-time tests of the failed-login limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn cfg() -> LimiterConfig {
    LimiterConfig {
        max_failures: 3,
        window: Duration::from_secs(10),
        lockout: Duration::from_secs(60),
        max_sources: 4,
    }
}

fn limits(source_max: u32, account_max: u32) -> LoginLimits {
    LoginLimits {
        source: LimiterConfig {
            max_failures: source_max,
            ..cfg()
        },
        account: LimiterConfig {
            max_failures: account_max,
            window: Duration::from_secs(100),
            lockout: Duration::from_secs(600),
            max_sources: 4,
        },
    }
}

fn v4(last: u8) -> SourceBucket {
    SourceBucket::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
}

fn s(secs: u64, t0: Instant) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn locks_out_after_max_failures_within_window() {
    let t0 = Instant::now();
    let mut l = FailedLoginLimiter::new(cfg());
    assert!(!l.record_failure(&"a", 0, t0));
    assert!(!l.record_failure(&"a", 0, s(1, t0)));
    assert_eq!(l.check(&"a", s(2, t0)), Ok(()));
    assert!(l.record_failure(&"a", 0, s(2, t0)));
    assert_eq!(l.check(&"a", s(2, t0)), Err(Duration::from_secs(60)));
    // another key is unaffected
    assert_eq!(l.check(&"b", s(2, t0)), Ok(()));
    // exactly at the end of the lockout it is lifted
    assert_eq!(l.check(&"a", s(62, t0)), Ok(()));
    assert_eq!(l.check(&"a", s(61, t0)), Err(Duration::from_secs(1)));
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let t0 = Instant::now();
    let mut l = FailedLoginLimiter::new(cfg());
    l.record_failure(&"a", 0, t0);
    l.record_failure(&"a", 0, s(5, t0));
    assert!(!l.record_failure(&"a", 0, s(10, t0)));
    assert_eq!(l.check(&"a", s(10, t0)), Ok(()));
}

#[test]
fn memory_is_bounded() {
    let t0 = Instant::now();
    let mut l = FailedLoginLimiter::new(cfg());
    for i in 0..100 {
        l.record_failure(&i, 0, t0 + Duration::from_millis(i));
    }
    assert!(l.tracked() <= 4);
}

#[test]
fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
    let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
    let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(
        SourceBucket::of(IpAddr::V6(a)),
        SourceBucket::of(IpAddr::V6(b))
    );
    assert_ne!(
        SourceBucket::of(IpAddr::V6(a)),
        SourceBucket::of(IpAddr::V6(other))
    );
    let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(SourceBucket::of(IpAddr::V6(mapped)), v4(7));
    assert_ne!(v4(7), v4(8));
    assert_eq!(
        SourceBucket::of(IpAddr::V6(a)).to_string(),
        "2001:db8:1:2::/64"
    );
    assert_eq!(v4(7).to_string(), "192.0.2.7");

    // one host rotating through its /64 is one source
    let t0 = Instant::now();
    let mut l = LoginLimiter::new(limits(3, 100));
    for i in 0..3u16 {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i);
        l.record_failure(SourceBucket::of(IpAddr::V6(ip)), Some("alice"), t0);
    }
    assert!(matches!(
        l.check(SourceBucket::of(IpAddr::V6(a)), None, t0),
        Err(LoginRefusal::Source { .. })
    ));
}

#[test]
fn an_account_is_limited_across_sources() {
    let t0 = Instant::now();
    let mut l = LoginLimiter::new(limits(3, 4));
    // four guesses from four addresses: no source reaches its limit, the account does
    for i in 0..3 {
        let out = l.record_failure(v4(i), Some("alice"), s(u64::from(i), t0));
        assert_eq!(out, FailureOutcome::default());
    }
    let out = l.record_failure(v4(3), Some("alice"), s(3, t0));
    assert!(out.account_locked_out && !out.source_locked_out, "{out:?}");
    assert_eq!(
        l.check(v4(9), Some("alice"), s(3, t0)),
        Err(LoginRefusal::Account {
            retry_after: Duration::from_secs(600)
        })
    );
    // another account from the same fresh source may still try; alice's key logins too
    assert_eq!(l.check(v4(9), Some("bob"), s(3, t0)), Ok(()));
    assert_eq!(l.check(v4(9), None, s(3, t0)), Ok(()));
    // a success (alice's key) does not lift alice's lockout
    l.record_success(v4(9), "alice");
    assert!(l.check(v4(9), Some("alice"), s(4, t0)).is_err());
    assert_eq!(l.check(v4(9), Some("alice"), s(603, t0)), Ok(()));
}

#[test]
fn a_key_only_failure_counts_against_the_source_not_an_account() {
    let t0 = Instant::now();
    let mut l = LoginLimiter::new(limits(3, 1));
    let out = l.record_failure(v4(1), None, t0);
    assert_eq!(out, FailureOutcome::default());
    assert_eq!(l.check(v4(2), Some("alice"), t0), Ok(()));
    assert_eq!(l.source_failures(v4(1), t0), 1);
}

#[test]
fn success_clears_only_the_succeeding_accounts_failures() {
    let t0 = Instant::now();
    let mut l = LoginLimiter::new(limits(4, 100));
    // mallory guesses at alice twice, mistypes her own password, then logs in as herself
    // (a valid account)...
    l.record_failure(v4(1), Some("alice"), t0);
    l.record_failure(v4(1), Some("alice"), s(1, t0));
    l.record_failure(v4(1), Some("mallory"), s(1, t0));
    l.record_success(v4(1), "mallory");
    // ...which forgets her own mistake only, not her guesses at alice
    assert_eq!(l.source_failures(v4(1), s(2, t0)), 2);
    assert!(
        !l.record_failure(v4(1), Some("alice"), s(2, t0))
            .source_locked_out
    );
    let out = l.record_failure(v4(1), Some("alice"), s(2, t0));
    assert!(out.source_locked_out, "{out:?}");
    assert!(matches!(
        l.check(v4(1), None, s(2, t0)),
        Err(LoginRefusal::Source { .. })
    ));
}

#[test]
fn success_forgets_the_accounts_own_mistakes() {
    let t0 = Instant::now();
    let mut l = LoginLimiter::new(limits(3, 3));
    l.record_failure(v4(1), Some("alice"), t0);
    l.record_failure(v4(2), Some("alice"), t0);
    l.record_success(v4(1), "alice");
    assert_eq!(l.source_failures(v4(1), t0), 0);
    // the account count started over: two more failures do not lock it
    l.record_failure(v4(3), Some("alice"), t0);
    let out = l.record_failure(v4(4), Some("alice"), t0);
    assert_eq!(out, FailureOutcome::default());
    // a success never lifts a source lockout
    for _ in 0..3 {
        l.record_failure(v4(5), None, t0);
    }
    l.record_success(v4(5), "alice");
    assert!(l.check(v4(5), None, t0).is_err());
}
