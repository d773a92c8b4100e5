//! The API bearer token: where it comes from (a file, or an environment
//! variable named in the config) and how a request's token is checked;
//! the optional read-only token; and the status page's login sessions.
//!
//! The token is held in a `SecretString` and never printed; requests are
//! compared in constant time over SHA-256 digests, so neither the content
//! nor the length of the token leaks through timing. A session cookie is a
//! random id, not the token: the worker keeps only its SHA-256 digest, in
//! memory (a restart logs everyone out).

use actix_web::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token from {origin} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort { origin: String },
    #[error("environment variable {0} (server.token_env) is not set")]
    EnvMissing(String),
    #[error("environment variable {0} (server.readonly_token_env) is not set")]
    ReadonlyEnvMissing(String),
    #[error("the read-only token is the API token: give it a token of its own")]
    ReadonlySameAsToken,
    #[error("cannot draw a random session id: {0}")]
    Random(String),
    #[error(
        "no API token: give --token-file, or set server.token_file or server.token_env in the config (serve never runs without one)"
    )]
    Missing,
}

pub struct Token {
    digest: [u8; 32],
    // Kept so the secret has one owner that zeroes it on drop.
    _secret: SecretString,
}

impl Token {
    pub fn new(secret: SecretString, origin: &str) -> Result<Token, Error> {
        if secret.expose_secret().chars().count() < MIN_TOKEN_LEN {
            return Err(Error::TooShort {
                origin: origin.to_owned(),
            });
        }
        Ok(Token {
            digest: Sha256::digest(secret.expose_secret().as_bytes()).into(),
            _secret: secret,
        })
    }

    /// Reads the first line of `path` (surrounding whitespace dropped).
    pub fn from_file(path: &Path) -> Result<Token, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("").trim().to_owned();
        Token::new(SecretString::from(line), &path.display().to_string())
    }

    /// The token: the file given on the command line, else the config's
    /// `token_file`, else the variable named by `token_env`.
    pub fn load(
        cli_file: Option<&Path>,
        config: &crate::config::Server,
        env: &[(String, String)],
    ) -> Result<Token, Error> {
        if let Some(file) = cli_file.or(config.token_file.as_deref()) {
            return Token::from_file(file);
        }
        if let Some(var) = &config.token_env {
            let value = env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| Error::EnvMissing(var.clone()))?;
            return Token::new(SecretString::from(value), &format!("${var}"));
        }
        Err(Error::Missing)
    }

    /// The read-only token: the config's `readonly_token_file`, else the
    /// variable named by `readonly_token_env`, else none. It must not be
    /// `full` (the API token).
    pub fn load_readonly(
        config: &crate::config::Server,
        env: &[(String, String)],
        full: &Token,
    ) -> Result<Option<Token>, Error> {
        let token = if let Some(file) = &config.readonly_token_file {
            Token::from_file(file)?
        } else if let Some(var) = &config.readonly_token_env {
            let value = env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| Error::ReadonlyEnvMissing(var.clone()))?;
            Token::new(SecretString::from(value), &format!("${var}"))?
        } else {
            return Ok(None);
        };
        if bool::from(token.digest.ct_eq(&full.digest)) {
            return Err(Error::ReadonlySameAsToken);
        }
        Ok(Some(token))
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The API token: everything.
    Full,
    /// The read-only token, or a status page session: `/ui/` and `GET`.
    ReadOnly,
}

/// The worker's tokens: the API token and the optional read-only one.
pub struct Tokens {
    pub full: Token,
    pub readonly: Option<Token>,
}

impl Tokens {
    /// Which token `given` is, if either.
    pub fn access(&self, given: &str) -> Option<Access> {
        // Both are compared, so timing does not tell which one exists.
        let full = self.full.matches(given);
        let readonly = self.readonly.as_ref().is_some_and(|r| r.matches(given));
        match (full, readonly) {
            (true, _) => Some(Access::Full),
            (false, true) => Some(Access::ReadOnly),
            (false, false) => None,
        }
    }
}

/// What the token middleware does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A status page request without a token or session: to the login form.
    Login,
    Refuse(StatusCode, &'static str),
}

/// The decision for one request: `ui` for a status page path, `read` for a
/// `GET` or `HEAD`, `header` the `Authorization` value, `session` whether
/// the request carried a live session cookie.
pub fn verdict(
    tokens: &Tokens,
    ui: bool,
    read: bool,
    header: Option<&str>,
    session: bool,
) -> Verdict {
    if header.is_none() && ui {
        return if session {
            Verdict::Allow
        } else {
            Verdict::Login
        };
    }
    let token = match bearer(header) {
        Ok(token) => token,
        Err(why) => return Verdict::Refuse(StatusCode::UNAUTHORIZED, why),
    };
    match tokens.access(token) {
        Some(Access::Full) => Verdict::Allow,
        Some(Access::ReadOnly) if ui || read => Verdict::Allow,
        Some(Access::ReadOnly) => Verdict::Refuse(
            StatusCode::FORBIDDEN,
            "the read-only token may only read: starting runs and stages needs the API token",
        ),
        None => Verdict::Refuse(
            StatusCode::FORBIDDEN,
            "the bearer token is not this worker's token",
        ),
    }
}

/// How long a status page session lives.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

/// Live status page sessions, by the SHA-256 digest of their cookie value
/// (unix seconds at which each expires).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], i64>>,
}

