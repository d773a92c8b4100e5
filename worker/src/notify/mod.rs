//! Report mail delivery: a composed [`Report`] made into an RFC 5322
//! message and sent through SMTP (STARTTLS/TLS, auth) or a local sendmail
//! ([`send`]). Composing what a report says is the report stage's; keeping
//! unsent reports is the outbox's.

pub mod send;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("report {subject:?}: {address:?} is not a mail address: {source}")]
    Address {
        subject: String,
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("report {subject:?}: {source}")]
    Message {
        subject: String,
        #[source]
        source: lettre::error::Error,
    },
    /// The transport could not deliver (or is not set up); the reports
    /// stay in the outbox. `message` is what went wrong, as the outbox
    /// recorded it, or the part of the setup that failed (then `source`
    /// says why).
    #[error(
        "report: {queued} report(s) not sent, kept in the outbox: {message}{}",
        source.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
    )]
    NotSent {
        queued: usize,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Stable within a run: the outbox never holds a report twice.
    pub key: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    /// Message-ID replied to (no `<>`).
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub text: String,
    pub html: Option<String>,
}
