//! Mail sources: where raw mails come from (mbox, Maildir, IMAP, a
//! public-inbox archive).
//!
//! A source only reads. It hands each mail over together with the cursor that
//! becomes valid once that mail is safely stored; the caller persists the
//! cursor in the same transaction as the mail, so a crash between two mails
//! never skips nor re-reads one.

pub mod imap;
pub mod maildir;
pub mod mbox;
pub mod public_inbox;

/// One mail as it came out of a source, untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMail {
    /// The RFC 5322 bytes (for mbox: with `>From ` unquoted, without the
    /// `From ` separator line).
    pub bytes: Vec<u8>,
    /// Where it came from, for humans: `mbox /x/list.mbox @ 1234`,
    /// `maildir /x/Maildir new/1700.M1.host`, `imap INBOX uid 42`.
    pub origin: String,
    /// A key unique within the source (mbox byte offset, Maildir unique
    /// name without flags, IMAP `uidvalidity:uid`), recorded so an item is
    /// never taken twice.
    pub item: String,
    /// The source cursor to persist once this mail is stored. Opaque to the
    /// caller (the source parses it back in `fetch`).
    pub cursor: String,
    /// Recoverable damage noticed while reading (e.g. an mbox that ends
    /// without a newline).
    pub warnings: Vec<String>,
    /// Set when the mail is over the size limit: it is archived whole and
    /// recorded as an error until the limit allows it, never skipped.
    /// `bytes` then holds its head (the header block, at most
    /// `mbox::HEAD_LIMIT` bytes), or the whole mail where the source can
    /// only read it in one piece (`Reread::Held`).
    pub oversize: Option<Oversize>,
}

/// A mail over the size limit, and where its whole bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// Its size in bytes, as it would have been handed over.
    pub size: u64,
    pub reread: Reread,
}

/// Where the whole bytes of an over-limit mail are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reread {
    /// A span of an mbox file, unquoted on the way (memory: one line).
    Mbox(mbox::MboxSpan),
    /// A file that is exactly the mail (a Maildir message), streamed.
    File(std::path::PathBuf),
    /// `RawMail::bytes` is the whole mail: IMAP hands a message over in
    /// one response and gitoxide reads a public-inbox blob in one piece,
    /// so memory is one mail, as `MailSource::fetch` allows.
    Held,
}

impl Oversize {
    /// Streams the whole mail into `out` (`held` is `RawMail::bytes`);
    /// returns the bytes written.
    pub fn copy_to(&self, held: &[u8], out: &mut dyn std::io::Write) -> Result<u64, Error> {
        match &self.reread {
            Reread::Mbox(span) => span.copy_to(out),
            Reread::File(path) => {
                let io = |source| Error::Io {
                    path: path.display().to_string(),
                    source,
                };
                let mut file = std::fs::File::open(path).map_err(io)?;
                std::io::copy(&mut file, out).map_err(io)
            }
            Reread::Held => {
                out.write_all(held).map_err(|source| Error::Io {
                    path: "<mail in memory>".to_owned(),
                    source,
                })?;
                Ok(held.len() as u64)
            }
        }
    }
}

/// The head of a mail for naming it: at most `mbox::HEAD_LIMIT` bytes.
pub fn head_of(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(mbox::HEAD_LIMIT)]
}

/// What the caller wants after handing over one mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What a source needs to know about what was already taken.
pub struct Resume<'a> {
    /// The cursor of the last stored mail of this source, if any.
    pub cursor: Option<&'a str>,
    /// Whether an item key was already taken (used where a cursor alone
    /// cannot tell, e.g. Maildir names, or after an IMAP UIDVALIDITY change).
    pub seen: &'a dyn Fn(&str) -> bool,
}

/// Summary of one fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Mails handed to the sink.
    pub delivered: u64,
    /// Items skipped because `Resume::seen` said so.
    pub skipped_seen: u64,
    /// Problems that did not stop the fetch (e.g. a truncated last mail left
    /// for the next run), one sentence each naming the input.
    pub warnings: Vec<String>,
    /// The source's total size if known (mbox bytes, Maildir/IMAP message
    /// count), for a progress bar.
    pub total_hint: Option<u64>,
    /// The cursor after the last item looked at, when items were skipped
    /// after the last delivered one (an over-limit mail at the end of an
    /// mbox): persisting it keeps the next run from warning again.
    pub cursor: Option<String>,
}

/// The sink receives every mail in order; an error from the sink aborts the
/// fetch and is returned as `Error::Sink`.
pub type Sink<'a> =
    dyn FnMut(RawMail) -> Result<Flow, Box<dyn std::error::Error + Send + Sync>> + 'a;

pub trait MailSource {
    /// Stable key of this source in the state database, e.g.
    /// `mbox:/abs/path`, `maildir:/abs/path`, `imap://user@host:port/INBOX`.
    fn key(&self) -> String;

    /// Reads every mail after `resume` and hands it to `sink`, in source
    /// order. Memory use is bounded by the largest single mail.
    fn fetch(&mut self, resume: &Resume<'_>, sink: &mut Sink<'_>) -> Result<FetchStats, Error>;

    /// Blocks until new mail may have arrived or `timeout` passed; true when
    /// the source knows new mail arrived. Sources that cannot be notified
    /// (files) poll: they sleep `timeout` and answer true.
    fn wait_for_mail(&mut self, timeout: std::time::Duration) -> Result<bool, Error> {
        std::thread::sleep(timeout);
        Ok(true)
    }
}

/// Tests: every mail `src` hands over after `cursor`, nothing counted as
/// seen before, and the stats.
#[cfg(test)]
pub(crate) fn fetch_all(
    src: &mut dyn MailSource,
    cursor: Option<&str>,
) -> Result<(Vec<RawMail>, FetchStats), Error> {
    let never = |_: &str| false;
    let mut got = Vec::new();
    let stats = src.fetch(
        &Resume {
            cursor,
            seen: &never,
        },
        &mut |m| {
            got.push(m);
            Ok(Flow::Continue)
        },
    )?;
    Ok((got, stats))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_key}: stored cursor {cursor:?} is not valid for this source: {reason}")]
    BadCursor {
        source_key: String,
        cursor: String,
        reason: String,
    },
    #[error("IMAP server {server} unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("IMAP server {server}: {reason}")]
    Imap { server: String, reason: String },
    #[error("IMAP server {server} refused login for user {user}: {reason}")]
    AuthFailed {
        server: String,
        user: String,
        reason: String,
    },
    /// The server is fine but the configured mailbox cannot be opened
    /// (missing, no permission): a configuration fault, not infrastructure.
    #[error("IMAP server {server}: cannot open mailbox {mailbox:?}: {reason}")]
    MailboxUnavailable {
        server: String,
        mailbox: String,
        reason: String,
    },
    /// The archive behind a public-inbox `url` could not be fetched: the
    /// network or the server (names the URL, without its password).
    #[error("cannot fetch the public-inbox archive {url}: {source}")]
    ArchiveFetch {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storing mail {item} failed: {source}")]
    Sink {
        item: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True when the fault is the network or the server, not the input:
    /// the CLI maps these to exit code 3.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Imap { .. } | Error::ArchiveFetch { .. }
        )
    }
}
