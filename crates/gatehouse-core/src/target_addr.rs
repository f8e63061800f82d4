//! `USER@HOST[:PORT]` as given to `gatehouse target add --ssh`, and
//! `USER@HOST[:PORT]/DATABASE` as given to `--postgres`.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAddress {
    pub user: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SshAddressError {
    #[error("'{0}' is not USER@HOST[:PORT]")]
    Shape(String),
    #[error("'{0}' is not a valid port (1-65535)")]
    Port(String),
    #[error("'{0}' is not USER@HOST[:PORT]/DATABASE")]
    PgShape(String),
}

/// A PostgreSQL target's address: role, server and default database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgAddress {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl PgAddress {
    pub fn parse(raw: &str) -> Result<PgAddress, SshAddressError> {
        let shape = || SshAddressError::PgShape(raw.to_owned());
        let (server, database) = raw.rsplit_once('/').ok_or_else(shape)?;
        if database.is_empty() || database.contains(char::is_whitespace) {
            return Err(shape());
        }
        let a = SshAddress::parse(server, 5432).map_err(|e| match e {
            SshAddressError::Shape(_) => shape(),
            other => other,
        })?;
        Ok(PgAddress {
            user: a.user,
            host: a.host,
            port: a.port,
            database: database.to_owned(),
        })
    }
}

impl SshAddress {
    pub fn parse(raw: &str, default_port: u16) -> Result<SshAddress, SshAddressError> {
        let shape = || SshAddressError::Shape(raw.to_owned());
        let (user, hostport) = raw.rsplit_once('@').ok_or_else(shape)?;
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(shape());
        }
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            // [v6addr]:port
            let (host, after) = rest.split_once(']').ok_or_else(shape)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(shape)?)),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err(shape()),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(shape());
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(SshAddressError::Port(p.to_owned())),
            },
        };
        Ok(SshAddress {
            user: user.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_addresses() {
        use super::PgAddress;
        let a = PgAddress::parse("app@db.internal/orders").unwrap();
        assert_eq!(
            (a.user.as_str(), a.host.as_str(), a.port),
            ("app", "db.internal", 5432)
        );
        assert_eq!(a.database, "orders");
        assert_eq!(PgAddress::parse("app@[::1]:6000/x").unwrap().port, 6000);
        for bad in ["app@db", "db/orders", "app@db/", "app@db:0/x"] {
            assert!(PgAddress::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn a(user: &str, host: &str, port: u16) -> Result<SshAddress, SshAddressError> {
        Ok(SshAddress {
            user: user.into(),
            host: host.into(),
            port,
        })
    }

    #[test]
    fn forms() {
        assert_eq!(
            SshAddress::parse("root@10.0.0.1:2200", 22),
            a("root", "10.0.0.1", 2200)
        );
        assert_eq!(
            SshAddress::parse("deploy@web1.internal", 22),
            a("deploy", "web1.internal", 22)
        );
        assert_eq!(SshAddress::parse("u@[::1]:2022", 22), a("u", "::1", 2022));
        assert_eq!(SshAddress::parse("u@[::1]", 22), a("u", "::1", 22));
    }

    #[test]
    fn errors() {
        assert_eq!(
            SshAddress::parse("web1:22", 22),
            Err(SshAddressError::Shape("web1:22".into()))
        );
        assert_eq!(
            SshAddress::parse("u@h:0", 22),
            Err(SshAddressError::Port("0".into()))
        );
        assert_eq!(
            SshAddress::parse("u@h:http", 22),
            Err(SshAddressError::Port("http".into()))
        );
        assert!(SshAddress::parse("@h", 22).is_err());
        assert!(SshAddress::parse("u@", 22).is_err());
        assert!(SshAddress::parse("u@::1:22", 22).is_err());
    }
}
