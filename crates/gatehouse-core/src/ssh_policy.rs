//! SSH-specific policy: which forwarding is allowed and which environment variables an
//! operator may pass to the target.

/// The kinds of forwarding an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingKind {
    LocalPort,
    RemotePort,
    Agent,
    X11,
}

impl ForwardingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardingKind::LocalPort => "local port forwarding",
            ForwardingKind::RemotePort => "remote port forwarding",
            ForwardingKind::Agent => "agent forwarding",
            ForwardingKind::X11 => "X11 forwarding",
        }
    }
}

/// Forwarding allowed for a session. Everything is denied unless policy says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardingPolicy {
    pub local_port: bool,
    pub remote_port: bool,
    pub agent: bool,
    pub x11: bool,
}

impl ForwardingPolicy {
    pub fn allows(&self, kind: ForwardingKind) -> bool {
        match kind {
            ForwardingKind::LocalPort => self.local_port,
            ForwardingKind::RemotePort => self.remote_port,
            ForwardingKind::Agent => self.agent,
            ForwardingKind::X11 => self.x11,
        }
    }

    /// The line the operator sees when a forwarding request is refused.
    pub fn refusal_message(kind: ForwardingKind) -> String {
        format!("{} is not allowed by Gatehouse policy", kind.as_str())
    }
}

/// Environment variables relayed to the target (`SendEnv`): locale settings only. Anything
/// else (`LD_PRELOAD`, `PATH`, …) could change what runs on the target and is dropped.
pub fn env_var_allowed(name: &str) -> bool {
    name == "LANG" || name == "LANGUAGE" || name == "TZ" || name.starts_with("LC_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_denies_everything() {
        let p = ForwardingPolicy::default();
        for k in [
            ForwardingKind::LocalPort,
            ForwardingKind::RemotePort,
            ForwardingKind::Agent,
            ForwardingKind::X11,
        ] {
            assert!(!p.allows(k), "{k:?}");
        }
        assert_eq!(
            ForwardingPolicy::refusal_message(ForwardingKind::LocalPort),
            "local port forwarding is not allowed by Gatehouse policy"
        );
    }

    #[test]
    fn env_allow_list() {
        for ok in ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "LANGUAGE"] {
            assert!(env_var_allowed(ok), "{ok}");
        }
        for bad in ["LD_PRELOAD", "PATH", "HOME", "lang", "BASH_ENV", "LCX"] {
            assert!(!env_var_allowed(bad), "{bad}");
        }
    }
}
