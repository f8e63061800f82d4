use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/gh"), "gatehouse.toml")
}

#[test]
fn defaults_without_a_file() {
    let c = Config::load(None, Path::new("/srv")).unwrap();
    assert_eq!(c.store_url, "sqlite:///srv/gatehouse.db");
    assert_eq!(c.ssh_listen.to_string(), "127.0.0.1:2222");
    assert_eq!(c.host_key, Path::new("/srv/gatehouse_host_ed25519"));
    assert_eq!(c.recordings_root, Path::new("/srv/recordings"));
    assert_eq!(c.secret_key_file, Path::new("/srv/gatehouse_secret.key"));
    assert_eq!(c.max_starting_sessions, 16);
    assert_eq!(
        c.max_sessions, None,
        "by default, from the open-files limit"
    );
    assert_eq!(c.start_wait, std::time::Duration::from_secs(180));
    // one PostgreSQL connection thread per core unless told
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.postgres.unwrap().threads as usize, cores);
}

#[test]
fn postgres_target_pool() {
    let c = parse("").unwrap().postgres.unwrap();
    assert_eq!(c.target_pool.size, 0, "off by default");
    let c = parse("[postgres]\ntarget_pool = 8\ntarget_pool_idle = \"30s\"\n").unwrap();
    let pool = c.postgres.unwrap().target_pool;
    assert_eq!(pool.size, 8);
    assert_eq!(pool.idle, std::time::Duration::from_secs(30));
    let e = parse("[postgres]\ntarget_pool_idle = \"soon\"\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 20));
}

#[test]
fn postgres_connection_threads() {
    let c = parse("[postgres]\nthreads = 3\n").unwrap();
    assert_eq!(c.postgres.unwrap().threads, 3);
    let e = parse("[postgres]\nthreads = 0\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 11));
    assert!(
        e.reason.contains("threads must be at least 1"),
        "{}",
        e.reason
    );
}

#[test]
fn documented_keys_and_relative_paths() {
    let c = parse(
        r#"
[store]
url = "sqlite://data/g.db"
[ssh]
listen = "0.0.0.0:2022"
host_key = "keys/host"
[recordings]
root = "/var/lib/gatehouse/rec"
[node]
name = "bastion-1"
"#,
    )
    .unwrap();
    assert_eq!(c.store_url, "sqlite:///etc/gh/data/g.db");
    assert_eq!(c.ssh_listen.to_string(), "0.0.0.0:2022");
    assert_eq!(c.host_key, Path::new("/etc/gh/keys/host"));
    assert_eq!(c.recordings_root, Path::new("/var/lib/gatehouse/rec"));
    assert_eq!(c.node, "bastion-1");
    assert_eq!(c.login_limits, LoginLimits::default());
    assert_eq!(c.login_limits.account.max_failures, 20);
    let c = parse(
        "[ssh]\nlogin_failure_limit = 3\nlogin_failure_window = \"30s\"\nlogin_lockout = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(c.login_limits.source.max_failures, 3);
    assert_eq!(
        c.login_limits.source.window,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        c.login_limits.source.lockout,
        std::time::Duration::from_secs(3600)
    );
    assert_eq!(c.login_limits.account, LoginLimits::DEFAULT_ACCOUNT);
    let c = parse("[ssh]\nlogin_account_failure_limit = 5\nlogin_account_failure_window = \"1h\"\nlogin_account_lockout = \"2h\"\n").unwrap();
    let a = c.login_limits.account;
    assert_eq!(a.max_failures, 5);
    assert_eq!(a.window, std::time::Duration::from_secs(3600));
    assert_eq!(a.lockout, std::time::Duration::from_secs(7200));
    assert_eq!(c.login_limits.source, LimiterConfig::default());
    let c = parse("[node]\nmax_starting_sessions = 4\nstart_wait = \"30s\"\nmax_sessions = 500\nmax_unauthenticated = 64\nmax_unauthenticated_per_source = 8\n")
        .unwrap();
    assert_eq!(c.max_unauthenticated_per_source, Some(8));
    assert!(
        parse("[node]\nmax_unauthenticated_per_source = 0\n")
            .unwrap_err()
            .to_string()
            .contains("max_unauthenticated_per_source")
    );
    assert_eq!(c.max_starting_sessions, 4);
    assert_eq!(c.max_sessions, Some(500));
    assert_eq!(c.max_unauthenticated, Some(64));
    assert_eq!(c.start_wait, std::time::Duration::from_secs(30));
    let pg = parse("[store]\nurl = \"postgres://gh@db.internal/gatehouse\"\n").unwrap();
    assert_eq!(pg.store_url, "postgres://gh@db.internal/gatehouse");
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse("[ssh]\nlisten = \"127.0.0.1:1\"\nport = 22\n").unwrap_err();
    assert_eq!((e.line, e.column), (3, 1));
    assert!(e.reason.contains("unknown field `port`"), "{}", e.reason);
    assert!(
        e.to_string()
            .starts_with("gatehouse.toml:3:1: unknown field `port`"),
        "{e}"
    );
    let e = parse("[sshd]\n").unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("unknown field `sshd`"), "{}", e.reason);
}

#[test]
fn bad_values_name_line_and_reason() {
    let e = parse("[ssh]\n\nlisten = \"localhost\"\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.reason.contains("socket address"), "{}", e.reason);
    let e = parse("[store]\nurl = \"mysql://x\"\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 7));
    assert!(e.reason.contains("not supported"), "{}", e.reason);
    let e = parse("[store]\nurl = \"sqlite://\"\n").unwrap_err();
    assert!(e.reason.contains("no file path"), "{}", e.reason);
    let e = parse("[node]\nname = \"a b\"\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = parse("[ssh]\nlisten = 5\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = parse("[ssh\n").unwrap_err();
    assert_eq!(e.line, 1);
    let e = parse("[ssh]\nlogin_lockout = \"5 parsecs\"\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 17));
    assert!(
        e.reason.starts_with("invalid duration '5 parsecs'"),
        "{}",
        e.reason
    );
    let e = parse("[ssh]\nlogin_failure_limit = 0\n").unwrap_err();
    assert_eq!(e.reason, "login_failure_limit must be at least 1");
    let e = parse("[ssh]\nlogin_account_failure_limit = 0\n").unwrap_err();
    assert_eq!(e.reason, "login_account_failure_limit must be at least 1");
    let e = parse("[node]\nmax_starting_sessions = 0\n").unwrap_err();
    assert_eq!(e.reason, "max_starting_sessions must be at least 1");
    let e = parse("[node]\nmax_sessions = 0\n").unwrap_err();
    assert_eq!(e.reason, "max_sessions must be at least 1");
    let e = parse("[node]\nmax_unauthenticated = 0\n").unwrap_err();
    assert_eq!(e.reason, "max_unauthenticated must be at least 1");
    let e = parse("[ssh]\nlogin_failure_window = \"0s\"\n").unwrap_err();
    assert_eq!(e.reason, "duration must be greater than zero");
}

#[test]
fn detective_section() {
    let d = parse("").unwrap().detective;
    assert_eq!(
        d,
        DetectiveConfig {
            enabled: true,
            interval: DEFAULT_DETECTIVE_INTERVAL,
            action: DetectiveAction::Alert,
            node_timeout: DEFAULT_NODE_TIMEOUT,
        }
    );
    let d = parse("[detective]\ninterval = \"1s\"\naction = \"end\"\nnode_timeout = \"30s\"\n")
        .unwrap()
        .detective;
    assert_eq!(d.interval, Duration::from_secs(1));
    assert_eq!(d.action, DetectiveAction::End);
    assert_eq!(d.node_timeout, Duration::from_secs(30));
    let c = parse("[fleet]\nnode_timeout = \"3s\"\n").unwrap();
    assert_eq!(c.fleet.node_timeout, Duration::from_secs(3));
    assert_eq!(c.detective.node_timeout, Duration::from_secs(3));
    assert_eq!(parse("").unwrap().fleet.node_timeout, DEFAULT_NODE_TIMEOUT);
    let e =
        parse("[fleet]\nnode_timeout = \"3s\"\n[detective]\nnode_timeout = \"4s\"\n").unwrap_err();
    assert!(e.reason.contains("differs from fleet.node_timeout"), "{e}");
    let e = parse("[detective]\naction = \"kill\"\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 10));
    assert_eq!(
        e.reason,
        "detective.action must be \"alert\" or \"end\", not 'kill'"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let e = Config::load(Some(Path::new("/nonexistent/g.toml")), Path::new("/")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read config /nonexistent/g.toml"),
        "{e}"
    );
}
