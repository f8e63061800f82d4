//! Who may reach which target. The decision is made on facts the store looked up; the
//! message an operator sees for "no such target" and "no grant" is identical, so probing
//! target names reveals nothing.

use crate::session::Protocol;

/// Everything the access rule needs, gathered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFacts<'a> {
    pub operator_locked: bool,
    /// The target's environment and protocol, or `None` when no such target exists.
    pub target: Option<(&'a str, Protocol)>,
    /// Environments the operator holds a grant for.
    pub granted_environments: &'a [String],
    /// Protocol the operator is connecting with.
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDecision {
    Allow,
    Deny(DenyReason),
}

/// Why access was denied; the audit log keeps the precise reason, the operator sees
/// [`DenyReason::operator_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    UnknownTarget,
    NoGrant,
    WrongProtocol,
    OperatorLocked,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnknownTarget => "unknown target",
            DenyReason::NoGrant => "no grant",
            DenyReason::WrongProtocol => "wrong protocol",
            DenyReason::OperatorLocked => "operator locked",
        }
    }

    /// Text shown to the operator. Unknown target, missing grant and a target of another
    /// protocol read the same on purpose.
    pub fn operator_message(self, target: &str) -> String {
        match self {
            DenyReason::OperatorLocked => {
                "access denied: your account is locked; ask a Gatehouse admin".to_owned()
            }
            _ => format!(
                "access denied: target '{target}' does not exist or you have no grant for it"
            ),
        }
    }
}

pub fn decide_access(facts: &AccessFacts<'_>) -> AccessDecision {
    if facts.operator_locked {
        return AccessDecision::Deny(DenyReason::OperatorLocked);
    }
    let Some((environment, protocol)) = facts.target else {
        return AccessDecision::Deny(DenyReason::UnknownTarget);
    };
    if !facts.granted_environments.iter().any(|g| g == environment) {
        return AccessDecision::Deny(DenyReason::NoGrant);
    }
    if protocol != facts.protocol {
        return AccessDecision::Deny(DenyReason::WrongProtocol);
    }
    AccessDecision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(target: Option<(&'a str, Protocol)>, grants: &'a [String]) -> AccessFacts<'a> {
        AccessFacts {
            operator_locked: false,
            target,
            granted_environments: grants,
            protocol: Protocol::Ssh,
        }
    }

    #[test]
    fn grant_on_the_targets_environment_allows() {
        let g = vec!["dev".to_owned(), "prod".to_owned()];
        assert_eq!(
            decide_access(&facts(Some(("prod", Protocol::Ssh)), &g)),
            AccessDecision::Allow
        );
    }

    #[test]
    fn denials_and_their_reasons() {
        let g = vec!["dev".to_owned()];
        assert_eq!(
            decide_access(&facts(None, &g)),
            AccessDecision::Deny(DenyReason::UnknownTarget)
        );
        assert_eq!(
            decide_access(&facts(Some(("prod", Protocol::Ssh)), &g)),
            AccessDecision::Deny(DenyReason::NoGrant)
        );
        assert_eq!(
            decide_access(&facts(Some(("dev", Protocol::Postgres)), &g)),
            AccessDecision::Deny(DenyReason::WrongProtocol)
        );
        let mut locked = facts(Some(("dev", Protocol::Ssh)), &g);
        locked.operator_locked = true;
        assert_eq!(
            decide_access(&locked),
            AccessDecision::Deny(DenyReason::OperatorLocked)
        );
    }

    #[test]
    fn unknown_target_and_missing_grant_look_the_same_to_the_operator() {
        assert_eq!(
            DenyReason::UnknownTarget.operator_message("db9"),
            DenyReason::NoGrant.operator_message("db9")
        );
        assert_eq!(
            DenyReason::WrongProtocol.operator_message("db9"),
            DenyReason::NoGrant.operator_message("db9")
        );
    }
}
