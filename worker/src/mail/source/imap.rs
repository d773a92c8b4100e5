//! IMAP mail source: reads one mailbox of an IMAP server, oldest UID first.
//!
//! It owns the connection (plain, STARTTLS or implicit TLS over rustls), the
//! `uidvalidity=N;uid=M` cursor and the IDLE wait used by `collect --watch`.
//! It must never change the mailbox: the mailbox is opened with EXAMINE and
//! bodies are read with `BODY.PEEK[]`, so no flag (not even `\Seen`) is set.
//! It must never write the password anywhere but into the LOGIN or
//! AUTHENTICATE command: not into errors, logs, nor `Debug` output.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imap::extensions::idle::{SetReadTimeout, WaitOutcome};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use secrecy::{ExposeSecret, SecretString};

use super::{Error, FetchStats, Flow, MailSource, Oversize, RawMail, Reread, Resume, Sink};

/// How the connection is protected (config: `"tls"`, `"starttls"`, `"plain"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapSecurity {
    /// TLS from the first byte (usually port 993).
    Tls,
    /// Plain connection upgraded with STARTTLS before logging in (port 143).
    StartTls,
    /// No encryption at all; the password crosses the network in clear.
    Plain,
}

/// How the user logs in (config: `"login"`, `"plain"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    /// The `LOGIN user password` command.
    Login,
    /// `AUTHENTICATE PLAIN` (RFC 4616).
    Plain,
}

/// Everything needed to read one mailbox. `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: ImapSecurity,
    pub user: String,
    pub password: SecretString,
    pub auth: ImapAuth,
    /// Mailbox name as the server spells it (ASCII; modified UTF-7 names
    /// must be given already encoded).
    pub mailbox: String,
    /// Extra PEM root certificates trusted besides the web PKI roots, for
    /// servers with a private or self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for every single read or write, so a dead
    /// server never hangs a run.
    pub timeout: Duration,
    /// Mails larger than this (RFC822.SIZE) are fetched alone and handed
    /// over as over-limit (archived, recorded as an error). It also bounds
    /// the bytes of one FETCH batch of small mails, hence the memory used.
    pub max_mail_size: u64,
    /// Most UIDs fetched with one FETCH command.
    pub batch: u32,
}

impl ImapSettings {
    /// `host:port` as written in errors.
    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Reads one IMAP mailbox; see the module documentation.
///
/// After a UIDVALIDITY change every mail gets a new item key, so
/// `Resume::seen` cannot recognise mails taken before the change: the caller
/// deduplicates those by Message-ID.
pub struct ImapSource {
    settings: ImapSettings,
    connection: Option<Connection>,
    /// The mailbox as it was when mail was last read completely; new mail is
    /// anything beyond it.
    read_up_to: Option<MailboxState>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource")
            .field("settings", &self.settings)
            .field("connected", &self.connection.is_some())
            .field("read_up_to", &self.read_up_to)
            .finish()
    }
}

/// An authenticated session with the mailbox selected read-only.
struct Connection {
    session: imap::Session<Transport>,
    has_idle: bool,
}

/// How long one IDLE command may last: RFC 2177 asks clients to re-issue
/// IDLE before the server's 30-minute inactivity limit.
const IDLE_REFRESH: Duration = Duration::from_secs(25 * 60);

/// How often a server without IDLE is asked for new mail.
const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Longest line accepted before STARTTLS; a greeting is a few dozen bytes.
const MAX_PLAIN_LINE: usize = 8192;

impl ImapSource {
    /// Creates the source; nothing is contacted before `fetch` or
    /// `wait_for_mail`.
    pub fn new(settings: ImapSettings) -> ImapSource {
        ImapSource {
            settings,
            connection: None,
            read_up_to: None,
        }
    }

    /// Blocks until the server announces new mail in the mailbox (`true`) or
    /// `timeout` passes (`false`). Mail that arrived since the last complete
    /// `fetch` counts as new at once. Uses IDLE when the server offers it,
    /// otherwise asks the server again every 30 seconds.
    pub fn wait_for_mail(&mut self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        let result = self.wait_until(deadline);
        self.forget_broken_connection(&result);
        result
    }

