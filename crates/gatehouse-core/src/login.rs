//! The SSH user name an operator types: `alice+web1` (or the alias `alice:web1`) means
//! "operator alice, target web1". Parsed from bytes-as-text that come straight off the
//! network, so it never panics and reports what was wrong.

use crate::names::{NameError, validate_name};
use thiserror::Error;

/// Operator and target selected by an SSH user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    pub operator: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginNameError {
    #[error("user name '{0}' does not name a target: use OPERATOR+TARGET, e.g. alice+web1")]
    MissingTarget(String),
    #[error("user name has more than one operator/target separator")]
    TooManySeparators,
    #[error(transparent)]
    InvalidName(#[from] NameError),
}

impl LoginName {
    /// Parses `operator+target` or `operator:target`.
    pub fn parse(raw: &str) -> Result<Self, LoginNameError> {
        let mut parts = raw.split(['+', ':']);
        let operator = parts.next().unwrap_or_default();
        let Some(target) = parts.next() else {
            return Err(LoginNameError::MissingTarget(
                raw.chars().take(crate::names::MAX_NAME_LEN).collect(),
            ));
        };
        if parts.next().is_some() {
            return Err(LoginNameError::TooManySeparators);
        }
        validate_name("operator", operator)?;
        validate_name("target", target)?;
        Ok(LoginName {
            operator: operator.to_owned(),
            target: target.to_owned(),
        })
    }
}

impl std::fmt::Display for LoginName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.operator, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(o: &str, t: &str) -> Result<LoginName, LoginNameError> {
        Ok(LoginName {
            operator: o.into(),
            target: t.into(),
        })
    }

    #[test]
    fn plus_and_colon_forms() {
        assert_eq!(LoginName::parse("alice+web1"), ok("alice", "web1"));
        assert_eq!(LoginName::parse("alice:web1"), ok("alice", "web1"));
        assert_eq!(
            LoginName::parse("a.b-c+db_1.prod"),
            ok("a.b-c", "db_1.prod")
        );
    }

    #[test]
    fn missing_target() {
        assert_eq!(
            LoginName::parse("alice"),
            Err(LoginNameError::MissingTarget("alice".into()))
        );
        assert!(matches!(
            LoginName::parse("alice+"),
            Err(LoginNameError::InvalidName(NameError::Empty {
                kind: "target"
            }))
        ));
        assert!(matches!(
            LoginName::parse("+web1"),
            Err(LoginNameError::InvalidName(NameError::Empty {
                kind: "operator"
            }))
        ));
    }

    #[test]
    fn too_many_separators() {
        assert_eq!(
            LoginName::parse("a+b+c"),
            Err(LoginNameError::TooManySeparators)
        );
        assert_eq!(
            LoginName::parse("a:b+c"),
            Err(LoginNameError::TooManySeparators)
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        for raw in ["", "+", ":", "\0+\0", "ä+ö", "a+b\nc", &"x".repeat(10_000)] {
            let _ = LoginName::parse(raw);
        }
        assert!(LoginName::parse("a+b\nc").is_err());
    }

    #[test]
    fn display_round_trips() {
        let n = LoginName::parse("alice:web1").unwrap();
        assert_eq!(n.to_string(), "alice+web1");
        assert_eq!(LoginName::parse(&n.to_string()), Ok(n));
    }
}
