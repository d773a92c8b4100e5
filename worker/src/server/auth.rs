//! The API bearer token: where it comes from (a file, or an environment
//! variable named in the config) and how a request's token is checked.
//!
//! The token is held in a `SecretString` and never printed; requests are
//! compared in constant time over SHA-256 digests, so neither the content
//! nor the length of the token leaks through timing.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
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

    /// Whether `given` is the token, in time independent of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
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