impl Sessions {
    /// A new session at `now`: the cookie value (64 hex digits).
    pub fn open(&self, now: i64) -> Result<String, Error> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| Error::Random(e.to_string()))?;
        let cookie = hex::encode(id);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(Sha256::digest(cookie.as_bytes()).into(), now + SESSION_SECS);
        Ok(cookie)
    }

    /// Whether `cookie` is a session that has not expired at `now`.
    pub fn valid(&self, cookie: &str, now: i64) -> bool {
        let digest: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&digest).is_some_and(|expires| *expires > now)
    }

    /// Ends the session `cookie` (logout).
    pub fn close(&self, cookie: &str) {
        let digest: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&digest);
    }
}

/// The token of an `Authorization: Bearer <token>` header value, or why
/// there is none.
pub fn bearer(header: Option<&str>) -> Result<&str, &'static str> {
    let value = header.ok_or("missing Authorization header (expected `Bearer <token>`)")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("malformed Authorization header (expected `Bearer <token>`)")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("malformed Authorization header (expected `Bearer <token>`)");
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_and_matching() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef-secret\nignored\n").unwrap();
        let server = crate::config::Server::default();
        let t = Token::load(Some(&file), &server, &[]).unwrap();
        assert!(t.matches("0123456789abcdef-secret"));
        assert!(!t.matches("0123456789abcdef-secreT"));
        assert!(!t.matches(""));

        std::fs::write(&file, "short\n").unwrap();
        let e = Token::load(Some(&file), &server, &[]).err().unwrap();
        assert!(e.to_string().contains("shorter than 16"), "{e}");
        assert!(!e.to_string().contains("short\n"));

        let server = crate::config::Server {
            token_env: Some("API_TOKEN".into()),
            ..Default::default()
        };
        let env = [("API_TOKEN".to_owned(), "from-the-environment".to_owned())];
        assert!(
            Token::load(None, &server, &env)
                .unwrap()
                .matches("from-the-environment")
        );
        let e = Token::load(None, &server, &[]).err().unwrap();
        assert!(e.to_string().contains("API_TOKEN"), "{e}");
        let e = Token::load(None, &crate::config::Server::default(), &[])
            .err()
            .unwrap();
        assert!(matches!(e, Error::Missing));
    }

    #[test]
    fn readonly_token_and_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ro");
        std::fs::write(&file, "readonly-0123456789\n").unwrap();
        let full = Token::new(SecretString::from("full-token-0123456789"), "t").unwrap();
        let none = crate::config::Server::default();
        assert!(Token::load_readonly(&none, &[], &full).unwrap().is_none());
        let server = crate::config::Server {
            readonly_token_file: Some(file.clone()),
            ..Default::default()
        };
        let readonly = Token::load_readonly(&server, &[], &full).unwrap();
        assert!(readonly.as_ref().unwrap().matches("readonly-0123456789"));
        let by_env = crate::config::Server {
            readonly_token_env: Some("RO".into()),
            ..Default::default()
        };
        let e = Token::load_readonly(&by_env, &[], &full).err().unwrap();
        assert!(
            e.to_string().contains("RO (server.readonly_token_env)"),
            "{e}"
        );
        let same = [("RO".to_owned(), "full-token-0123456789".to_owned())];
        let e = Token::load_readonly(&by_env, &same, &full).err().unwrap();
        assert!(matches!(e, Error::ReadonlySameAsToken), "{e}");

        let tokens = Tokens { full, readonly };
        let full = Some("Bearer full-token-0123456789");
        let ro = Some("Bearer readonly-0123456789");
        let wrong = Some("Bearer readonly-0123456780");
        use Verdict::*;
        // (ui, read, header, session) -> verdict
        assert_eq!(verdict(&tokens, false, false, full, false), Allow);
        assert_eq!(verdict(&tokens, false, true, ro, false), Allow);
        assert_eq!(verdict(&tokens, true, true, ro, false), Allow);
        assert!(matches!(
            verdict(&tokens, false, false, ro, false),
            Refuse(StatusCode::FORBIDDEN, m) if m.contains("read-only")
        ));
        assert!(matches!(
            verdict(&tokens, false, true, wrong, false),
            Refuse(StatusCode::FORBIDDEN, _)
        ));
        assert!(
            matches!(
                verdict(&tokens, false, true, None, true),
                Refuse(StatusCode::UNAUTHORIZED, _)
            ),
            "a session cookie is not an API credential"
        );
        assert_eq!(verdict(&tokens, true, true, None, false), Login);
        assert_eq!(verdict(&tokens, true, false, None, true), Allow);
        assert!(matches!(
            verdict(&tokens, true, true, wrong, true),
            Refuse(StatusCode::FORBIDDEN, _)
        ));
    }

    #[test]
    fn sessions_are_random_expire_and_close() {
        let sessions = Sessions::default();
        let a = sessions.open(1000).unwrap();
        let b = sessions.open(1000).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.valid(&a, 1000 + SESSION_SECS - 1));
        assert!(!sessions.valid(&a, 1000 + SESSION_SECS));
        assert!(!sessions.valid("not-a-session", 1000));
        sessions.close(&a);
        assert!(!sessions.valid(&a, 1001));
        assert!(sessions.valid(&b, 1001));
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert!(bearer(None).unwrap_err().contains("missing"));
        for bad in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            assert!(
                bearer(Some(bad)).unwrap_err().contains("malformed"),
                "{bad}"
            );
        }
    }
}
