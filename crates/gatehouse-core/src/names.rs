//! Names of operators, environments and targets: one rule for all of them, so that a name
//! accepted by the admin CLI can always be typed into `ssh operator+target@broker`.

use thiserror::Error;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name '{name}' is longer than {MAX_NAME_LEN} characters")]
    TooLong { kind: &'static str, name: String },
    #[error(
        "{kind} name '{name}' may only contain letters, digits, '.', '_' and '-' and must start with a letter or digit"
    )]
    InvalidCharacter { kind: &'static str, name: String },
}

/// Checks a name: 1–64 ASCII letters, digits, `.`, `_`, `-`, starting with a letter or digit.
/// `+` and `:` are excluded because they separate operator and target in an SSH user name.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: name.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    let first_ok = name.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok {
        return Err(NameError::InvalidCharacter {
            kind,
            name: name.escape_debug().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["alice", "web1", "prod-eu.db_2", "A", "9lives"] {
            assert_eq!(validate_name("target", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_separators_spaces_and_leading_punctuation() {
        for n in ["a+b", "a:b", "a b", "-x", ".x", "é", "a/b", "a@b"] {
            assert!(
                matches!(
                    validate_name("target", n),
                    Err(NameError::InvalidCharacter { .. })
                ),
                "{n}"
            );
        }
    }

    #[test]
    fn rejects_empty_and_long() {
        assert_eq!(
            validate_name("user", ""),
            Err(NameError::Empty { kind: "user" })
        );
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            validate_name("user", &long),
            Err(NameError::TooLong { .. })
        ));
        assert_eq!(validate_name("user", &"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn error_messages_name_the_thing() {
        let e = validate_name("environment", "bad name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment name 'bad name' may only contain letters, digits, '.', '_' and '-' and must start with a letter or digit"
        );
    }
}