    fn wait_until(&mut self, deadline: Instant) -> Result<bool, Error> {
        let now = self.open_mailbox()?;
        let baseline = *self.read_up_to.get_or_insert(now);
        if has_new_mail(&baseline, &now) {
            return Ok(true);
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(false);
            }
            let settings = &self.settings;
            let connection = connected(&mut self.connection, settings)?;
            if connection.has_idle {
                let slice = remaining.min(IDLE_REFRESH);
                let outcome = connection
                    .session
                    .idle()
                    .and_then(|idle| idle.wait_with_timeout(slice))
                    .map_err(|e| session_error(settings, "waiting for new mail (IDLE)", &e))?;
                if outcome == WaitOutcome::TimedOut {
                    continue;
                }
            } else {
                std::thread::sleep(remaining.min(POLL_INTERVAL));
            }
            let now = self.open_mailbox()?;
            if has_new_mail(&baseline, &now) {
                return Ok(true);
            }
        }
    }

    /// A connection that failed once is not trusted again: the imap crate
    /// cannot resynchronise after a half-read response.
    fn forget_broken_connection<T>(&mut self, result: &Result<T, Error>) {
        if let Err(e) = result
            && e.is_infrastructure()
        {
            self.connection = None;
        }
    }

    /// (Re-)opens the mailbox read-only, reusing the connection when it is
    /// still alive, and returns its current state.
    fn open_mailbox(&mut self) -> Result<MailboxState, Error> {
        if let Some(connection) = self.connection.as_mut() {
            match examine(&self.settings, &mut connection.session) {
                Ok(state) => return Ok(state),
                Err(e) if e.is_infrastructure() => {
                    tracing::debug!(error = %e, "reconnecting after a failed EXAMINE");
                    self.connection = None;
                }
                Err(e) => return Err(e),
            }
        }
        let mut connection = connect(&self.settings)?;
        let state = examine(&self.settings, &mut connection.session)?;
        self.connection = Some(connection);
        Ok(state)
    }

    fn fetch_after(
        &mut self,
        cursor: Option<Cursor>,
        resume: &Resume<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<FetchStats, Error> {
        let key = self.key();
        let state = self.open_mailbox()?;
        let mut stats = FetchStats {
            total_hint: Some(u64::from(state.exists)),
            ..FetchStats::default()
        };
        let start_after = match cursor {
            Some(cursor) if cursor.uidvalidity == state.uidvalidity => cursor.uid,
            Some(cursor) => {
                let warning = format!(
                    "{key}: UIDVALIDITY changed from {} to {}, so every UID changed: \
                     reading the whole mailbox again (mails already stored are \
                     skipped by Message-ID)",
                    cursor.uidvalidity, state.uidvalidity
                );
                tracing::warn!("{warning}");
                stats.warnings.push(warning);
                0
            }
            None => 0,
        };

        let listing = self.list_after(start_after, &state)?;
        let mut wanted = Vec::with_capacity(listing.len());
        for message in &listing {
            let item = item_key(state.uidvalidity, message.uid);
            if (resume.seen)(&item) {
                stats.skipped_seen += 1;
            } else {
                wanted.push(*message);
            }
        }

        let mut last_stored = None;
        let batches = plan_batches(&wanted, self.settings.batch, self.settings.max_mail_size);
        for uids in batches {
            let uid_list = uid_set(&uids);
            let settings = &self.settings;
            let connection = connected(&mut self.connection, settings)?;
            let fetches = connection
                .session
                .uid_fetch(&uid_list, "(UID BODY.PEEK[])")
                .map_err(|e| {
                    let during = format!("fetching uid {uid_list} of {}", settings.mailbox);
                    interrupted(settings, &during, &e, last_stored, start_after)
                })?;
            let mut bodies: HashMap<u32, &[u8]> = HashMap::with_capacity(uids.len());
            for fetch in fetches.iter() {
                if let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) {
                    bodies.insert(uid, body);
                }
            }
            for uid in uids {
                let Some(body) = bodies.get(&uid) else {
                    let warning = format!(
                        "{key}: uid {uid} vanished (expunged) before its body could be read"
                    );
                    tracing::warn!("{warning}");
                    stats.warnings.push(warning);
                    continue;
                };
                let item = item_key(state.uidvalidity, uid);
                // Over the limit: fetched alone (`plan_batches` keeps to the
                // byte budget), handed over whole to be archived and
                // recorded, never skipped.
                let size = body.len() as u64;
                let oversize = (size > self.settings.max_mail_size).then_some(Oversize {
                    size,
                    reread: Reread::Held,
                });
                let mail = RawMail {
                    bytes: body.to_vec(),
                    origin: format!(
                        "imap {} {} uid {uid}",
                        self.settings.host, self.settings.mailbox
                    ),
                    item: item.clone(),
                    cursor: Cursor {
                        uidvalidity: state.uidvalidity,
                        uid,
                    }
                    .to_string(),
                    warnings: Vec::new(),
                    oversize,
                };
                let flow = sink(mail).map_err(|source| Error::Sink { item, source })?;
                stats.delivered += 1;
                last_stored = Some(uid);
                if flow == Flow::Stop {
                    // Whatever is left counts as new mail for `wait_for_mail`.
                    self.read_up_to = Some(MailboxState {
                        uid_next: Some(uid.saturating_add(1)),
                        ..state
                    });
                    return Ok(stats);
                }
            }
        }

        let listed_next = listing.last().map(|m| m.uid.saturating_add(1));
        self.read_up_to = Some(MailboxState {
            uid_next: match (state.uid_next, listed_next) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            ..state
        });
        Ok(stats)
    }

    /// UIDs and sizes of every message after `start_after`, ascending.
    fn list_after(
        &mut self,
        start_after: u32,
        state: &MailboxState,
    ) -> Result<Vec<MessageSize>, Error> {
        let first = start_after.saturating_add(1);
        let nothing_new = state.exists == 0 || state.uid_next.is_some_and(|next| first >= next);
        if nothing_new {
            return Ok(Vec::new());
        }
        let settings = &self.settings;
        let connection = connected(&mut self.connection, settings)?;
        let fetches = connection
            .session
            .uid_fetch(format!("{first}:*"), "(UID RFC822.SIZE)")
            .map_err(|e| {
                let during = format!("listing new mail in {}", settings.mailbox);
                interrupted(settings, &during, &e, None, start_after)
            })?;
        let mut listing: Vec<MessageSize> = fetches
            .iter()
            .filter_map(|fetch| {
                Some(MessageSize {
                    uid: fetch.uid?,
                    size: u64::from(fetch.size?),
                })
            })
            // `N:*` always includes the last message, even when its UID is
            // below N.
            .filter(|message| message.uid > start_after)
            .collect();
        listing.sort_unstable_by_key(|message| message.uid);
        listing.dedup_by_key(|message| message.uid);
        Ok(listing)
    }
}

