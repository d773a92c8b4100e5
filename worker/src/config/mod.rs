//! `patchline.toml`: loading, layering and validation.
//!
//! Layers, later wins: built-in defaults, the TOML file, then environment
//! variables `PATCHLINE_<SECTION>__<KEY>` (e.g. `PATCHLINE_STATE__DB`,
//! `PATCHLINE_INTAKE__IMAP__HOST`). Every error names the file, the key and
//! what is wrong. Relative paths are resolved against the config file's
//! directory so a config works from any working directory.
//!
//! Secrets (the IMAP password) are read from an environment variable or a
//! file named in the config, never from the config itself, and are held in a
//! `SecretString` that never prints.

use crate::mail::routing::{RouteRule, TagMatcher};
use crate::mail::source::imap::{ImapAuth, ImapSecurity};
use crate::mail::source::mbox::MboxFormat;
use crate::mail::subject::SubjectGrammar;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "config {file} does not exist: give one with --config FILE or $PATCHLINE_CONFIG (see docs/configuration.md; examples/demo/patchline.toml is a complete one)"
    )]
    NotFound { file: PathBuf },
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {file}: {}", one_line(&source.to_string()))]
    Parse {
        file: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config {file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// A subject pattern or tag rule that does not compile.
    #[error("config {file}: key `{key}`: {}", one_line(&source.to_string()))]
    Pattern {
        file: PathBuf,
        key: String,
        #[source]
        source: PatternError,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error(transparent)]
    Subject(#[from] crate::mail::subject::Error),
    #[error(transparent)]
    Tag(#[from] crate::mail::routing::Error),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was loaded from (or `<built-in>`).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(default)]
    pub intake: Intake,
    #[serde(default)]
    pub repos: Vec<Repo>,
    #[serde(default)]
    pub apply: Apply,
    #[serde(default)]
    pub build: Build,
    #[serde(default)]
    pub publish: Publish,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub report: Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BuildBackend {
    /// `rpmbuild --rebuild` on this machine (host architecture only).
    #[default]
    Local,
    /// A Koji hub over XML-RPC (`[build.koji]`).
    Koji,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    #[serde(default)]
    pub backend: BuildBackend,
    /// Targets of repositories that list none, and the definitions a
    /// repository's target names refer to.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Target builds run at once.
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    /// The Koji hub and how to log in (`backend = "koji"`).
    pub koji: Option<crate::rpm::koji::profile::KojiSettings>,
}

fn default_jobs() -> usize {
    2
}

impl Default for Build {
    fn default() -> Self {
        Self {
            backend: BuildBackend::default(),
            targets: Vec::new(),
            jobs: default_jobs(),
            koji: None,
        }
    }
}

/// One entry of a `targets` list: a bare name (`"el9"`: dist `.el9`, or
/// the `[[build.targets]]` of that name), or a table with `name`, `dist`
/// and `macros`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Name(String),
    Table(TargetTable),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTable {
    pub name: String,
    /// `%{dist}` (default `.<name>`).
    pub dist: Option<String>,
    /// Further macros, e.g. `rhel = "9"`, `el9 = "1"`, `fedora = 41`.
    #[serde(default)]
    pub macros: std::collections::BTreeMap<String, MacroValue>,
}

/// A macro's value as written: `"9"` or `9` (or `true`) all define `9`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MacroValue {
    Text(String),
    Number(i64),
    Flag(bool),
}

impl MacroValue {
    fn text(&self) -> String {
        match self {
            MacroValue::Text(t) => t.clone(),
            MacroValue::Number(n) => n.to_string(),
            MacroValue::Flag(b) => u8::from(*b).to_string(),
        }
    }
}

impl TargetSpec {
    pub fn name(&self) -> &str {
        match self {
            TargetSpec::Name(n) => n,
            TargetSpec::Table(t) => &t.name,
        }
    }

    /// What `rpmbuild` is told; a bare name takes the definition of that
    /// name in `defined` (`[[build.targets]]`) if there is one.
    fn resolve(&self, defined: &[TargetSpec]) -> crate::rpm::Target {
        let table = match self {
            TargetSpec::Table(t) => Some(t),
            TargetSpec::Name(n) => defined.iter().find_map(|d| match d {
                TargetSpec::Table(t) if &t.name == n => Some(t),
                _ => None,
            }),
        };
        match table {
            Some(t) => crate::rpm::Target {
                name: t.name.clone(),
                dist: t.dist.clone().unwrap_or_else(|| format!(".{}", t.name)),
                macros: t
                    .macros
                    .iter()
                    .map(|(k, v)| (k.clone(), v.text()))
                    .collect(),
            },
            None => crate::rpm::Target::named(self.name()),
        }
    }
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a target name or a table with `name`, `dist`, `macros`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec::Name(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TargetSpec, A::Error> {
                TargetTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TargetSpec::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The web-served directory (default `<state dir>/publish`).
    pub dir: Option<PathBuf>,
    /// URL under which `dir` is served (default `file://<dir>`).
    pub base_url: Option<String>,
    /// Builds of each package kept in a repository, per branch.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// One repository per branch (`<repo>/<branch>/<target>/`); `false`:
    /// one per repository and target for all branches.
    #[serde(default = "default_per_branch")]
    pub per_branch: bool,
    /// Architecture directories every repository has (each holds the
    /// noarch packages too); default: this machine's `$basearch`.
    #[serde(default)]
    pub arches: Vec<String>,
}

fn default_per_branch() -> bool {
    true
}

fn default_keep() -> usize {
    3
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            dir: None,
            base_url: None,
            keep: default_keep(),
            per_branch: default_per_branch(),
            arches: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    /// Committer of the commits the apply stage writes; when absent,
    /// `GIT_COMMITTER_NAME`/`GIT_COMMITTER_EMAIL`, then the repository's
    /// `user.name`/`user.email`, then `patchline <patchline@localhost>`.
    pub committer_name: Option<String>,
    pub committer_email: Option<String>,
    /// Fall back to a 3-way merge when a patch does not apply.
    #[serde(default)]
    pub three_way: bool,
    /// Context may differ in whitespace.
    #[serde(default)]
    pub ignore_whitespace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Mbox,
    Maildir,
    Imap,
    /// A public-inbox v2 archive directory (`git/0.git`, `git/1.git`, ...).
    #[serde(rename = "public-inbox")]
    PublicInbox,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intake {
    #[serde(default)]
    pub source: SourceKind,
    /// The mbox file or the Maildir directory (`mbox` and `maildir` sources),
    /// or the public-inbox v2 inbox directory (`public-inbox`).
    pub path: Option<PathBuf>,
    /// The public-inbox's URL (`http`, `https`, `git` or `file`): mirrored
    /// into `path` before each collect.
    pub url: Option<String>,
    #[serde(default)]
    pub mbox_format: MboxFormat,
    pub imap: Option<Imap>,
    #[serde(default = "default_archive_dir")]
    pub archive_dir: PathBuf,
    /// Regexes with named groups `branch`, `repo`, `version`, `index`,
    /// `total`, `title`, tried before the built-in grammar.
    #[serde(default)]
    pub subject_patterns: Vec<String>,
    #[serde(default = "default_max_mail_size")]
    pub max_mail_size: u64,
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// Seconds within which unthreaded mails of one author, version and
    /// total are taken as one series.
    #[serde(default = "default_thread_window")]
    pub thread_window_secs: i64,
    /// Hours after which an incomplete series is given up on.
    #[serde(default = "default_incomplete_deadline")]
    pub incomplete_deadline_hours: i64,
    /// Mails stored per transaction (and per archive flush).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Seconds `collect --watch` waits between two looks at an mbox or
    /// Maildir (IMAP uses IDLE, see `imap.idle_secs`).
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
}

fn default_poll() -> u64 {
    60
}

fn default_archive_dir() -> PathBuf {
    PathBuf::from("archive")
}
fn default_max_mail_size() -> u64 {
    64 * 1024 * 1024
}
fn default_max_parts() -> usize {
    256
}
fn default_thread_window() -> i64 {
    2 * 3600
}
fn default_incomplete_deadline() -> i64 {
    72
}
fn default_batch() -> usize {
    512
}

impl Default for Intake {
    fn default() -> Self {
        Self {
            source: SourceKind::default(),
            path: None,
            url: None,
            mbox_format: MboxFormat::default(),
            imap: None,
            archive_dir: default_archive_dir(),
            subject_patterns: Vec::new(),
            max_mail_size: default_max_mail_size(),
            max_parts: default_max_parts(),
            thread_window_secs: default_thread_window(),
            incomplete_deadline_hours: default_incomplete_deadline(),
            batch: default_batch(),
            poll_secs: default_poll(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imap {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default = "default_security")]
    pub security: ImapSecurity,
    pub user: String,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (first line, trailing newline ignored).
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_auth")]
    pub auth: ImapAuth,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Extra PEM CA certificates (for a server with a private CA).
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_imap_batch")]
    pub batch: u32,
    /// Seconds `collect --watch` waits in IDLE (or between polls).
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

fn default_security() -> ImapSecurity {
    ImapSecurity::Tls
}
fn default_auth() -> ImapAuth {
    ImapAuth::Login
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_timeout() -> u64 {
    60
}
fn default_imap_batch() -> u32 {
    200
}
fn default_idle() -> u64 {
    29 * 60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// Short name used in subjects (`[master PATCH <name>]`) and paths.
    pub name: String,
    /// Local git repository (bare or not). With `url`, where the clone is
    /// made (default `<state dir>/repos/<name>.git`).
    pub path: Option<PathBuf>,
    /// Clone URL: cloned (bare) to `path` the first time it is needed; the
    /// clone is then patchline's integration repository.
    pub url: Option<String>,
    /// A branch of `branches` that does not exist yet is created from this
    /// branch when a series targets it.
    pub base_branch: Option<String>,
    #[serde(default = "default_branches")]
    pub branches: Vec<String>,
    /// Branch used when neither the subject nor a route names one.
    pub default_branch: Option<String>,
    /// RPM spec: a path inside the repository, or a file next to the config.
    pub spec: Option<PathBuf>,
    /// Build targets (platforms) of this repository: names (of
    /// `[[build.targets]]`, or `.<name>` as dist) or tables.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Routing rules for lists that carry several projects.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Commands the `test` stage runs against each target's built RPMs.
    #[serde(default)]
    pub tests: Vec<TestCommand>,
    /// Where pull requests may be fetched from: URL prefixes
    /// (`"https://git.kernel.org/pub/scm/"`). Anyone can post to a list,
    /// so none by default: a request from elsewhere is refused, unfetched.
    #[serde(default)]
    pub pull_urls: Vec<String>,
    /// How a pull request lands: `merge` (fast-forward when possible, else
    /// a merge commit) or `ff-only`.
    #[serde(default)]
    pub pull: PullLanding,
    /// Which series get a reply in their thread: `applied`, `failed`,
    /// `incomplete` (once, when first held), `superseded` (once).
    #[serde(default = "default_replies")]
    pub replies: Vec<ReplyKind>,
    /// Trailers from review replies (`Reviewed-by:`, `Acked-by:` ...) are
    /// added to the commits, as `b4 am` adds them.
    #[serde(default = "default_true")]
    pub trailers: bool,
    /// Only person trailers naming the reply's sender count (b4's check);
    /// `false` takes whoever a reply names.
    #[serde(default = "default_true")]
    pub trailers_from_sender_only: bool,
    /// A `Link:` trailer for every patch: this URL with `{message_id}`
    /// replaced by the patch's Message-ID (no `<>`).
    pub link: Option<String>,
    /// The committer's own `Signed-off-by:` on every commit (`git am -s`).
    #[serde(default)]
    pub sign_off: bool,
}

/// A kind of reply to a series (`[[repos]] replies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyKind {
    Applied,
    Failed,
    Incomplete,
    Superseded,
}

fn default_replies() -> Vec<ReplyKind> {
    vec![
        ReplyKind::Applied,
        ReplyKind::Failed,
        ReplyKind::Incomplete,
        ReplyKind::Superseded,
    ]
}

/// `[[repos]] pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullLanding {
    #[default]
    Merge,
    FfOnly,
}

/// The placeholder of a repository's `link` template.
pub const LINK_PLACEHOLDER: &str = "{message_id}";

impl Repo {
    /// The `Link:` URL of the patch mail `message_id` (no `<>`), when
    /// `link` is configured. The Message-ID is percent-encoded where a URL
    /// cannot hold it as is (`/`, `%`, `?`, `#`, white space), as lore's
    /// `/r/` links encode it.
    pub fn link_for(&self, message_id: &str) -> Option<String> {
        let template = self.link.as_deref()?;
        let mut id = String::with_capacity(message_id.len());
        for c in message_id.chars() {
            match c {
                '/' | '%' | '?' | '#' | ' ' | '\t' | '"' | '<' | '>' => {
                    id.push_str(&format!("%{:02X}", c as u32))
                }
                c => id.push(c),
            }
        }
        Some(template.replace(LINK_PLACEHOLDER, &id))
    }
}

/// One post-build test of a repository: an argument vector (never a shell
/// line) in which `{rpms}`, `{srpm}`, `{nvr}`, `{repo}`, `{branch}`,
/// `{target}`, `{commit}`, `{run}` and `{repo_url}` are replaced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCommand {
    /// Names the test in reports and JUnit (`<repo>.<target>.<name>`).
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_test_timeout")]
    pub timeout_secs: u64,
}

fn default_test_timeout() -> u64 {
    600
}

fn default_branches() -> Vec<String> {
    vec!["master".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `List-Id` the mail must carry.
    pub list_id: Option<String>,
    /// Subject tag conditions: `word` must appear, `/regex` must match a
    /// tag, `!word` must not appear.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Branch to use; the repository's `default_branch` when absent.
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default = "default_db")]
    pub db: PathBuf,
}

fn default_db() -> PathBuf {
    PathBuf::from("patchline.db")
}

impl Default for State {
    fn default() -> Self {
        Self { db: default_db() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "default_bind")]
    pub bind: String,
    /// The address people reach the worker at (`https://host[/prefix]`),
    /// for absolute links to the status pages (`junit.xml`); checked and
    /// kept without a trailing `/`.
    pub public_url: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Name of the environment variable holding the API token (when no
    /// `token_file` is given).
    pub token_env: Option<String>,
    /// File whose first line is a read-only token: the status page
    /// (`/ui/`) and `GET` requests of the API, never a `POST`.
    pub readonly_token_file: Option<PathBuf>,
    /// Name of the environment variable holding the read-only token (when
    /// no `readonly_token_file` is given).
    pub readonly_token_env: Option<String>,
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}

impl Default for Server {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            public_url: None,
            token_file: None,
            token_env: None,
            readonly_token_file: None,
            readonly_token_env: None,
        }
    }
}

/// How reports leave the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReportTransport {
    /// Written to the run's report file only (the embedded default).
    #[default]
    None,
    Smtp,
    Sendmail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No TLS: only for a relay on loopback.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    #[serde(default)]
    pub transport: ReportTransport,
    /// Sender address (`Name <addr>` or `addr`); required to send.
    pub from: Option<String>,
    /// The list (every report goes here).
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Extra recipients of a report about a failure in that stage.
    #[serde(default)]
    pub recipients: StageRecipients,
    /// Apply failures also go to the author of the series.
    #[serde(default = "default_true")]
    pub notify_author: bool,
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Adds an HTML alternative to the plain-text report.
    #[serde(default)]
    pub html: bool,
    /// Sends a report for a run in which nothing arrived and nothing failed.
    #[serde(default)]
    pub send_idle: bool,
    /// Lines of a failing build log quoted in the report.
    #[serde(default = "default_log_tail")]
    pub log_tail_lines: usize,
    /// Send attempts per report within one stage run (at least 1).
    #[serde(default = "default_send_attempts")]
    pub attempts: u32,
    /// Delay before the second attempt; doubled each time.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    pub smtp: Option<Smtp>,
    #[serde(default = "default_sendmail")]
    pub sendmail: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecipients {
    #[serde(default)]
    pub collect: Vec<String>,
    #[serde(default)]
    pub apply: Vec<String>,
    #[serde(default)]
    pub build: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub test: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    /// Default: 587 (starttls), 465 (tls), 25 (none).
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted for the server.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
    /// Filled from `password_env`/`password_file` at load time.
    #[serde(skip)]
    pub password: Option<SecretString>,
}

fn default_true() -> bool {
    true
}
fn default_subject_prefix() -> String {
    "[patchline]".into()
}
fn default_log_tail() -> usize {
    40
}
fn default_send_attempts() -> u32 {
    3
}
fn default_retry_delay() -> u64 {
    2000
}
fn default_sendmail() -> PathBuf {
    PathBuf::from("/usr/sbin/sendmail")
}
fn default_smtp_timeout() -> u64 {
    30
}

impl Default for Report {
    fn default() -> Self {
        Self {
            transport: ReportTransport::None,
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            recipients: StageRecipients::default(),
            notify_author: true,
            subject_prefix: default_subject_prefix(),
            html: false,
            send_idle: false,
            log_tail_lines: default_log_tail(),
            attempts: default_send_attempts(),
            retry_delay_ms: default_retry_delay(),
            smtp: None,
            sendmail: default_sendmail(),
        }
    }
}

/// Environment variables consulted, as `(name, value)`; a parameter so tests
/// need not touch the process environment.
pub type Env = [(String, String)];

impl Config {
    /// The configuration used when no file exists (`parse`, `am`).
    pub fn builtin() -> Self {
        Config {
            file: PathBuf::from("<built-in>"),
            intake: Intake::default(),
            repos: Vec::new(),
            apply: Apply::default(),
            build: Build::default(),
            publish: Publish::default(),
            state: State::default(),
            server: Server::default(),
            report: Report::default(),
        }
    }

    /// Loads `file`, applies `PATCHLINE_*` variables from the process
    /// environment and validates.
    pub fn load(file: &Path) -> Result<Self, Error> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: &Path, env: &Env) -> Result<Self, Error> {
        let text = std::fs::read_to_string(file).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                file: file.to_owned(),
            },
            _ => Error::Read {
                file: file.to_owned(),
                source,
            },
        })?;
        Self::from_toml(&text, file, env)
    }

    /// Parses TOML text as if read from `file` (relative paths resolve
    /// against `file`'s directory).
    pub fn from_toml(text: &str, file: &Path, env: &Env) -> Result<Self, Error> {
        let mut value: toml::Table = toml::from_str(text).map_err(|source| Error::Parse {
            file: file.to_owned(),
            source,
        })?;
        apply_env(&mut value, env)?;
        let mut config: Config =
            Config::deserialize(toml::Value::Table(value)).map_err(|source| Error::Parse {
                file: file.to_owned(),
                source,
            })?;
        config.file = file.to_owned();
        let base = file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        // Absolute, so paths stay right for processes started elsewhere
        // (rpmbuild changes directory).
        let base = std::path::absolute(&base).unwrap_or(base);
        config.resolve_paths(&base);
        config.validate(env)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = normalize(&base.join(&*p));
            }
        };
        abs(&mut self.intake.archive_dir);
        if let Some(p) = self.intake.path.as_mut() {
            abs(p)
        }
        if let Some(imap) = self.intake.imap.as_mut() {
            if let Some(p) = imap.password_file.as_mut() {
                abs(p)
            }
            if let Some(p) = imap.ca_file.as_mut() {
                abs(p)
            }
        }
        abs(&mut self.state.db);
        if let Some(p) = self.publish.dir.as_mut() {
            abs(p)
        }
        if let Some(p) = self.server.token_file.as_mut() {
            abs(p)
        }
        if let Some(p) = self.server.readonly_token_file.as_mut() {
            abs(p)
        }
        for repo in &mut self.repos {
            if let Some(p) = repo.path.as_mut() {
                abs(p)
            }
        }
        // A bare program name is looked up on PATH; a path is a path.
        if self.report.sendmail.components().count() > 1 {
            abs(&mut self.report.sendmail)
        }
        if let Some(smtp) = self.report.smtp.as_mut() {
            if let Some(p) = smtp.password_file.as_mut() {
                abs(p)
            }
            if let Some(p) = smtp.ca_file.as_mut() {
                abs(p)
            }
        }
        if let Some(koji) = self.build.koji.as_mut() {
            koji.resolve_paths(abs);
        }
    }

    /// An error about `key` of this configuration.
    pub fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: one_line(&message.into()),
        }
    }

    fn pattern(&self, key: impl Into<String>, source: impl Into<PatternError>) -> Error {
        Error::Pattern {
            file: self.file.clone(),
            key: key.into(),
            source: source.into(),
        }
    }

    fn validate(&mut self, env: &Env) -> Result<(), Error> {
        self.subject_grammar()?;
        let intake = &self.intake;
        if intake.max_mail_size == 0 {
            return Err(self.invalid("intake.max_mail_size", "must be greater than 0"));
        }
        if intake.batch == 0 {
            return Err(self.invalid("intake.batch", "must be greater than 0"));
        }
        if self.publish.keep == 0 {
            return Err(self.invalid("publish.keep", "must be greater than 0"));
        }
        let server = &self.server;
        if server.readonly_token_file.is_some() && server.readonly_token_env.is_some() {
            return Err(self.invalid(
                "server.readonly_token_env",
                "give readonly_token_file or readonly_token_env, not both",
            ));
        }
        if server
            .readonly_token_file
            .as_ref()
            .is_some_and(|r| server.token_file.as_ref() == Some(r))
            || server
                .readonly_token_env
                .as_ref()
                .is_some_and(|r| server.token_env.as_ref() == Some(r))
        {
            return Err(self.invalid(
                "server.readonly_token_file",
                "the read-only token must come from another file or variable than the API token",
            ));
        }
        for arch in &self.publish.arches {
            // `src` and `repodata` are taken; noarch packages go into
            // every architecture directory, never one of their own.
            if !is_safe_name(arch) || matches!(arch.as_str(), "src" | "noarch" | "repodata") {
                return Err(self.invalid(
                    "publish.arches",
                    format!("{arch:?} is not an architecture directory name (e.g. \"x86_64\")"),
                ));
            }
        }
        if self.build.jobs == 0 {
            return Err(self.invalid("build.jobs", "must be greater than 0"));
        }
        self.validate_targets()?;
        let intake = &self.intake;
        if intake.poll_secs == 0 {
            return Err(self.invalid("intake.poll_secs", "must be greater than 0"));
        }
        if intake.thread_window_secs < 0 || intake.incomplete_deadline_hours < 0 {
            return Err(self.invalid(
                "intake.thread_window_secs / intake.incomplete_deadline_hours",
                "must not be negative",
            ));
        }
        match intake.source {
            SourceKind::Mbox | SourceKind::Maildir | SourceKind::PublicInbox => {
                let kind = match intake.source {
                    SourceKind::Mbox => "mbox",
                    SourceKind::Maildir => "maildir",
                    _ => "public-inbox",
                };
                let Some(path) = &intake.path else {
                    return Err(self.invalid(
                        "intake.path",
                        format!("required when intake.source = \"{kind}\""),
                    ));
                };
                if intake.source == SourceKind::Maildir && !path.is_dir() {
                    return Err(self.invalid(
                        "intake.path",
                        format!("{} is not a Maildir directory", path.display()),
                    ));
                }
                if intake.source == SourceKind::PublicInbox
                    && intake.url.is_none()
                    && !path.join("git").is_dir()
                {
                    return Err(self.invalid(
                        "intake.path",
                        format!(
                            "{} is not a public-inbox v2 inbox (it has no git/ directory of epochs)",
                            path.display()
                        ),
                    ));
                }
            }
            SourceKind::Imap => {
                if intake.imap.is_none() {
                    return Err(self.invalid(
                        "intake.imap",
                        "section [intake.imap] is required when intake.source = \"imap\"",
                    ));
                }
            }
        }
        if let Some(url) = &intake.url {
            if intake.source != SourceKind::PublicInbox {
                return Err(self.invalid(
                    "intake.url",
                    "only a public-inbox source has a URL (intake.source = \"public-inbox\")",
                ));
            }
            if let Err(reason) = check_archive_url(url) {
                return Err(self.invalid(
                    "intake.url",
                    format!("{:?} {reason}", crate::gitfetch::redacted(url)),
                ));
            }
        }
        if let Some(imap) = &self.intake.imap {
            let password = self.password(
                env,
                "intake.imap",
                imap.password_env.as_ref(),
                imap.password_file.as_ref(),
            )?;
            if imap.host.trim().is_empty() {
                return Err(self.invalid("intake.imap.host", "must not be empty"));
            }
            if let Some(ca) = &imap.ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                return Err(self.invalid(
                    "intake.imap.ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
            if let Some(imap) = self.intake.imap.as_mut() {
                imap.password = Some(password);
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, repo) in self.repos.iter().enumerate() {
            let key = |field: &str| format!("repos[{i}].{field}");
            if !is_safe_name(&repo.name) {
                return Err(self.invalid(
                    key("name"),
                    format!(
                        "{:?} is not a valid repository name (letters, digits, '.', '_', '-'; not starting with '.')",
                        repo.name
                    ),
                ));
            }
            if !names.insert(repo.name.clone()) {
                return Err(self.invalid(
                    key("name"),
                    format!("repository {:?} is defined twice", repo.name),
                ));
            }
            match (&repo.path, &repo.url) {
                (None, None) => {
                    return Err(self.invalid(
                        key("path"),
                        format!("repository {:?} needs `path` or `url`", repo.name),
                    ));
                }
                (Some(path), None) if !path.exists() => {
                    return Err(self.invalid(
                        key("path"),
                        format!(
                            "repository {:?}: {} does not exist",
                            repo.name,
                            path.display()
                        ),
                    ));
                }
                _ => {}
            }
            if repo.branches.is_empty() {
                return Err(self.invalid(key("branches"), "must list at least one branch"));
            }
            for prefix in &repo.pull_urls {
                let scheme_ok = ["https://", "http://", "git://", "file://"]
                    .iter()
                    .any(|s| prefix.starts_with(s) && prefix.len() > s.len());
                if !scheme_ok || prefix.chars().any(char::is_whitespace) {
                    return Err(self.invalid(
                        key("pull_urls"),
                        format!(
                            "{prefix:?} is not a URL prefix (https://, http://, git:// or file://, then at least a host or path)"
                        ),
                    ));
                }
            }
            for branch in &repo.branches {
                if !is_safe_ref(branch) {
                    return Err(self.invalid(
                        key("branches"),
                        format!("{branch:?} is not a valid branch name"),
                    ));
                }
            }
            if let Some(url) = &repo.url
                && (url.starts_with('-') || url.trim().is_empty())
            {
                return Err(self.invalid(key("url"), format!("{url:?} is not a clone URL")));
            }
            if let Some(b) = &repo.base_branch
                && !is_safe_ref(b)
            {
                return Err(self.invalid(
                    key("base_branch"),
                    format!("{b:?} is not a valid branch name"),
                ));
            }
            if let Some(link) = &repo.link {
                let rest = link.replace(LINK_PLACEHOLDER, "");
                let problem = if !link.contains(LINK_PLACEHOLDER) {
                    Some(format!(
                        "must contain {LINK_PLACEHOLDER} (where the patch's Message-ID goes)"
                    ))
                } else if rest.contains(['{', '}']) {
                    Some(format!("may hold no placeholder but {LINK_PLACEHOLDER}"))
                } else if link.contains(char::is_whitespace) {
                    Some("must not contain white space".to_owned())
                } else if !link.contains("://") {
                    Some(
                        "must be a URL (e.g. \"https://lore.kernel.org/r/{message_id}\")"
                            .to_owned(),
                    )
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(self.invalid(
                        key("link"),
                        format!("repository {:?}: link {link:?} {problem}", repo.name),
                    ));
                }
            }
            if let Some(b) = &repo.default_branch
                && !repo.branches.contains(b)
            {
                return Err(self.invalid(
                    key("default_branch"),
                    format!("{b:?} is not one of `branches` {:?}", repo.branches),
                ));
            }
        }
        self.route_rules()?;
        self.validate_tests()?;
        self.validate_report(env)?;
        if let Some(url) = &self.server.public_url {
            match check_public_url(url) {
                Ok(url) => self.server.public_url = Some(url),
                Err(reason) => {
                    return Err(self.invalid("server.public_url", format!("{url:?} {reason}")));
                }
            }
        }
        if self.build.backend == BuildBackend::Koji {
            self.koji_settings_with_env(env)?;
        }
        Ok(())
    }

    /// `[build.koji]` with its koji profile and secrets resolved (read from
    /// the process environment and `$HOME`).
    pub fn koji_settings(&self) -> Result<crate::rpm::koji::profile::Resolved, Error> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        self.koji_settings_with_env(&env)
    }

    fn koji_settings_with_env(
        &self,
        env: &Env,
    ) -> Result<crate::rpm::koji::profile::Resolved, Error> {
        let Some(koji) = &self.build.koji else {
            return Err(self.invalid(
                "build.koji",
                "section [build.koji] is required when build.backend = \"koji\"",
            ));
        };
        let home = env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v));
        koji.resolve(env, home.as_deref())
            .map_err(|(key, message)| self.invalid(key, message))
    }

    /// Target names fit paths and are unique per list; locally every dist
    /// fits a `Release:` and every macro name is one rpm takes. A Koji
    /// target is only a name (the hub's build tag has the dist).
    fn validate_targets(&self) -> Result<(), Error> {
        let local = self.build.backend == BuildBackend::Local;
        let lists = std::iter::once(("build.targets".to_owned(), &self.build.targets)).chain(
            self.repos
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("repos[{i}].targets"), &r.targets)),
        );
        for (key, list) in lists {
            let mut seen = std::collections::BTreeSet::new();
            for spec in list {
                let name = spec.name();
                if !is_safe_name(name) || name == "latest" {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{name:?} is not a valid target name (letters, digits, '.', '_', '-'; not \"latest\")"
                        ),
                    ));
                }
                if !seen.insert(name) {
                    return Err(self.invalid(&key, format!("target {name:?} is listed twice")));
                }
                if !local {
                    continue;
                }
                let target = spec.resolve(&self.build.targets);
                if !crate::rpm::is_valid_dist(&target.dist) {
                    let fix = match spec {
                        TargetSpec::Name(_) => format!(
                            "; give it a dist: [[build.targets]] name = {name:?}, dist = \".el9\""
                        ),
                        TargetSpec::Table(_) => String::new(),
                    };
                    return Err(self.invalid(
                        &key,
                        format!(
                            "target {name:?}: dist {:?} cannot end a Release: (a '.' and letters, digits, '_', '+', '~', '^'; no '-'){fix}",
                            target.dist
                        ),
                    ));
                }
                for (macro_name, value) in &target.macros {
                    if !crate::rpm::is_macro_name(macro_name)
                        || matches!(macro_name.as_str(), "dist" | "_topdir" | "_dbpath")
                    {
                        return Err(self.invalid(
                            &key,
                            format!(
                                "target {name:?}: {macro_name:?} is not a macro patchline can define (letters, digits, '_'; `dist` has its own key; `_topdir`/`_dbpath` are patchline's)"
                            ),
                        ));
                    }
                    if value.contains(['\n', '\0']) {
                        return Err(self.invalid(
                            &key,
                            format!("target {name:?}: macro {macro_name:?}: one line only"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The targets `repo` is built for: its own list, else
    /// `[build].targets`, each resolved to its macros.
    pub fn targets_of(&self, repo: &Repo) -> Vec<crate::rpm::Target> {
        let list = if repo.targets.is_empty() {
            &self.build.targets
        } else {
            &repo.targets
        };
        list.iter()
            .map(|t| t.resolve(&self.build.targets))
            .collect()
    }

    fn validate_tests(&self) -> Result<(), Error> {
        for (i, repo) in self.repos.iter().enumerate() {
            let mut names = std::collections::HashSet::new();
            for (j, test) in repo.tests.iter().enumerate() {
                let key = |k: &str| format!("repos[{i}].tests[{j}].{k}");
                if !is_safe_name(&test.name) {
                    return Err(self.invalid(
                        key("name"),
                        format!(
                            "{:?} is not a valid test name (letters, digits, '.', '_', '-')",
                            test.name
                        ),
                    ));
                }
                if !names.insert(&test.name) {
                    return Err(self.invalid(
                        key("name"),
                        format!("test {:?} is defined twice", test.name),
                    ));
                }
                if test.command.first().is_none_or(|c| c.trim().is_empty()) {
                    return Err(self.invalid(key("command"), "must name a program"));
                }
                if test.timeout_secs == 0 {
                    return Err(self.invalid(key("timeout_secs"), "must be greater than 0"));
                }
            }
        }
        Ok(())
    }

    fn validate_report(&mut self, env: &Env) -> Result<(), Error> {
        let report = &self.report;
        let addresses = report
            .from
            .iter()
            .map(|a| ("report.from", a))
            .chain(report.to.iter().map(|a| ("report.to", a)))
            .chain(report.cc.iter().map(|a| ("report.cc", a)))
            .chain(
                [
                    ("collect", &report.recipients.collect),
                    ("apply", &report.recipients.apply),
                    ("build", &report.recipients.build),
                    ("publish", &report.recipients.publish),
                    ("test", &report.recipients.test),
                ]
                .into_iter()
                .flat_map(|(_, list)| list.iter().map(|a| ("report.recipients", a))),
            );
        for (key, address) in addresses {
            if address.parse::<lettre::message::Mailbox>().is_err() {
                return Err(self.invalid(key, format!("{address:?} is not a mail address")));
            }
        }
        if report.attempts == 0 {
            return Err(self.invalid("report.attempts", "must be greater than 0"));
        }
        match report.transport {
            ReportTransport::None => {}
            ReportTransport::Smtp | ReportTransport::Sendmail => {
                if report.from.is_none() {
                    return Err(self.invalid("report.from", "required to send reports"));
                }
                if report.to.is_empty() {
                    return Err(self.invalid("report.to", "required to send reports"));
                }
            }
        }
        if report.transport == ReportTransport::Smtp {
            let Some(smtp) = &report.smtp else {
                return Err(
                    self.invalid("report.smtp", "required when report.transport = \"smtp\"")
                );
            };
            if smtp.host.trim().is_empty() || smtp.host.starts_with('-') {
                return Err(self.invalid("report.smtp.host", "must be a host name"));
            }
            if let Some(ca) = &smtp.ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                return Err(self.invalid(
                    "report.smtp.ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
            let password = match (&smtp.username, &smtp.password_env, &smtp.password_file) {
                (None, None, None) => None,
                (None, _, _) => {
                    return Err(self.invalid("report.smtp.username", "required with a password"));
                }
                (Some(_), var, file) => {
                    Some(self.password(env, "report.smtp", var.as_ref(), file.as_ref())?)
                }
            };
            if let Some(smtp) = self.report.smtp.as_mut() {
                smtp.password = password;
            }
        }
        Ok(())
    }

    /// A secret named by `<section>.password_env` or
    /// `<section>.password_file` (first line), never by the config itself.
    fn password(
        &self,
        env: &Env,
        section: &str,
        var: Option<&String>,
        file: Option<&PathBuf>,
    ) -> Result<SecretString, Error> {
        match (var, file) {
            (Some(_), Some(_)) => Err(self.invalid(
                format!("{section}.password_env"),
                "set either password_env or password_file, not both",
            )),
            (Some(var), None) => env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| SecretString::from(v.clone()))
                .ok_or_else(|| {
                    self.invalid(
                        format!("{section}.password_env"),
                        format!("environment variable {var} is not set"),
                    )
                }),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    self.invalid(
                        format!("{section}.password_file"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                let line = text.lines().next().unwrap_or("").to_owned();
                if line.is_empty() {
                    return Err(self.invalid(
                        format!("{section}.password_file"),
                        format!("{} is empty", file.display()),
                    ));
                }
                Ok(SecretString::from(line))
            }
            (None, None) => Err(self.invalid(
                format!("{section}.password_env"),
                "the password must come from password_env or password_file",
            )),
        }
    }

    /// The subject grammar with the configured patterns and, when
    /// repositories are configured, their names and branches: a word
    /// before `PATCH` is then a branch only if some repository has it, the
    /// word after it a repository only if configured (or after a branch),
    /// else each is a tag routes can match (`[qemu PATCH]`,
    /// `[PATCH net-next]`).
    pub fn subject_grammar(&self) -> Result<SubjectGrammar, Error> {
        let grammar = SubjectGrammar::new(&self.intake.subject_patterns)
            .map_err(|e| self.pattern("intake.subject_patterns", e))?;
        if self.repos.is_empty() {
            return Ok(grammar);
        }
        let mut branches: Vec<String> = self
            .repos
            .iter()
            .flat_map(|r| r.branches.iter().chain(&r.default_branch))
            .cloned()
            .collect();
        branches.sort();
        branches.dedup();
        let repos = self.repos.iter().map(|r| r.name.clone()).collect();
        Ok(grammar.with_branches(branches).with_repos(repos))
    }

    /// Where a series or pull request goes: the subject's repo (and
    /// branch, else the repo's default), else the first routing rule that
    /// matches, else the only configured repository.
    pub fn resolve_route(
        &self,
        rules: &[RouteRule],
        repo: Option<&str>,
        branch: Option<&str>,
        list_id: Option<&str>,
        tags: &[String],
    ) -> (Option<String>, Option<String>) {
        let default_branch = |repo: &str| {
            self.repos.iter().find(|r| r.name == repo).and_then(|r| {
                r.default_branch
                    .clone()
                    .or_else(|| r.branches.first().cloned())
            })
        };
        let branch = branch.map(str::to_owned);
        if let Some(repo) = repo {
            let branch = branch.or_else(|| default_branch(repo));
            return (Some(repo.to_owned()), branch);
        }
        if let Some(r) = crate::mail::routing::route(rules, list_id, tags) {
            let branch = branch.or(r.branch).or_else(|| default_branch(&r.repo));
            return (Some(r.repo), branch);
        }
        if let [only] = self.repos.as_slice() {
            let branch = branch.or_else(|| default_branch(&only.name));
            return (Some(only.name.clone()), branch);
        }
        (None, branch)
    }

    /// Every repository's routes, in config order.
    pub fn route_rules(&self) -> Result<Vec<RouteRule>, Error> {
        let mut rules = Vec::new();
        for (i, repo) in self.repos.iter().enumerate() {
            for (j, route) in repo.routes.iter().enumerate() {
                let tags = route
                    .tags
                    .iter()
                    .map(|t| TagMatcher::parse(t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| self.pattern(format!("repos[{i}].routes[{j}].tags"), e))?;
                if let Some(b) = &route.branch
                    && !repo.branches.contains(b)
                {
                    return Err(self.invalid(
                        format!("repos[{i}].routes[{j}].branch"),
                        format!(
                            "{b:?} is not one of the repository's branches {:?}",
                            repo.branches
                        ),
                    ));
                }
                rules.push(RouteRule {
                    repo: repo.name.clone(),
                    branch: route.branch.clone().or_else(|| repo.default_branch.clone()),
                    list_id: route.list_id.clone(),
                    tags,
                });
            }
        }
        Ok(rules)
    }

    /// The directory yum repositories are published to.
    pub fn publish_dir(&self) -> PathBuf {
        self.publish.dir.clone().unwrap_or_else(|| {
            self.state
                .db
                .parent()
                .unwrap_or(Path::new("."))
                .join("publish")
        })
    }

    /// The URL the publish directory is served under, without a trailing `/`.
    pub fn publish_base_url(&self) -> String {
        match &self.publish.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("file://{}", self.publish_dir().display()),
        }
    }

    /// The architecture directories every published repository has.
    pub fn publish_arches(&self) -> Vec<String> {
        if self.publish.arches.is_empty() {
            vec![crate::rpm::host_basearch().to_owned()]
        } else {
            self.publish.arches.clone()
        }
    }

    /// Where the repository lives on this machine.
    pub fn repo_path(&self, repo: &Repo) -> PathBuf {
        match &repo.path {
            Some(p) => p.clone(),
            None => self
                .state
                .db
                .parent()
                .unwrap_or(Path::new("."))
                .join("repos")
                .join(format!("{}.git", repo.name)),
        }
    }
}

/// Resolves `.` and `..` lexically (`/a/b/../c` -> `/a/c`), so paths in
/// messages, URLs and `.repo` files read cleanly.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Repository and other names that become path components.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A conservative subset of `git check-ref-format --branch`.
pub fn is_safe_ref(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.split('/').any(|c| c.starts_with('.'))
        && name.chars().all(|c| {
            !c.is_control() && !matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

/// The worker's public address: `http` or `https`, a host, at most a path
/// prefix (a reverse proxy's), no query, fragment, credentials, spaces or
/// control characters. `Ok` is the URL without a trailing `/`, so links
/// append `/ui/...` to it.
fn check_public_url(url: &str) -> Result<String, &'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err("is not an http:// or https:// URL");
    };
    if rest.contains(['?', '#']) {
        return Err("must not have a query or fragment (only a path prefix)");
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.contains('@') {
        return Err("must not hold credentials");
    }
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// An archive URL patchline fetches itself: `http`, `https`, `git` or
/// `file`, with a host (or, for `file`, an absolute path), nothing that a
/// program could read as an option, no whitespace or control characters.
/// `Err` says what is wrong, for the message naming the key.
pub fn check_archive_url(url: &str) -> Result<(), &'static str> {
    if url.starts_with('-') {
        return Err("must not start with '-'");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL (http://, https://, git:// or file://)");
    };
    match scheme {
        "http" | "https" | "git" => {
            let host = rest.split('/').next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            if host.is_empty() || host.starts_with(['-', ':']) {
                return Err("has no host");
            }
        }
        "file" => {
            if !rest.starts_with('/') {
                return Err("must name an absolute path (file:///path/to/inbox)");
            }
        }
        _ => return Err("has a scheme other than http, https, git or file"),
    }
    Ok(())
}

const ENV_PREFIX: &str = "PATCHLINE_";

/// Overlays `PATCHLINE_SECTION__KEY=value` onto the parsed file. Values are
/// read as TOML when they parse as a TOML value (`8080`, `true`,
/// `["a","b"]`), else as a plain string.
fn apply_env(table: &mut toml::Table, env: &Env) -> Result<(), Error> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::Env {
                var: var.clone(),
                message: "empty key component".into(),
            });
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().ok_or_else(|| Error::Env {
            var: var.clone(),
            message: "no key".into(),
        })?;
        let mut cursor = &mut *table;
        for part in parents {
            let entry = cursor
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry.as_table_mut().ok_or_else(|| Error::Env {
                var: var.clone(),
                message: format!("`{part}` is not a table in the config"),
            })?;
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::create_dir_all(dir.path().join("Maildir")).unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, &dir.path().join("patchline.toml"), &env)
    }

    fn err(text: &str) -> String {
        load(text, &[]).unwrap_err().to_string()
    }

    #[test]
    fn repository_trailer_keys() {
        let repo = "[intake]\npath = \"x\"\n[[repos]]\nname = \"r\"\npath = \"repo\"\n";
        let c = load(repo, &[]).unwrap();
        let r = &c.repos[0];
        assert!(r.trailers && r.trailers_from_sender_only && !r.sign_off);
        assert_eq!((r.link.as_deref(), r.link_for("a@b")), (None, None));
        let c = load(
            &format!(
                "{repo}trailers = false\ntrailers_from_sender_only = false\nsign_off = true\nlink = \"https://lore.kernel.org/r/{{message_id}}\"\n"
            ),
            &[],
        )
        .unwrap();
        let r = &c.repos[0];
        assert!(!r.trailers && !r.trailers_from_sender_only && r.sign_off);
        assert_eq!(
            r.link_for("20261124.1-x@example.org").as_deref(),
            Some("https://lore.kernel.org/r/20261124.1-x@example.org")
        );
        assert_eq!(
            r.link_for("a/b%c@x").as_deref(),
            Some("https://lore.kernel.org/r/a%2Fb%25c@x")
        );
        for (link, want) in [
            ("https://lore.kernel.org/r/", "must contain {message_id}"),
            (
                "https://x/{message_id}/{subject}",
                "no placeholder but {message_id}",
            ),
            ("https://x/ {message_id}", "white space"),
            ("lore/{message_id}", "must be a URL"),
        ] {
            let e = err(&format!("{repo}link = \"{link}\"\n"));
            assert!(
                e.contains("repos[0].link") && e.contains(want),
                "{link}: {e}"
            );
        }
        let e = err(&format!("{repo}trailers = \"yes\"\n"));
        assert!(e.contains("trailers"), "{e}");
    }

    #[test]
    fn targets_are_macro_sets_and_names_still_work() {
        let text = r#"
[intake]
path = "list.mbox"

[[build.targets]]
name = "epel9-candidate"
dist = ".el9"
macros = { rhel = "9", el9 = 1 }

[[build.targets]]
name = "f41"
dist = ".fc41"
macros = { fedora = 41, fc41 = "1" }

[[repos]]
name = "a"
path = "repo"
targets = ["epel9-candidate", "el8"]

[[repos]]
name = "b"
path = "repo"
"#;
        let c = load(text, &[]).unwrap();
        let a = c.targets_of(&c.repos[0]);
        assert_eq!(a[0].name, "epel9-candidate");
        assert_eq!(a[0].dist, ".el9", "the hyphenated name is not the dist");
        assert_eq!(a[0].macros["rhel"], "9");
        assert_eq!(a[0].macros["el9"], "1");
        assert_eq!(a[1], crate::rpm::Target::named("el8"));
        let b = c.targets_of(&c.repos[1]);
        assert_eq!(
            b.iter().map(|t| t.dist.as_str()).collect::<Vec<_>>(),
            [".el9", ".fc41"]
        );
        assert_eq!(b[1].macros["fedora"], "41");
        // The old string list, also from the environment.
        let c = load(
            "[intake]\npath = \"x\"\n",
            &[("PATCHLINE_BUILD__TARGETS", "[\"el9\", \"fc40\"]")],
        )
        .unwrap();
        assert_eq!(c.build.targets[1], TargetSpec::Name("fc40".into()));
    }

    #[test]
    fn a_target_that_cannot_make_a_release_is_named() {
        let e = err("[intake]\npath = \"x\"\n[build]\ntargets = [\"el9\", \"epel9-candidate\"]\n");
        assert!(
            e.contains("key `build.targets`")
                && e.contains("\"epel9-candidate\"")
                && e.contains("[[build.targets]] name = \"epel9-candidate\""),
            "{e}"
        );
        let e = err("[intake]\npath = \"x\"\n[[build.targets]]\nname = \"x9\"\ndist = \".el-9\"\n");
        assert!(e.contains("dist \".el-9\" cannot end a Release:"), "{e}");
        let e = err(
            "[intake]\npath = \"x\"\n[[build.targets]]\nname = \"x9\"\nmacros = { dist = \".el9\" }\n",
        );
        assert!(e.contains("\"dist\" is not a macro"), "{e}");
        let e = err("[intake]\npath = \"x\"\n[[build.targets]]\nname = \"x9\"\nflavour = 1\n");
        assert!(e.contains("flavour"), "{e}");
        let e = err("[intake]\npath = \"x\"\n[build]\ntargets = [\"el9\", \"el9\"]\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("[intake]\npath = \"x\"\n[build]\ntargets = [\"latest\"]\n");
        assert!(e.contains("not a valid target name"), "{e}");
    }

    #[test]
    fn minimal_mbox_config_gets_defaults_and_absolute_paths() {
        let c = load("[intake]\npath = \"list.mbox\"\n", &[]).unwrap();
        assert!(c.intake.path.unwrap().is_absolute());
        assert!(c.state.db.ends_with("patchline.db") && c.state.db.is_absolute());
        assert_eq!(c.intake.batch, 512);
        assert_eq!(c.server.bind, "127.0.0.1:8080");
    }

    #[test]
    fn the_public_url_is_checked_and_kept_without_a_trailing_slash() {
        let with =
            |url: &str| format!("[intake]\npath = \"x\"\n[server]\npublic_url = \"{url}\"\n");
        for (url, kept) in [
            (
                "https://patchline.example.org",
                "https://patchline.example.org",
            ),
            ("http://build-host:8080/", "http://build-host:8080"),
            (
                "https://example.org/patchline/",
                "https://example.org/patchline",
            ),
        ] {
            assert_eq!(
                load(&with(url), &[]).unwrap().server.public_url.as_deref(),
                Some(kept)
            );
        }
        for (url, why) in [
            ("build-host:8080", "is not an http:// or https:// URL"),
            ("ftp://example.org", "is not an http:// or https:// URL"),
            ("https://", "has no host"),
            ("https://:8080/x", "has no host"),
            ("https://example.org/ui?x=1", "must not have a query"),
            ("https://example.org/#top", "must not have a query"),
            ("https://user:pw@example.org", "must not hold credentials"),
            ("https://example.org/a b", "spaces"),
        ] {
            let e = err(&with(url));
            assert!(
                e.contains("server.public_url") && e.contains(why),
                "{url}: {e}"
            );
        }
        let c = load(
            "[intake]\npath = \"x\"\n",
            &[("PATCHLINE_SERVER__PUBLIC_URL", "https://ci.example.org/")],
        )
        .unwrap();
        assert_eq!(
            c.server.public_url.as_deref(),
            Some("https://ci.example.org")
        );
    }

    #[test]
    fn a_public_inbox_url_is_checked_and_named() {
        let pi = |url: &str| {
            format!("[intake]\nsource = \"public-inbox\"\npath = \"new-inbox\"\nurl = \"{url}\"\n")
        };
        // With a URL the directory need not be an inbox yet.
        for url in [
            "https://lore.kernel.org/lkml",
            "http://127.0.0.1:8080/hello/",
            "git://example.org/inbox",
            "file:///srv/inbox",
        ] {
            let c = load(&pi(url), &[]).unwrap();
            assert_eq!(c.intake.url.as_deref(), Some(url));
        }
        for (url, why) in [
            ("-uhttp://x", "must not start with '-'"),
            ("ssh://host/x", "scheme other than"),
            ("ext::sh -c x", "spaces"),
            ("lore.kernel.org/lkml", "is not a URL"),
            ("https:///x", "has no host"),
            ("file://relative", "absolute path"),
        ] {
            let e = err(&pi(url));
            assert!(e.contains("intake.url") && e.contains(why), "{url}: {e}");
        }
        let e = err(&pi("https://user:s3cret@example.org/a b"));
        assert!(!e.contains("s3cret"), "{e}");
        let e = err("[intake]\npath = \"list.mbox\"\nurl = \"https://example.org/x\"\n");
        assert!(
            e.contains("intake.url") && e.contains("only a public-inbox"),
            "{e}"
        );
    }

    #[test]
    fn parse_and_pattern_errors_keep_their_source() {
        use std::error::Error as _;
        let e = load("[intake\n", &[]).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e:?}");
        let source = e.source().expect("the TOML error is kept");
        assert!(source.downcast_ref::<toml::de::Error>().is_some());
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        let e = load(
            "[intake]\npath = \"x\"\nsubject_patterns = [\"(unclosed\"]\n",
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, Error::Pattern { .. }), "{e:?}");
        let regex = e.source().and_then(|s| s.source()).expect("down to regex");
        assert!(regex.downcast_ref::<regex::Error>().is_some(), "{regex:?}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[intake]\npath = \"x\"\nbogus = 1\n",
                &["patchline.toml", "bogus"],
            ),
            ("[intake]\nsource = \"pop3\"\n", &["pop3"]),
            (
                "[intake]\nsource = \"mbox\"\n",
                &["intake.path", "required"],
            ),
            (
                "[intake]\nsource = \"maildir\"\npath = \"nope\"\n",
                &["intake.path", "not a Maildir"],
            ),
            (
                "[intake]\npath = \"x\"\nsubject_patterns = [\"(unclosed\"]\n",
                &["intake.subject_patterns", "(unclosed"],
            ),
            (
                "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"h\"\nuser = \"u\"\npassword_file = \"missing-pw\"\n",
                &["intake.imap.password_file", "missing-pw"],
            ),
            (
                "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"h\"\nuser = \"u\"\npassword_env = \"NOPE_PW\"\n",
                &["NOPE_PW", "not set"],
            ),
            ("[intake]\nsource = \"imap\"\n", &["[intake.imap]"]),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\npath = \"missing\"\n",
                &["repos[0].path", "does not exist"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"../etc\"\npath = \"repo\"\n",
                &["repos[0].name"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\n",
                &["needs `path` or `url`"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\npath = \"repo\"\n[[repos]]\nname = \"q\"\npath = \"repo\"\n",
                &["repos[1].name", "twice"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\npath = \"repo\"\nbranches = [\"a..b\"]\n",
                &["repos[0].branches"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\npath = \"repo\"\ndefault_branch = \"dev\"\n",
                &["repos[0].default_branch", "dev"],
            ),
            (
                "[intake]\npath=\"x\"\n[[repos]]\nname = \"q\"\npath = \"repo\"\n[[repos.routes]]\ntags = [\"/(bad\"]\n",
                &["repos[0].routes[0].tags"],
            ),
            ("not toml at all = = =", &["patchline.toml"]),
            ("[intake]\npath = \"x\"\nbatch = 0\n", &["intake.batch"]),
            (
                "[intake]\npath = \"x\"\n[server]\nreadonly_token_file = \"r\"\nreadonly_token_env = \"R\"\n",
                &["server.readonly_token_env", "not both"],
            ),
            (
                "[intake]\npath = \"x\"\n[server]\ntoken_env = \"T\"\nreadonly_token_env = \"T\"\n",
                &["server.readonly_token_file", "another file or variable"],
            ),
        ];
        for (text, needles) in cases {
            let msg = err(text);
            for needle in *needles {
                assert!(
                    msg.contains(needle),
                    "error for {text:?} is {msg:?}, lacks {needle:?}"
                );
            }
            assert!(!msg.contains('\n'), "error must be one line: {msg:?}");
        }
    }

    #[test]
    fn imap_password_from_env_or_file_never_printed() {
        let text = "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"h\"\nuser = \"u\"\npassword_env = \"PW\"\n";
        let c = load(text, &[("PW", "hunter2")]).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let text = "[intake]\nsource = \"imap\"\n[intake.imap]\nhost = \"h\"\nuser = \"u\"\npassword_file = \"pw\"\n";
        let c = load(text, &[]).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            c.intake.imap.unwrap().password.unwrap().expose_secret(),
            "s3cret"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            "[intake]\npath = \"x\"\nbatch = 5\n",
            &[
                ("PATCHLINE_INTAKE__BATCH", "9"),
                ("PATCHLINE_STATE__DB", "/tmp/other.db"),
                ("PATCHLINE_SERVER__BIND", "0.0.0.0:1"),
            ],
        )
        .unwrap();
        assert_eq!(c.intake.batch, 9);
        assert_eq!(c.state.db, PathBuf::from("/tmp/other.db"));
        assert_eq!(c.server.bind, "0.0.0.0:1");
        let e = load(
            "[intake]\npath = \"x\"\n",
            &[("PATCHLINE_INTAKE__NOPE", "1")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn routes_default_to_the_repo_default_branch() {
        let c = load(
            "[intake]\npath=\"x\"\n[[repos]]\nname = \"qemu\"\npath = \"repo\"\nbranches = [\"master\", \"stable\"]\ndefault_branch = \"stable\"\n[[repos.routes]]\nlist_id = \"qemu-devel.nongnu.org\"\ntags = [\"qemu\", \"!RFC\"]\n",
            &[],
        )
        .unwrap();
        let rules = c.route_rules().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].branch.as_deref(), Some("stable"));
        assert_eq!(rules[0].tags.len(), 2);
    }

    #[test]
    fn a_word_before_patch_that_is_no_configured_branch_is_a_tag_routes_match() {
        let c = load(
            "[intake]\npath=\"x\"\n[[repos]]\nname = \"qemu\"\npath = \"repo\"\nbranches = [\"master\", \"stable\"]\n[[repos.routes]]\ntags = [\"qemu\"]\n",
            &[],
        )
        .unwrap();
        let g = c.subject_grammar().unwrap();
        let tagged = g.parse("[qemu PATCH] t").unwrap();
        assert_eq!(tagged.branch, None);
        assert_eq!(tagged.tags, ["qemu"]);
        let rules = c.route_rules().unwrap();
        let routed = crate::mail::routing::route(&rules, None, &tagged.tags);
        assert_eq!(routed.map(|r| r.repo).as_deref(), Some("qemu"));
        let team = g.parse("[stable PATCH qemu] t").unwrap();
        assert_eq!(team.branch.as_deref(), Some("stable"));
        assert_eq!(team.repo.as_deref(), Some("qemu"));
        // No repository configured: the first word before PATCH is the branch.
        let builtin = Config::builtin().subject_grammar().unwrap();
        assert_eq!(
            builtin.parse("[qemu PATCH] t").unwrap().branch.as_deref(),
            Some("qemu")
        );
    }

    #[test]
    fn names_and_refs() {
        for ok in ["qemu", "libvirt-python", "k.v_2"] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in ["", "..", ".git", "a/b", "a b", "/abs"] {
            assert!(!is_safe_name(bad), "{bad}");
        }
        for ok in ["master", "stable-2.1", "release/v1"] {
            assert!(is_safe_ref(ok), "{ok}");
        }
        for bad in ["", "a..b", "-x", "a/.b", "x.lock", "a b", "a:b", "/a", "a/"] {
            assert!(!is_safe_ref(bad), "{bad}");
        }
    }
}
