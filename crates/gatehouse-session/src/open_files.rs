//! The process's open-files limit (`RLIMIT_NOFILE`).
//!
//! Every live session holds up to [`FILES_PER_SESSION`] descriptors: the operator's socket
//! (and, for SSH, a duplicate of it by which Gatehouse can sever the connection), the
//! target's, and its recording (the cast or statement log and its chain sidecar). A shell
//! on a stock Debian machine starts programs with a soft limit of 1,024 (the hard limit is
//! far higher: 1,048,576 under systemd), which would stop a broker at ~250 live sessions
//! with `EMFILE` while its hard limit allows thousands. `serve` raises the soft limit to the
//! hard one at start, as Go's runtime and the JVM do for their servers; the hard limit is
//! the administrator's (systemd's `LimitNOFILE=`, `ulimit -Hn`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors one live session holds at most: SSH's (the operator's socket and its
/// duplicate, the target's socket, the recording and its chain sidecar; PostgreSQL's are
/// one fewer).
pub const FILES_PER_SESSION: u64 = 5;

/// Descriptors a node holds besides its sessions (listeners, store connections, runtimes'
/// event loops, logs), with room to spare.
pub const FILES_FOR_THE_NODE: u64 = 256;

/// Descriptors a connection holds before it is a session: SSH's socket and its duplicate.
pub const FILES_PER_LOGIN: u64 = 2;

/// Connections not yet logged in a node serves at once by default (OpenSSH's `MaxStartups`
/// drops all past 100; Gatehouse keeps a login storm's connections waiting instead), unless
/// the open-files limit calls for fewer.
pub const DEFAULT_MAX_UNAUTHENTICATED: u64 = 1_024;

/// The open-files limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now (the hard limit, when raising it worked).
    pub limit: u64,
}

impl OpenFiles {
    /// How many connections not yet logged in the limit leaves room for on each of `fronts`
    /// fronts: together at most a quarter of what the node does not need itself; each at
    /// most [`DEFAULT_MAX_UNAUTHENTICATED`], at least one.
    pub fn login_room(&self, fronts: u64) -> u64 {
        (self.limit.saturating_sub(FILES_FOR_THE_NODE) / 4 / FILES_PER_LOGIN / fronts.max(1))
            .clamp(1, DEFAULT_MAX_UNAUTHENTICATED)
    }

    /// How many live sessions the limit leaves room for beside `logins` connections not yet
    /// logged in.
    pub fn session_room(&self, logins: u64) -> u64 {
        self.limit
            .saturating_sub(FILES_FOR_THE_NODE)
            .saturating_sub(logins.saturating_mul(FILES_PER_LOGIN))
            / FILES_PER_SESSION
    }
}

/// Raises the soft open-files limit to the hard limit (never lowers it). An unlimited hard
/// limit (`RLIM_INFINITY`, which Linux does not accept as a soft `NOFILE` limit) is taken
/// as the kernel's `fs.nr_open`.
pub fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    let now = getrlimit(Resource::Nofile);
    let before = now.current.unwrap_or(u64::MAX);
    let ceiling = match now.maximum {
        Some(hard) => hard,
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(before),
    };
    if before >= ceiling {
        return Ok(OpenFiles {
            before,
            limit: before,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(ceiling),
            maximum: now.maximum,
        },
    )?;
    Ok(OpenFiles {
        before,
        limit: ceiling,
    })
}

/// What an operator is told when the node had no descriptor left for the session's target
/// connection (the target was not contacted).
pub const OUT_OF_FILES: &str = "Gatehouse has no open files left on this node: the target was \
     not contacted and nothing was run. Try again when a session has ended, or through another node.";

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has no descriptor left.
pub fn is_out_of_files(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_never_lowered() {
        let start = getrlimit(Resource::Nofile);
        let hard = start
            .maximum
            .expect("a finite hard limit in the test environment");
        // start lower than the hard limit, as a shell on a stock machine does
        let low = hard.min(512) - 1;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: Some(hard),
            },
        )
        .unwrap();
        let raised = raise_open_files_limit().unwrap();
        assert_eq!(
            raised,
            OpenFiles {
                before: low,
                limit: hard
            }
        );
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        // at the hard limit already: nothing changes
        assert_eq!(
            raise_open_files_limit().unwrap(),
            OpenFiles {
                before: hard,
                limit: hard
            }
        );
        assert_eq!(getrlimit(Resource::Nofile).maximum, Some(hard));
    }

    #[test]
    fn logins_get_a_quarter_at_most_and_sessions_the_rest() {
        let files = |limit| OpenFiles {
            before: 1024,
            limit,
        };
        // a stock soft limit, two fronts: 48 logins each (192 files), 115 sessions
        assert_eq!(files(1024).login_room(2), 48);
        assert_eq!(files(1024).session_room(2 * 48), (1024 - 256 - 192) / 5);
        assert_eq!(files(1024).login_room(1), 96);
        // this machine's: 1,024 logins a front, 3,129 sessions
        assert_eq!(files(20_000).login_room(2), 1_024);
        assert_eq!(files(20_000).session_room(2 * 1_024), 3_129);
        // 10,000 sessions need 54,352 files
        let f = files(54_352);
        assert_eq!(f.session_room(2 * f.login_room(2)), 10_000);
        // too small for anything but one login a front
        assert_eq!(files(100).login_room(2), 1);
        assert_eq!(files(100).session_room(2), 0);
    }

    #[test]
    fn emfile_and_enfile_are_out_of_files_other_errors_are_not() {
        let os = std::io::Error::from_raw_os_error;
        assert!(is_out_of_files(&os(24))); // EMFILE
        assert!(is_out_of_files(&os(23))); // ENFILE
        assert!(!is_out_of_files(&os(111))); // ECONNREFUSED
        assert!(!is_out_of_files(&std::io::Error::other("x")));
    }
}