impl MailSource for ImapSource {
    fn key(&self) -> String {
        format!(
            "imap://{}@{}/{}",
            self.settings.user,
            self.settings.server(),
            self.settings.mailbox
        )
    }

    fn wait_for_mail(&mut self, timeout: Duration) -> Result<bool, Error> {
        ImapSource::wait_for_mail(self, timeout)
    }

    fn fetch(&mut self, resume: &Resume<'_>, sink: &mut Sink<'_>) -> Result<FetchStats, Error> {
        let key = self.key();
        let span = tracing::info_span!("imap_fetch", source = %key);
        let _entered = span.enter();
        let cursor = resume
            .cursor
            .map(|text| {
                text.parse::<Cursor>().map_err(|reason| Error::BadCursor {
                    source_key: key.clone(),
                    cursor: text.to_string(),
                    reason,
                })
            })
            .transpose()?;
        let result = self.fetch_after(cursor, resume, sink);
        self.forget_broken_connection(&result);
        result
    }
}

/// Where reading stopped: the last stored UID under one UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    uidvalidity: u32,
    uid: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uidvalidity={};uid={}", self.uidvalidity, self.uid)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Cursor, String> {
        let expected = "expected `uidvalidity=N;uid=M`";
        let (validity, uid) = text
            .split_once(';')
            .ok_or_else(|| format!("{expected}, found no `;`"))?;
        let number = |part: &str, name: &str| -> Result<u32, String> {
            let value = part
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| format!("{expected}, found {part:?}"))?;
            value
                .parse::<u32>()
                .map_err(|e| format!("{name} {value:?} is not a number: {e}"))
        };
        let uidvalidity = number(validity, "uidvalidity")?;
        let uid = number(uid, "uid")?;
        if uidvalidity == 0 {
            return Err("uidvalidity 0 is not valid in IMAP".to_string());
        }
        Ok(Cursor { uidvalidity, uid })
    }
}

