//! `[build.koji]` settings and the standard koji client configuration
//! they build on: a profile section of `/etc/koji.conf`,
//! `/etc/koji.conf.d/*.conf`, `~/.koji/config.d/*.conf`, `~/.koji/config`
//! (later files win, as in the `koji` CLI) or of one configured file.
//! Keys in `[build.koji]` override the profile.
//!
//! The password is read from an environment variable or a file and held in
//! a `SecretString`; it is never part of an error or a log line.

use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `[build.koji]` as written in `patchline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KojiSettings {
    /// Profile (section) of the koji client configuration.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Read only this koji configuration file instead of the standard ones.
    pub config_file: Option<PathBuf>,
    /// Hub XML-RPC URL (overrides the profile's `server`).
    pub server: Option<String>,
    /// Files URL (overrides the profile's `topurl`).
    pub topurl: Option<String>,
    /// `password` or `ssl` (overrides the profile's `authtype`).
    pub authtype: Option<String>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// PEM file with the TLS client certificate and its key (`ssl`).
    pub cert: Option<PathBuf>,
    /// PEM CA certificates the hub's certificate is checked against.
    pub serverca: Option<PathBuf>,
    /// Scratch builds (no build entry, nothing tagged).
    #[serde(default)]
    pub scratch: bool,
    /// Milliseconds between two polling rounds (one multicall each).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Tries of a call that failed in transport, before the hub is taken
    /// as unreachable.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First pause between tries; doubled each time, at most 30 s.
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// Bytes per `rawUpload` chunk.
    #[serde(default = "default_blocksize")]
    pub upload_blocksize: usize,
    /// Give up watching a task after this long (it keeps running on the hub).
    #[serde(default = "default_task_timeout")]
    pub task_timeout_secs: u64,
}

fn default_profile() -> String {
    "koji".into()
}
fn default_poll_ms() -> u64 {
    5000
}
fn default_timeout() -> u64 {
    120
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> u64 {
    500
}
fn default_blocksize() -> usize {
    1024 * 1024
}
fn default_task_timeout() -> u64 {
    6 * 3600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Password,
    Ssl,
}

/// Everything the client needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub server: String,
    pub topurl: String,
    pub auth: AuthType,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub cert: Option<PathBuf>,
    pub serverca: Option<PathBuf>,
    pub scratch: bool,
    pub poll: std::time::Duration,
    pub timeout: std::time::Duration,
    pub retries: u32,
    pub backoff: std::time::Duration,
    pub blocksize: usize,
    pub task_timeout: std::time::Duration,
}

/// A problem with the settings, named by key (`key`, message).
pub type Problem = (String, String);

impl KojiSettings {
    /// Makes relative paths absolute against the config file's directory.
    pub fn resolve_paths(&mut self, abs: impl Fn(&mut PathBuf)) {
        for p in [
            &mut self.config_file,
            &mut self.password_file,
            &mut self.cert,
            &mut self.serverca,
        ]
        .into_iter()
        .flatten()
        {
            abs(p)
        }
    }

    /// Reads the profile, the secrets, and checks everything. `home` is
    /// `$HOME` (a parameter so tests do not read the machine's files).
    pub fn resolve(
        &self,
        env: &[(String, String)],
        home: Option<&Path>,
    ) -> Result<Resolved, Problem> {
        let key = |k: &str| format!("build.koji.{k}");
        let files: Vec<PathBuf> = match &self.config_file {
            Some(f) => {
                if !f.is_file() {
                    return Err((
                        key("config_file"),
                        format!("{} does not exist", f.display()),
                    ));
                }
                vec![f.clone()]
            }
            None => standard_files(home),
        };
        let mut profile: BTreeMap<String, String> = BTreeMap::new();
        let mut found = false;
        for file in &files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            if let Some(section) = parse_ini(&text).remove(&self.profile) {
                found = true;
                profile.extend(section);
            }
        }
        if !found && self.config_file.is_some() {
            return Err((
                key("profile"),
                format!(
                    "no section [{}] in {}",
                    self.profile,
                    files
                        .first()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let expand = |v: &str| -> PathBuf {
            match (v.strip_prefix("~/"), home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(v),
            }
        };
        let server = self
            .server
            .clone()
            .or_else(|| profile.get("server").cloned())
            .ok_or_else(|| {
                (
                    key("server"),
                    format!(
                        "no hub URL: set it, or a `server` in profile [{}] of {}",
                        self.profile,
                        describe(&files)
                    ),
                )
            })?;
        let topurl = self
            .topurl
            .clone()
            .or_else(|| profile.get("topurl").cloned())
            .ok_or_else(|| {
                (
                    key("topurl"),
                    format!(
                        "no files URL: set it, or a `topurl` in profile [{}]",
                        self.profile
                    ),
                )
            })?;
        for (k, url) in [("server", &server), ("topurl", &topurl)] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((key(k), format!("{url:?} is not an http(s) URL")));
            }
        }
        let cert = self
            .cert
            .clone()
            .or_else(|| profile.get("cert").map(|c| expand(c)));
        let serverca = self
            .serverca
            .clone()
            .or_else(|| profile.get("serverca").map(|c| expand(c)));
        let user = self.user.clone().or_else(|| profile.get("user").cloned());
        let authtype = self
            .authtype
            .clone()
            .or_else(|| profile.get("authtype").cloned());
        let auth = match authtype.as_deref() {
            Some("password") => AuthType::Password,
            Some("ssl") => AuthType::Ssl,
            Some("kerberos" | "gssapi") => {
                return Err((
                    key("authtype"),
                    "Kerberos/GSSAPI is not supported by patchline: use \"password\" or \"ssl\""
                        .into(),
                ));
            }
            Some("noauth") => {
                return Err((
                    key("authtype"),
                    "building needs a login: use \"password\" or \"ssl\"".into(),
                ));
            }
            Some(other) => {
                return Err((
                    key("authtype"),
                    format!("{other:?} is not one of \"password\", \"ssl\""),
                ));
            }
            None if user.is_some() => AuthType::Password,
            None if cert.as_ref().is_some_and(|c| c.is_file()) => AuthType::Ssl,
            None => {
                return Err((
                    key("authtype"),
                    "no way to log in: set user + password_env/password_file, or cert".into(),
                ));
            }
        };
        let password = match auth {
            AuthType::Password => {
                if user.as_deref().is_none_or(str::is_empty) {
                    return Err((key("user"), "required for authtype \"password\"".into()));
                }
                Some(self.password(env)?)
            }
            AuthType::Ssl => {
                let Some(c) = &cert else {
                    return Err((key("cert"), "required for authtype \"ssl\"".into()));
                };
                if let Err(e) = std::fs::metadata(c) {
                    return Err((key("cert"), format!("cannot read {}: {e}", c.display())));
                }
                None
            }
        };
        if let Some(ca) = &serverca
            && let Err(e) = std::fs::metadata(ca)
        {
            return Err((
                key("serverca"),
                format!("cannot read {}: {e}", ca.display()),
            ));
        }
        for (k, v) in [
            ("poll_ms", self.poll_ms),
            ("timeout_secs", self.timeout_secs),
            ("upload_blocksize", self.upload_blocksize as u64),
            ("task_timeout_secs", self.task_timeout_secs),
        ] {
            if v == 0 {
                return Err((key(k), "must be greater than 0".into()));
            }
        }
        Ok(Resolved {
            server: server.trim_end_matches('/').to_owned(),
            topurl: topurl.trim_end_matches('/').to_owned(),
            auth,
            user,
            password,
            cert,
            serverca,
            scratch: self.scratch,
            poll: std::time::Duration::from_millis(self.poll_ms),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            retries: self.retries.max(1),
            backoff: std::time::Duration::from_millis(self.retry_backoff_ms),
            blocksize: self.upload_blocksize,
            task_timeout: std::time::Duration::from_secs(self.task_timeout_secs),
        })
    }

    fn password(&self, env: &[(String, String)]) -> Result<SecretString, Problem> {
        let key = |k: &str| format!("build.koji.{k}");
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => Err((
                key("password_env"),
                "set either password_env or password_file, not both".into(),
            )),
            (Some(var), None) => env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| SecretString::from(v.clone()))
                .ok_or_else(|| {
                    (
                        key("password_env"),
                        format!("environment variable {var} is not set"),
                    )
                }),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    (
                        key("password_file"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                let line = text.lines().next().unwrap_or("");
                if line.is_empty() {
                    return Err((key("password_file"), format!("{} is empty", file.display())));
                }
                Ok(SecretString::from(line.to_owned()))
            }
            (None, None) => Err((
                key("password_env"),
                "the Koji password must come from password_env or password_file".into(),
            )),
        }
    }
}

fn describe(files: &[PathBuf]) -> String {
    if files.is_empty() {
        "the koji configuration (none found)".into()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The files the `koji` CLI reads, in order (later wins).
fn standard_files(home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/etc/koji.conf")];
    let dir_confs = |dir: PathBuf| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    out.extend(dir_confs(PathBuf::from("/etc/koji.conf.d")));
    if let Some(home) = home {
        out.extend(dir_confs(home.join(".koji/config.d")));
        out.push(home.join(".koji/config"));
    }
    out.into_iter().filter(|p| p.is_file()).collect()
}

/// INI as Python's configparser reads koji.conf: `[section]`, `key = value`
/// or `key: value`, `#`/`;` comment lines; keys are lower-cased.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            out.entry(name.trim().to_owned()).or_default();
            continue;
        }
        let Some(sec) = &section else { continue };
        let split = t.find(['=', ':']);
        if let Some(at) = split {
            let (k, v) = (t[..at].trim(), t[at + 1..].trim());
            out.entry(sec.clone())
                .or_default()
                .insert(k.to_ascii_lowercase(), v.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn settings(toml: &str) -> KojiSettings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn profile_from_the_users_config_then_overrides() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".koji")).unwrap();
        std::fs::write(
            home.path().join(".koji/config"),
            "[koji]\nserver = https://koji.example.org/kojihub\ntopurl = https://kojipkgs.example.org/\nauthtype = ssl\ncert = ~/.koji/client.pem\n\n[stg]\nserver: https://stg/kojihub\ntopurl=https://stg/files\n; comment\nauthtype = password\n",
        )
        .unwrap();
        std::fs::write(home.path().join(".koji/client.pem"), "pem").unwrap();
        let r = settings("").resolve(&[], Some(home.path())).unwrap();
        assert_eq!(r.server, "https://koji.example.org/kojihub");
        assert_eq!(r.topurl, "https://kojipkgs.example.org");
        assert_eq!(r.auth, AuthType::Ssl);
        assert_eq!(r.cert.unwrap(), home.path().join(".koji/client.pem"));
        let env = [("KOJI_PW".to_owned(), "s3cret".to_owned())];
        let r = settings("profile = \"stg\"\nuser = \"bot\"\npassword_env = \"KOJI_PW\"\nserver = \"http://127.0.0.1:1/kojihub\"\n")
            .resolve(&env, Some(home.path()))
            .unwrap();
        assert_eq!(r.server, "http://127.0.0.1:1/kojihub");
        assert_eq!(r.topurl, "https://stg/files");
        assert_eq!(r.auth, AuthType::Password);
        assert_eq!(r.password.as_ref().unwrap().expose_secret(), "s3cret");
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn problems_name_the_key() {
        let home = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("", "build.koji.server", "no hub URL"),
            (
                "server = \"http://h/kojihub\"\n",
                "build.koji.topurl",
                "no files URL",
            ),
            (
                "server = \"ftp://h\"\ntopurl = \"http://h\"\n",
                "build.koji.server",
                "not an http",
            ),
            (
                "server = \"http://h\"\ntopurl = \"http://h\"\nauthtype = \"kerberos\"\n",
                "build.koji.authtype",
                "GSSAPI is not supported",
            ),
            (
                "server = \"http://h\"\ntopurl = \"http://h\"\nuser = \"u\"\npassword_env = \"NOPE\"\n",
                "build.koji.password_env",
                "NOPE is not set",
            ),
            (
                "server = \"http://h\"\ntopurl = \"http://h\"\nauthtype = \"ssl\"\ncert = \"/nonexistent.pem\"\n",
                "build.koji.cert",
                "cannot read",
            ),
            (
                "config_file = \"/nonexistent/koji.conf\"\n",
                "build.koji.config_file",
                "does not exist",
            ),
        ];
        for (toml, key, needle) in cases {
            let (k, msg) = settings(toml).resolve(&[], Some(home.path())).unwrap_err();
            assert_eq!(&k, key, "{toml}: {msg}");
            assert!(msg.contains(needle), "{toml}: {msg}");
        }
    }
}
