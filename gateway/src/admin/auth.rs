//! The admin API's bearer token: where it comes from (`admin.token_file`,
//! else `KYLIN_GATEWAY_ADMIN_TOKEN`, both read by the binary), when it is
//! required (an admin listener beyond loopback), and the check. Only the
//! token's SHA-256 digest is kept, and a presented token is compared digest
//! to digest in constant time: neither its bytes nor its length leak
//! through timing, and the token is never printed or logged.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, ConfigError};

/// The environment variable that carries the token when no file is named.
pub const TOKEN_ENV: &str = "KYLIN_GATEWAY_ADMIN_TOKEN";

/// Who may use the non-public admin endpoints.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

/// Redacted: the digest would let a token be checked offline.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(bearer) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The credentials of a `Bearer` value (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

/// The configured token: `admin.token_file`'s text (read by the caller)
/// or else the environment's, trimmed. `None` on a loopback admin listener
/// without one; an error naming the key when one is empty, or when the
/// listener is reachable from elsewhere and no token is set.
pub fn resolve(
    config: &Config,
    file_text: Option<&str>,
    env: Option<&str>,
) -> Result<Option<AdminToken>, ConfigError> {
    let token = match (&config.admin.token_file, file_text, env) {
        (Some(path), Some(text), _) => Some(non_empty(
            "admin.token_file",
            &format!("{} is empty", path.display()),
            text,
        )?),
        (_, _, Some(text)) => Some(non_empty(TOKEN_ENV, "is set but empty", text)?),
        _ => None,
    };
    let admin = config.listen.admin;
    if token.is_none() && !admin.ip().to_canonical().is_loopback() {
        return Err(ConfigError::new(
            "admin.token_file",
            format!(
                "listen.admin {admin} is not a loopback address, so the admin API needs a \
                 token: set admin.token_file (or {TOKEN_ENV})"
            ),
        ));
    }
    Ok(token.map(AdminToken::new))
}

fn non_empty<'a>(key: &str, problem: &str, text: &'a str) -> Result<&'a str, ConfigError> {
    match text.trim() {
        "" => Err(ConfigError::new(key, problem)),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(admin: &str, token_file: bool) -> Config {
        let file = if token_file {
            "[admin]\ntoken_file = \"/run/token\"\n"
        } else {
            ""
        };
        crate::config::parse(&format!(
            "[listen]\nadmin = \"{admin}\"\n{file}[[discovery.nodes]]\naddress = \"127.0.0.1:1\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn only_the_bearer_token_itself_authorizes() {
        let token = AdminToken::new("s3cret");
        assert!(token.authorizes(Some(b"Bearer s3cret")));
        assert!(token.authorizes(Some(b"bearer  s3cret ")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(!token.authorizes(Some(wrong)), "{wrong:?}");
        }
        assert!(!token.authorizes(None));
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn a_token_is_required_beyond_loopback_and_never_empty() {
        assert!(
            resolve(&config("127.0.0.1:1", false), None, None)
                .unwrap()
                .is_none()
        );
        assert!(
            resolve(&config("[::1]:1", false), None, None)
                .unwrap()
                .is_none()
        );
        for admin in ["0.0.0.0:1", "10.1.2.3:1", "[::]:1"] {
            let error = resolve(&config(admin, false), None, None).unwrap_err();
            assert_eq!(error.key, "admin.token_file", "{admin}");
        }
        let remote = config("0.0.0.0:1", true);
        let token = resolve(&remote, Some(" t0ken\n"), None).unwrap().unwrap();
        assert!(token.authorizes(Some(b"Bearer t0ken")));
        let error = resolve(&remote, Some(" \n"), None).unwrap_err();
        assert_eq!(error.key, "admin.token_file");
        // The file wins over the environment.
        let token = resolve(&remote, Some("file"), Some("env"))
            .unwrap()
            .unwrap();
        assert!(token.authorizes(Some(b"Bearer file")));
        let env_only = config("0.0.0.0:1", false);
        let token = resolve(&env_only, None, Some("env")).unwrap().unwrap();
        assert!(token.authorizes(Some(b"Bearer env")));
        let error = resolve(&env_only, None, Some("")).unwrap_err();
        assert_eq!(error.key, TOKEN_ENV);
    }
}