fn item_key(uidvalidity: u32, uid: u32) -> String {
    format!("{uidvalidity}:{uid}")
}

/// What EXAMINE reported; compared to notice new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MailboxState {
    uidvalidity: u32,
    uid_next: Option<u32>,
    exists: u32,
}

/// Whether `now` holds mail that `seen` did not. UIDNEXT only grows with new
/// mail (expunges and flag changes leave it alone); EXISTS is the fallback
/// for servers that do not report UIDNEXT.
fn has_new_mail(seen: &MailboxState, now: &MailboxState) -> bool {
    if now.uidvalidity != seen.uidvalidity {
        return true;
    }
    match (seen.uid_next, now.uid_next) {
        (Some(before), Some(after)) => after > before,
        _ => now.exists > seen.exists,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MessageSize {
    uid: u32,
    size: u64,
}

/// Groups UIDs into FETCH commands of at most `batch` mails and at most
/// `byte_budget` bytes (a mail larger than the budget goes alone), so memory
/// stays bounded by the size limit while small mails still travel together.
fn plan_batches(messages: &[MessageSize], batch: u32, byte_budget: u64) -> Vec<Vec<u32>> {
    let batch = usize::try_from(batch.max(1)).unwrap_or(usize::MAX);
    let mut batches = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut current_bytes = 0u64;
    for message in messages {
        let over_budget = current_bytes.saturating_add(message.size) > byte_budget;
        if !current.is_empty() && (current.len() >= batch || over_budget) {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(message.uid);
        current_bytes = current_bytes.saturating_add(message.size);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// An IMAP UID set for ascending `uids`, runs written as ranges: `3:5,9`.
fn uid_set(uids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < uids.len() {
        let start = uids[index];
        let mut end = start;
        while index + 1 < uids.len() && uids[index + 1] == end.saturating_add(1) {
            index += 1;
            end = uids[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        index += 1;
    }
    parts.join(",")
}

fn examine(
    settings: &ImapSettings,
    session: &mut imap::Session<Transport>,
) -> Result<MailboxState, Error> {
    let server = settings.server();
    let mailbox = session.examine(&settings.mailbox).map_err(|e| match e {
        imap::Error::No(reason) | imap::Error::Bad(reason) => Error::MailboxUnavailable {
            server: server.clone(),
            mailbox: settings.mailbox.clone(),
            reason,
        },
        e => session_error(settings, &format!("opening {}", settings.mailbox), &e),
    })?;
    let uidvalidity = mailbox.uid_validity.ok_or_else(|| Error::Imap {
        server: server.clone(),
        reason: format!(
            "EXAMINE {} reported no UIDVALIDITY, so no position can be kept",
            settings.mailbox
        ),
    })?;
    Ok(MailboxState {
        uidvalidity,
        uid_next: mailbox.uid_next,
        exists: mailbox.exists,
    })
}

/// Connects, secures the connection as configured and logs in.
fn connect(settings: &ImapSettings) -> Result<Connection, Error> {
    let server = settings.server();
    let _span =
        tracing::debug_span!("imap_connect", server = %server, user = %settings.user).entered();
    let tcp = connect_tcp(settings)?;
    let unreachable = |reason: String| Error::Unreachable {
        server: server.clone(),
        reason,
    };
    let mut client = match settings.security {
        ImapSecurity::Plain => imap::Client::new(Transport::plain(tcp, settings)),
        ImapSecurity::Tls => {
            imap::Client::new(Transport::tls(tls_handshake(settings, tcp)?, settings))
        }
        ImapSecurity::StartTls => {
            let mut tcp = tcp;
            let greeting = read_plain_line(&mut tcp)
                .map_err(|e| unreachable(format!("no greeting: {}", describe_io(&e, settings))))?;
            check_greeting(&greeting).map_err(unreachable)?;
            start_tls(&mut tcp).map_err(|reason| Error::Imap {
                server: server.clone(),
                reason,
            })?;
            let mut client =
                imap::Client::new(Transport::tls(tls_handshake(settings, tcp)?, settings));
            // RFC 3501: no second greeting after STARTTLS.
            client.greeting_read = true;
            client
        }
    };
    if !client.greeting_read {
        let greeting = client
            .read_greeting()
            .map_err(|e| unreachable(format!("no greeting: {}", describe(&e, settings))))?;
        check_greeting(&greeting).map_err(unreachable)?;
    }

    let password = settings.password.expose_secret();
    let login = match settings.auth {
        ImapAuth::Login => client.login(&settings.user, password),
        ImapAuth::Plain => client.authenticate(
            "PLAIN",
            &PlainAuthenticator {
                user: &settings.user,
                password,
            },
        ),
    };
    let mut session = login.map_err(|(e, _client)| {
        let auth_failed = |reason: String| Error::AuthFailed {
            server: server.clone(),
            user: settings.user.clone(),
            reason,
        };
        match e {
            imap::Error::No(reason) | imap::Error::Bad(reason) => auth_failed(reason),
            // The imap crate would name the offending character; say less.
            imap::Error::Validate(_) => auth_failed(
                "the user name or password contains a line break, which IMAP cannot send"
                    .to_string(),
            ),
            e => session_error(settings, "logging in", &e),
        }
    })?;
    let has_idle = session
        .capabilities()
        .map_err(|e| session_error(settings, "asking for CAPABILITY", &e))?
        .has_str("IDLE");
    tracing::debug!(has_idle, "logged in");
    Ok(Connection { session, has_idle })
}

fn connect_tcp(settings: &ImapSettings) -> Result<TcpStream, Error> {
    let server = settings.server();
    let unreachable = |reason: String| Error::Unreachable {
        server: server.clone(),
        reason,
    };
    let addresses = (settings.host.as_str(), settings.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {}: {e}", settings.host)))?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, settings.timeout) {
            Ok(tcp) => {
                let timeout = Some(settings.timeout);
                tcp.set_read_timeout(timeout)
                    .and_then(|()| tcp.set_write_timeout(timeout))
                    .and_then(|()| tcp.set_nodelay(true))
                    .map_err(|e| unreachable(format!("cannot configure the socket: {e}")))?;
                return Ok(tcp);
            }
            Err(e) => last_error = Some((address, e)),
        }
    }
    Err(unreachable(match last_error {
        Some((address, e)) => format!("cannot connect to {address}: {}", describe_io(&e, settings)),
        None => format!("{} resolves to no address", settings.host),
    }))
}

fn check_greeting(greeting: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(greeting);
    if text.starts_with("* OK") || text.starts_with("* PREAUTH") {
        Ok(())
    } else {
        Err(format!(
            "the server greeted with {:?} instead of `* OK`",
            text.trim_end()
        ))
    }
}

/// Upgrades a fresh connection with STARTTLS; done by hand because the imap
/// crate cannot hand its stream back for the TLS layer.
fn start_tls(tcp: &mut TcpStream) -> Result<(), String> {
    tcp.write_all(b"T1 STARTTLS\r\n")
        .map_err(|e| format!("cannot send STARTTLS: {e}"))?;
    loop {
        let line = read_plain_line(tcp).map_err(|e| format!("STARTTLS got no answer: {e}"))?;
        let text = String::from_utf8_lossy(&line);
        if let Some(status) = text.strip_prefix("T1 ") {
            if status
                .get(..2)
                .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
            {
                return Ok(());
            }
            return Err(format!(
                "the server refused STARTTLS: {:?} (does it offer TLS?)",
                status.trim_end()
            ));
        }
    }
}

/// Reads one CRLF line byte by byte, so nothing after it (the TLS
/// handshake) is swallowed by a buffer.
fn read_plain_line(tcp: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_PLAIN_LINE {
        if tcp.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(line);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("line longer than {MAX_PLAIN_LINE} bytes"),
    ))
}

fn tls_handshake(
    settings: &ImapSettings,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>, Error> {
    let server = settings.server();
    let failed = |reason: String| Error::Unreachable {
        server: server.clone(),
        reason: format!("TLS handshake failed: {reason}"),
    };
    let config = tls_config(settings)?;
    let name = ServerName::try_from(settings.host.clone()).map_err(|e| {
        failed(format!(
            "{:?} is not a valid server name: {e}",
            settings.host
        ))
    })?;
    let mut connection = ClientConnection::new(config, name).map_err(|e| failed(e.to_string()))?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .map_err(|e| failed(describe_io(&e, settings)))?;
    }
    Ok(StreamOwned::new(connection, tcp))
}

fn tls_config(settings: &ImapSettings) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &settings.ca_file {
        let io_error = |source: io::Error| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let mut added = 0;
        for certificate in rustls_pemfile::certs(&mut BufReader::new(file)) {
            roots
                .add(certificate.map_err(io_error)?)
                .map_err(|e| io_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            added += 1;
        }
        if added == 0 {
            return Err(io_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the CA file",
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Imap {
            server: settings.server(),
            reason: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Answers the empty PLAIN challenge with `\0user\0password` (RFC 4616).
struct PlainAuthenticator<'a> {
    user: &'a str,
    password: &'a str,
}

impl imap::Authenticator for PlainAuthenticator<'_> {
    type Response = Vec<u8>;

    fn process(&self, _challenge: &[u8]) -> Vec<u8> {
        [b"\0", self.user.as_bytes(), b"\0", self.password.as_bytes()].concat()
    }
}

/// The byte stream under the imap crate, with the read timeout every
/// command gets.
struct Transport {
    stream: Stream,
    timeout: Duration,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    fn plain(tcp: TcpStream, settings: &ImapSettings) -> Transport {
        Transport {
            stream: Stream::Plain(tcp),
            timeout: settings.timeout,
        }
    }

    fn tls(tls: StreamOwned<ClientConnection, TcpStream>, settings: &ImapSettings) -> Transport {
        Transport {
            stream: Stream::Tls(Box::new(tls)),
            timeout: settings.timeout,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.stream {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "TLS",
        };
        write!(f, "Transport({kind}, timeout {:?})", self.timeout)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

impl SetReadTimeout for Transport {
    /// IDLE sets its own wait and then lifts the timeout (`None`); fall back
    /// to the configured timeout instead, so no later command (the DONE
    /// ending the IDLE included) can hang on a dead server.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> imap::error::Result<()> {
        // A zero timeout means "none" to the socket: never let that through.
        let timeout = timeout
            .unwrap_or(self.timeout)
            .max(Duration::from_millis(1));
        self.tcp()
            .set_read_timeout(Some(timeout))
            .map_err(imap::Error::Io)
    }
}

fn describe_io(error: &io::Error, settings: &ImapSettings) -> String {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("no answer within {:?}", settings.timeout)
        }
        _ => error.to_string(),
    }
}

fn describe(error: &imap::Error, settings: &ImapSettings) -> String {
    match error {
        imap::Error::Io(e) => describe_io(e, settings),
        imap::Error::ConnectionLost => "the server closed the connection".to_string(),
        imap::Error::No(text) => format!("refused: {text}"),
        imap::Error::Bad(text) => format!("rejected as bad: {text}"),
        e => e.to_string(),
    }
}

/// The live connection; only missing if a caller forgot `open_mailbox`.
fn connected<'a>(
    connection: &'a mut Option<Connection>,
    settings: &ImapSettings,
) -> Result<&'a mut Connection, Error> {
    connection.as_mut().ok_or_else(|| Error::Imap {
        server: settings.server(),
        reason: "the connection was closed unexpectedly".to_string(),
    })
}

/// A failed command on an established session: always the server's or the
/// network's fault, never the input's.
fn session_error(settings: &ImapSettings, during: &str, error: &imap::Error) -> Error {
    Error::Imap {
        server: settings.server(),
        reason: format!("{during}: {}", describe(error, settings)),
    }
}

/// An error in the middle of reading mail, saying where the next run resumes.
fn interrupted(
    settings: &ImapSettings,
    during: &str,
    error: &imap::Error,
    last_stored: Option<u32>,
    start_after: u32,
) -> Error {
    let resume = match (last_stored, start_after) {
        (Some(uid), _) => {
            format!("mails up to uid {uid} are stored and the next run resumes after uid {uid}")
        }
        (None, 0) => {
            "no mail was stored by this run; the next run starts from the first mail".to_string()
        }
        (None, uid) => {
            format!("no mail was stored by this run; the next run resumes after uid {uid}")
        }
    };
    Error::Imap {
        server: settings.server(),
        reason: format!("{during}: {}; {resume}", describe(error, settings)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ImapSettings {
        ImapSettings {
            host: "mail.example.org".to_string(),
            port: 993,
            security: ImapSecurity::Tls,
            user: "list".to_string(),
            password: SecretString::from("hunter2-secret"),
            auth: ImapAuth::Login,
            mailbox: "INBOX".to_string(),
            ca_file: None,
            timeout: Duration::from_secs(30),
            max_mail_size: 1 << 20,
            batch: 50,
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let good = [
            ("uidvalidity=1;uid=0", (1, 0)),
            ("uidvalidity=1700000000;uid=42", (1_700_000_000, 42)),
            (
                "uidvalidity=4294967295;uid=4294967295",
                (u32::MAX, u32::MAX),
            ),
        ];
        for (text, (uidvalidity, uid)) in good {
            let cursor: Cursor = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cursor, Cursor { uidvalidity, uid }, "{text}");
            assert_eq!(cursor.to_string(), text);
        }
        let bad = [
            ("", "no `;`"),
            ("uidvalidity=1", "no `;`"),
            ("uid=1;uidvalidity=1", "found \"uid=1\""),
            ("uidvalidity=x;uid=1", "not a number"),
            ("uidvalidity=1;uid=-1", "not a number"),
            ("uidvalidity=1;uid=4294967296", "not a number"),
            ("uidvalidity=0;uid=5", "uidvalidity 0"),
            ("uidvalidity=1;uid=2;x=3", "not a number"),
            ("1234", "no `;`"),
        ];
        for (text, why) in bad {
            let error = text.parse::<Cursor>().expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn uid_sets_compress_runs() {
        let cases: [(&[u32], &str); 6] = [
            (&[], ""),
            (&[7], "7"),
            (&[1, 2, 3], "1:3"),
            (&[1, 3, 5], "1,3,5"),
            (&[1, 2, 4, 5, 6, 9], "1:2,4:6,9"),
            (&[u32::MAX - 1, u32::MAX], "4294967294:4294967295"),
        ];
        for (uids, expected) in cases {
            assert_eq!(uid_set(uids), expected, "{uids:?}");
        }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let sized = |sizes: &[u64]| -> Vec<MessageSize> {
            sizes
                .iter()
                .zip(1..)
                .map(|(&size, uid)| MessageSize { uid, size })
                .collect()
        };
        // (sizes of uid 1, 2, ..., batch, byte budget, expected batches)
        type Case = (&'static [u64], u32, u64, Vec<Vec<u32>>);
        let cases: [Case; 6] = [
            (&[], 10, 100, vec![]),
            (
                &[1, 1, 1, 1, 1],
                2,
                100,
                vec![vec![1, 2], vec![3, 4], vec![5]],
            ),
            (&[40, 40, 40], 10, 100, vec![vec![1, 2], vec![3]]),
            (&[500, 1, 1], 10, 100, vec![vec![1], vec![2, 3]]),
            (&[1, 500, 1], 10, 100, vec![vec![1], vec![2], vec![3]]),
            (&[1, 1, 1], 0, 100, vec![vec![1], vec![2], vec![3]]),
        ];
        for (sizes, batch, budget, expected) in cases {
            assert_eq!(
                plan_batches(&sized(sizes), batch, budget),
                expected,
                "sizes {sizes:?}, batch {batch}, budget {budget}"
            );
        }
    }

    #[test]
    fn new_mail_is_a_higher_uidnext_or_a_new_uidvalidity() {
        let state = |uidvalidity, uid_next, exists| MailboxState {
            uidvalidity,
            uid_next,
            exists,
        };
        let cases = [
            (state(1, Some(5), 4), state(1, Some(5), 4), false),
            (state(1, Some(5), 4), state(1, Some(6), 5), true),
            // An expunge lowers EXISTS but is not new mail.
            (state(1, Some(5), 4), state(1, Some(5), 3), false),
            // Appended and expunged again: UIDNEXT still moved.
            (state(1, Some(5), 4), state(1, Some(6), 4), true),
            (state(1, Some(5), 4), state(2, Some(5), 4), true),
            (state(1, None, 4), state(1, None, 5), true),
            (state(1, None, 4), state(1, None, 4), false),
        ];
        for (seen, now, expected) in cases {
            assert_eq!(has_new_mail(&seen, &now), expected, "{seen:?} -> {now:?}");
        }
    }

    #[test]
    fn interruption_says_where_the_next_run_resumes() {
        let lost = imap::Error::ConnectionLost;
        let timed_out = imap::Error::Io(io::ErrorKind::WouldBlock.into());
        let cases = [
            (&lost, Some(7), 3, "after uid 7", "closed the connection"),
            (
                &lost,
                None,
                3,
                "resumes after uid 3",
                "closed the connection",
            ),
            (
                &lost,
                None,
                0,
                "from the first mail",
                "closed the connection",
            ),
            (
                &timed_out,
                Some(2),
                0,
                "after uid 2",
                "no answer within 30s",
            ),
        ];
        for (cause, last_stored, start_after, resume, why) in cases {
            let error = interrupted(&settings(), "fetching", cause, last_stored, start_after);
            assert!(error.is_infrastructure());
            let message = error.to_string();
            assert!(message.contains("mail.example.org:993"), "{message}");
            assert!(message.contains(resume), "{message}");
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn lifting_the_read_timeout_restores_the_configured_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let mut transport = Transport::plain(tcp, &settings());
        let cases = [
            (Some(Duration::from_secs(1500)), Duration::from_secs(1500)),
            (None, Duration::from_secs(30)),
            (Some(Duration::ZERO), Duration::from_millis(1)),
        ];
        for (asked, expected) in cases {
            transport.set_read_timeout(asked).expect("set timeout");
            // The kernel rounds to its clock tick.
            let actual = transport.tcp().read_timeout().expect("read timeout");
            assert!(
                actual.is_some_and(|t| t >= expected && t < expected + Duration::from_millis(20)),
                "asked {asked:?}, expected {expected:?}, got {actual:?}"
            );
        }
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let source = ImapSource::new(settings());
        assert_eq!(source.key(), "imap://list@mail.example.org:993/INBOX");
        let debug = format!("{source:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("mail.example.org"), "{debug}");
    }
}
