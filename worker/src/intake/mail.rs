//! Parsing one raw mail into what intake needs (pure): ids, threading
//! headers, author, date, the decoded text body and whether it holds a diff.
//! OWNER: subject/mail helper. The types below are the contract.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Author {
    pub name: Option<String>,
    pub email: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimits {
    /// Largest accepted raw mail in bytes.
    pub max_size: usize,
    /// Most MIME parts looked at.
    pub max_parts: usize,
}

impl Default for MailLimits {
    fn default() -> Self {
        Self {
            max_size: 64 * 1024 * 1024,
            max_parts: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedMail {
    /// Without angle brackets. Synthesised as `<sha256-hex-prefix>@patchline.invalid`
    /// from the raw bytes when the mail has none.
    pub message_id: String,
    pub message_id_synthesized: bool,
    /// Decoded (RFC 2047) and unfolded; empty when absent.
    pub subject: String,
    pub from: Option<Author>,
    /// Unix seconds from the `Date:` header, if it parsed.
    pub date: Option<i64>,
    /// Message-IDs without angle brackets.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// The `List-Id` value without angle brackets and display name.
    pub list_id: Option<String>,
    /// The text a `git am` would read: decoded text/plain body, or the
    /// decoded patch attachment(s) appended.
    pub body: String,
    pub has_diff: bool,
    /// sha256 hex of the raw bytes.
    pub content_hash: String,
    /// sha256 hex of the diff part with whitespace and `index` lines
    /// normalised: equal for the same patch sent twice.
    pub patch_hash: Option<String>,
    /// Recoverable damage, one sentence each.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mail is empty")]
    Empty,
    #[error("mail is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a mail: {reason}")]
    NotAMail { reason: String },
}

pub fn parse_mail(_raw: &[u8], _limits: &MailLimits) -> Result<ParsedMail, Error> {
    Err(Error::NotAMail {
        reason: "not implemented".into(),
    })
}
