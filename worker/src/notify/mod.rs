//! Report mail delivery: a composed [`Report`] made into an RFC 5322
//! message and sent through SMTP (STARTTLS/TLS, auth) or a local sendmail
//! ([`send`]). Composing what a report says is the report stage's; keeping
//! unsent reports is the outbox's.

pub mod send;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("report {subject:?}: {message}")]
    Message { subject: String, message: String },
    /// The transport could not deliver; the reports stay in the outbox.
    #[error("report: {queued} report(s) not sent, kept in the outbox: {message}")]
    NotSent { queued: usize, message: String },
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
