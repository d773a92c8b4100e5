//! Parsing one raw mail into what intake needs (pure): ids, threading
//! headers, author, date, the decoded text a `git am` would read, and
//! whether it holds a diff.
//!
//! Lenient with limits, as mail-parser itself: recoverable damage (no
//! Message-ID, 8-bit headers, broken MIME) becomes a warning on the result;
//! only input that is not a mail at all, or is over the size limit, fails.
//! Never panics on any input.

use mail_parser::{HeaderName, HeaderValue, MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Author {
    pub name: Option<String>,
    pub email: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimits {
    /// Largest accepted raw mail in bytes.
    pub max_size: usize,
    /// Most MIME parts looked at (the rest are ignored, with a warning).
    pub max_parts: usize,
    /// Largest header block in bytes; a mail with a larger one is refused
    /// before it is parsed (no list relays a header block this size).
    pub max_header_size: usize,
    /// Deepest nesting of multiparts; a deeper mail is refused. Real mails
    /// nest two or three levels (mixed > alternative > related).
    pub max_depth: usize,
}

impl Default for MailLimits {
    fn default() -> Self {
        Self {
            max_size: 64 * 1024 * 1024,
            max_parts: 256,
            max_header_size: 1024 * 1024,
            max_depth: 32,
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
    /// sha256 hex of what the mail says (see [`content_fingerprint`]):
    /// equal for two deliveries of one mail that differ only in transport
    /// headers, recipients or a list footer.
    pub fingerprint: String,
    /// Set when only the head of a mail over the size limit was parsed
    /// (see [`parse_head`]): the mail is stored as an error, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oversize: Option<Oversize>,
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
    #[error("mail {message_id}: the header block is {size} bytes, over the limit of {limit} bytes")]
    HeaderTooLarge {
        message_id: String,
        size: usize,
        limit: usize,
    },
    #[error("mail {message_id}: MIME parts nest {depth} deep, over the limit of {limit}")]
    TooDeep {
        message_id: String,
        depth: usize,
        limit: usize,
    },
}

/// The parser, told to read only the headers intake uses, each with the
/// parser mail-parser's default gives it (MIME headers included, which
/// decide how parts are decoded); every other header (long `Received:`
/// chains, `To:`/`Cc:` lists of dozens of addresses) is skipped rather
/// than parsed into values nothing reads.
static PARSER: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .header_comma_separated(HeaderName::ContentLanguage)
        .header_text(HeaderName::Subject)
        .header_address(HeaderName::From)
        .header_date(HeaderName::Date)
        .header_id(HeaderName::MessageId)
        .header_id(HeaderName::InReplyTo)
        .header_id(HeaderName::References)
        .header_address(HeaderName::ListId)
        .default_header_ignore()
});

/// The domain of synthesised Message-IDs (RFC 2606 reserves `.invalid`).
pub const SYNTHETIC_DOMAIN: &str = "patchline.invalid";

pub fn synthetic_message_id(content_hash: &str) -> String {
    format!(
        "{}@{SYNTHETIC_DOMAIN}",
        &content_hash[..32.min(content_hash.len())]
    )
}

pub fn parse_mail(raw: &[u8], limits: &MailLimits) -> Result<ParsedMail, Error> {
    parse_mail_hashed(raw, &hex::encode(Sha256::digest(raw)), limits)
}

/// `parse_mail` for a caller that already has the sha256 hex of `raw`.
pub fn parse_mail_hashed(
    raw: &[u8],
    content_hash: &str,
    limits: &MailLimits,
) -> Result<ParsedMail, Error> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty);
    }
    if raw.len() > limits.max_size {
        return Err(Error::TooLarge {
            size: raw.len(),
            limit: limits.max_size,
        });
    }
    let content_hash = content_hash.to_owned();
    let mut warnings = Vec::new();
    let header_end = header_block_len(raw);
    if header_end > limits.max_header_size {
        return Err(Error::HeaderTooLarge {
            message_id: raw_message_id(&raw[..header_end]),
            size: header_end,
            limit: limits.max_header_size,
        });
    }
    if !looks_like_headers(&raw[..header_end]) {
        return Err(Error::NotAMail {
            reason: "it does not start with header lines (`Name: value`)".into(),
        });
    }
    if raw[..header_end].iter().any(|b| *b >= 0x80) {
        warnings.push(if std::str::from_utf8(&raw[..header_end]).is_ok() {
            "headers contain raw 8-bit (UTF-8) text instead of RFC 2047 encoded words".to_owned()
        } else {
            "headers contain bytes that are not valid UTF-8: decoded with replacement characters"
                .to_owned()
        });
    }
    let message = PARSER.parse(raw).ok_or_else(|| Error::NotAMail {
        reason: "no header could be parsed".into(),
    })?;

    let depth = mime_depth(&message.parts);
    if depth > limits.max_depth {
        return Err(Error::TooDeep {
            message_id: raw_message_id(&raw[..header_end]),
            depth,
            limit: limits.max_depth,
        });
    }
    let (message_id, message_id_synthesized) = match message.message_id() {
        Some(id) if !id.trim().is_empty() => (strip_angles(id), false),
        _ => {
            warnings
                .push("no Message-ID header: a stable id was made from the mail's content".into());
            (synthetic_message_id(&content_hash), true)
        }
    };
    let subject = message.subject().map(unfold).unwrap_or_default();
    let from = message.from().and_then(|a| a.first()).and_then(|addr| {
        let email = addr.address.as_deref()?.trim().to_ascii_lowercase();
        (!email.is_empty()).then(|| Author {
            name: addr
                .name
                .as_deref()
                .map(|n| unfold(n.trim_matches('"')))
                .filter(|n| !n.is_empty()),
            email,
        })
    });
    if from.is_none() {
        warnings.push("no usable From address".into());
    }
    let date = message.date().map(|d| d.to_timestamp());
    if date.is_none() && message.header_raw("Date").is_some() {
        warnings.push("the Date header could not be parsed".into());
    }
    let in_reply_to = ids(message.in_reply_to()).into_iter().next();
    let references = ids(message.references());
    let list_id = list_id(message.list_id());

    let mut body = String::new();
    let mut looked_at = 0usize;
    // mail-parser offers an HTML part as the text body when there is no
    // text/plain alternative: look at what the parts really are.
    let html_only = message.html_body_count() > 0
        && message.text_body.iter().all(|id| {
            message
                .parts
                .get(*id as usize)
                .is_none_or(|p| matches!(p.body, PartType::Html(_)))
        });
    for (i, part) in message.parts.iter().enumerate() {
        if part.is_encoding_problem {
            warnings.push(format!(
                "MIME part {i} could not be decoded as declared: used as is"
            ));
        }
    }
    // Text bodies first, in order, then attachments that carry a patch.
    for id in &message.text_body {
        looked_at += 1;
        if looked_at > limits.max_parts {
            break;
        }
        if let Some(part) = message.parts.get(*id as usize)
            && let PartType::Text(text) = &part.body
        {
            push_text(&mut body, text);
        }
    }
    for id in &message.attachments {
        looked_at += 1;
        if looked_at > limits.max_parts {
            break;
        }
        let Some(part) = message.parts.get(*id as usize) else {
            continue;
        };
        if !is_patch_attachment(part) {
            continue;
        }
        match &part.body {
            PartType::Text(text) => push_text(&mut body, text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                push_text(&mut body, &String::from_utf8_lossy(bytes))
            }
            _ => {}
        }
    }
    if looked_at > limits.max_parts {
        warnings.push(format!(
            "more than {} MIME parts: the rest were ignored",
            limits.max_parts
        ));
    }
    if html_only {
        // Patches sent as HTML are mangled by design; say so rather than
        // scraping them.
        warnings.push("HTML-only mail: no text/plain part to read a patch from".into());
        body.clear();
    }
    let diff_start = find_diff(&body);
    let patch_hash = diff_start.map(|start| patch_hash(&body[start..]));
    let fingerprint = fingerprint_at(&subject, from.as_ref(), date, &body, diff_start);
    Ok(ParsedMail {
        message_id,
        message_id_synthesized,
        subject,
        from,
        date,
        in_reply_to,
        references,
        list_id,
        has_diff: diff_start.is_some(),
        body,
        content_hash,
        patch_hash,
        fingerprint,
        oversize: None,
        warnings,
    })
}

/// The `Message-ID` of a refused mail as written (`<...>`), for its error:
/// the mail was not parsed, but the report must still say which it was.
fn raw_message_id(header: &[u8]) -> String {
    byte_lines(header)
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|b| *b == b':')?);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"message-id")
                .then(|| String::from_utf8_lossy(value[1..].trim_ascii()).into_owned())
        })
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "without a Message-ID".into())
}

/// How deep multiparts nest below the root part (0 for a single part),
/// walked without recursion so no depth can exhaust the stack.
fn mime_depth(parts: &[mail_parser::MessagePart<'_>]) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(0usize, 0usize)];
    // Each part is visited once at most, whatever the child lists say.
    let mut seen = vec![false; parts.len()];
    while let Some((id, depth)) = stack.pop() {
        let Some(part) = parts.get(id) else { continue };
        if std::mem::replace(&mut seen[id], true) {
            continue;
        }
        if let PartType::Multipart(children) = &part.body {
            deepest = deepest.max(depth + 1);
            stack.extend(children.iter().map(|c| (*c as usize, depth + 1)));
        }
    }
    deepest
}

/// A mail over the size limit, of which only the head was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Oversize {
    pub size: u64,
    pub limit: u64,
}

impl Oversize {
    /// The error recorded for the mail.
    pub fn error(&self) -> String {
        format!(
            "mail is {} bytes, over the limit of {} bytes (intake.max_mail_size): archived, not parsed; the first collect after the limit is raised parses it",
            self.size, self.limit
        )
    }
}

/// Parses the head of a mail over the size limit (its header block, as
/// the source kept it): its ids, subject, sender and date name it in the
/// report. The fingerprint is the content hash of the whole mail, so only
/// the same bytes count as its duplicate.
pub fn parse_head(
    head: &[u8],
    content_hash: &str,
    oversize: Oversize,
) -> Result<ParsedMail, Error> {
    let mut head = head[..header_block_len(head)].to_vec();
    if !head.ends_with(b"\n") {
        head.extend_from_slice(b"\n");
    }
    let limits = MailLimits {
        max_size: head.len(),
        max_parts: 1,
        ..MailLimits::default()
    };
    let mut parsed = parse_mail_hashed(&head, content_hash, &limits)?;
    parsed.body = String::new();
    parsed.has_diff = false;
    parsed.patch_hash = None;
    parsed.fingerprint = content_hash.to_owned();
    parsed.oversize = Some(oversize);
    Ok(parsed)
}

/// An attachment that carries a patch (as `git am` reads them): named
/// `*.patch`/`*.diff`, or typed `text/x-patch`, `text/x-diff`,
/// `text/plain`.
pub fn is_patch_attachment(part: &mail_parser::MessagePart<'_>) -> bool {
    let name = part.attachment_name().unwrap_or("").to_ascii_lowercase();
    let ctype = part
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".patch")
        || name.ends_with(".diff")
        || ctype.starts_with("text/x-patch")
        || ctype.starts_with("text/x-diff")
        || ctype == "text/plain"
}

fn push_text(body: &mut String, text: &str) {
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    body.push_str(text);
}

/// Length of the header block (up to and including the blank line).
fn header_block_len(raw: &[u8]) -> usize {
    let mut pos = 0;
    for line in byte_lines(raw) {
        pos += line.len();
        if line == b"\n" || line == b"\r\n" {
            break;
        }
    }
    pos
}

/// `bytes.split_inclusive(|b| *b == b'\n')`, found with the `memchr`
/// crate's vectorised search (std's is byte by byte for lines this
/// short, and every mail is looked at line by line several times).
fn byte_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// `text.split_inclusive('\n')`, as [`byte_lines`] finds them.
fn str_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // `\n` is ASCII: the cut is on a character boundary.
        let end = memchr::memchr(b'\n', rest.as_bytes()).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// A line of [`str_lines`] as `str::lines` gives it: without its `\n` or
/// `\r\n`.
fn without_newline(line: &str) -> &str {
    match line.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => line,
    }
}

/// The first line must be a header field (`Name: value`, name of printable
/// ASCII without spaces) — what every RFC 5322 message starts with.
fn looks_like_headers(block: &[u8]) -> bool {
    let first = block.split(|b| *b == b'\n').next().unwrap_or_default();
    match first.iter().position(|b| *b == b':') {
        Some(colon) if colon > 0 => first[..colon]
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b':'),
        _ => false,
    }
}

fn strip_angles(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn unfold(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<String> = match value {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    raw.iter()
        .flat_map(|t| t.split_whitespace())
        .map(strip_angles)
        .filter(|id| !id.is_empty())
        .collect()
}

fn list_id(value: &HeaderValue<'_>) -> Option<String> {
    let text = match value {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.first()?.to_string(),
        HeaderValue::Address(a) => a.first()?.address.as_deref()?.to_owned(),
        _ => return None,
    };
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(a), Some(b)) if a < b => &text[a + 1..b],
        _ => text.as_str(),
    };
    let id = inner.trim().to_ascii_lowercase();
    (!id.is_empty()).then_some(id)
}

/// Byte offset of the first line of a unified diff in `body`: a
/// `diff --git ` line, or a `--- ` line followed by `+++ ` and an `@@ `
/// hunk header. A lone `---` (the separator before a diffstat) is not one.
pub fn find_diff(body: &str) -> Option<usize> {
    let mut offset = 0;
    let lines = str_lines(body);
    let mut prev: [Option<(usize, &str)>; 2] = [None, None];
    for line in lines {
        let start = offset;
        offset += line.len();
        let l = line.trim_end_matches(['\n', '\r']);
        if l.starts_with("diff --git ") {
            return Some(start);
        }
        if l.starts_with("@@ -")
            && let [Some((minus_at, minus)), Some((_, plus))] = prev
            && minus.starts_with("--- ")
            && plus.starts_with("+++ ")
        {
            return Some(minus_at);
        }
        prev = [prev[1], Some((start, l))];
    }
    None
}

/// Hash of a diff that ignores what changes when the same patch is sent
/// again: `index` lines (abbreviation length), trailing whitespace, the
/// signature after `-- `, and line endings.
fn patch_hash(diff: &str) -> String {
    let mut h = Sha256::new();
    for line in str_lines(diff).map(without_newline) {
        if line == "-- " {
            break;
        }
        if line.starts_with("index ") {
            continue;
        }
        h.update(line.trim_end().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// sha256 hex of what a mail says: its subject, sender, date and body
/// text, without what a list or a transport adds. Headers other than those
/// (Received, Return-Path, Delivered-To, DKIM/ARC, List-*, X-*, To, Cc) are
/// not in it; neither is anything after the patch (a list footer, a
/// signature), a trailing `____` footer of a mail without a patch, line
/// endings, nor trailing white space.
pub fn content_fingerprint(
    subject: &str,
    from: Option<&Author>,
    date: Option<i64>,
    body: &str,
) -> String {
    fingerprint_at(subject, from, date, body, find_diff(body))
}

/// [`content_fingerprint`] for a caller that already looked for the diff
/// (`diff_start` is `find_diff(body)`).
fn fingerprint_at(
    subject: &str,
    from: Option<&Author>,
    date: Option<i64>,
    body: &str,
    diff_start: Option<usize>,
) -> String {
    let mut h = Sha256::new();
    h.update(subject.as_bytes());
    h.update(b"\0");
    if let Some(a) = from {
        h.update(a.email.as_bytes());
        h.update(b"\0");
        h.update(a.name.as_deref().unwrap_or("").as_bytes());
    }
    h.update(b"\0");
    h.update(date.map(|d| d.to_string()).unwrap_or_default().as_bytes());
    h.update(b"\0");
    let text = match diff_start {
        Some(start) => &body[..patch_end(body, start)],
        None => without_footer(body),
    };
    // Trailing empty lines are not hashed: empty lines are held back
    // until a line with text follows them.
    let mut held_back = 0usize;
    for line in str_lines(text).map(without_newline).map(str::trim_end) {
        if line.is_empty() {
            held_back += 1;
            continue;
        }
        for _ in 0..std::mem::take(&mut held_back) {
            h.update(b"\n");
        }
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Byte offset just after the last line of the diff starting at `start`:
/// hunks are counted by their `@@ -a,b +c,d @@` header, so what follows the
/// last hunk (`-- ` and a version, a list footer) is not the patch. A
/// binary patch is taken to the end.
fn patch_end(body: &str, start: usize) -> usize {
    const HEADERS: [&str; 15] = [
        "diff ",
        "index ",
        "--- ",
        "+++ ",
        "old mode ",
        "new mode ",
        "deleted file mode ",
        "new file mode ",
        "similarity index ",
        "dissimilarity index ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
        "Binary files ",
    ];
    let mut end = start;
    let mut offset = start;
    // Lines left in the current hunk: (old, new).
    let mut left = (0u64, 0u64);
    for line in str_lines(&body[start..]) {
        offset += line.len();
        let l = line.trim_end_matches(['\n', '\r']);
        if left != (0, 0) {
            let in_hunk = match l.as_bytes().first() {
                // An empty line is context whose space a mailer ate.
                Some(b' ') | None => {
                    left = (left.0.saturating_sub(1), left.1.saturating_sub(1));
                    true
                }
                Some(b'-') => {
                    left.0 = left.0.saturating_sub(1);
                    true
                }
                Some(b'+') => {
                    left.1 = left.1.saturating_sub(1);
                    true
                }
                Some(b'\\') => true,
                _ => {
                    left = (0, 0);
                    false
                }
            };
            if in_hunk {
                end = offset;
                continue;
            }
        }
        if l == "GIT binary patch" {
            return body.len();
        }
        if let Some(counts) = hunk_counts(l) {
            left = counts;
            end = offset;
        } else if l.starts_with('\\') || HEADERS.iter().any(|h| l.starts_with(h)) {
            end = offset;
        } else if !l.is_empty() {
            break;
        }
    }
    end
}

/// The line counts of a hunk header `@@ -a[,b] +c[,d] @@`.
fn hunk_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let count = |range: &str| match range.split_once(',') {
        Some((_, n)) => n.parse().ok(),
        None => range.parse::<u64>().ok().map(|_| 1),
    };
    Some((count(old)?, count(new)?))
}

/// `body` without a mailing-list footer: a line of ten or more `_` and at
/// most a dozen lines after it, at the end (Mailman's form).
fn without_footer(body: &str) -> &str {
    let mut offset = 0;
    let mut footer = None;
    let mut after = 0;
    for line in str_lines(body) {
        let l = line.trim_end();
        if l.len() >= 10 && l.bytes().all(|b| b == b'_') {
            footer = Some(offset);
            after = 0;
        } else {
            after += 1;
        }
        offset += line.len();
    }
    match footer {
        Some(at) if after <= 12 => &body[..at],
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_splitting_is_what_std_does() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\r\nb",
            "a\r\n\r\nb\n",
            "x\r",
            "x\ry\n\n",
            "\n\nlast",
            "ünï\ncödé\r\n",
        ] {
            let ours: Vec<&str> = str_lines(text).collect();
            let std: Vec<&str> = text.split_inclusive('\n').collect();
            assert_eq!(ours, std, "{text:?}");
            let ours: Vec<&[u8]> = byte_lines(text.as_bytes()).collect();
            let std: Vec<&[u8]> = text.as_bytes().split_inclusive(|b| *b == b'\n').collect();
            assert_eq!(ours, std, "{text:?}");
            let ours: Vec<&str> = str_lines(text).map(without_newline).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mail")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Each fixture with LF and with CRLF line endings.
    pub(crate) fn both_endings(raw: &[u8]) -> [Vec<u8>; 2] {
        // Byte-wise, so invalid UTF-8 in a fixture stays invalid.
        let mut lf = Vec::with_capacity(raw.len());
        for (i, b) in raw.iter().enumerate() {
            if *b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                continue;
            }
            lf.push(*b);
        }
        let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 16);
        for b in &lf {
            if *b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(*b);
        }
        [lf, crlf]
    }

    fn parse(raw: &[u8]) -> ParsedMail {
        parse_mail(raw, &MailLimits::default()).unwrap()
    }

    #[test]
    fn plain_patch() {
        for raw in both_endings(&fixture("plain-patch.eml")) {
            let m = parse(&raw);
            assert_eq!(m.message_id, "20261124090000.1234-1-ada@example.org");
            assert!(!m.message_id_synthesized);
            assert_eq!(m.subject, "[PATCH 1/2] hello: greet the world");
            let from = m.from.clone().unwrap();
            assert_eq!(from.email, "ada@example.org");
            assert_eq!(from.name.as_deref(), Some("Ada Contributor"));
            assert_eq!(m.date, Some(1_795_510_800));
            assert_eq!(m.in_reply_to.as_deref(), Some("cover.1234@example.org"));
            assert_eq!(m.references, ["cover.1234@example.org"]);
            assert_eq!(m.list_id.as_deref(), Some("hello-devel.example.org"));
            assert!(m.has_diff);
            assert!(m.patch_hash.is_some());
            assert!(m.warnings.is_empty(), "{:?}", m.warnings);
            assert!(m.body.contains("Signed-off-by: Ada"));
        }
    }

    #[test]
    fn encoded_and_folded_subject_and_author() {
        for raw in both_endings(&fixture("encoded-subject.eml")) {
            let m = parse(&raw);
            assert_eq!(
                m.subject,
                "[PATCH v2] qemu: réparer le démarrage après une mise à jour"
            );
            assert_eq!(m.from.unwrap().name.as_deref(), Some("Jérôme Prüfer"));
            assert!(m.has_diff);
        }
    }

    #[test]
    fn base64_and_quoted_printable_bodies_are_decoded() {
        for name in ["base64-patch.eml", "qp-patch.eml"] {
            let [lf, crlf] = both_endings(&fixture(name));
            let a = parse(&lf);
            let b = parse(&crlf);
            assert!(a.has_diff, "{name}: {}", a.body);
            assert!(a.body.contains("+int answer = 42;"), "{name}: {}", a.body);
            assert!(b.has_diff, "{name} CRLF");
        }
        // The same patch sent plain, base64 and quoted-printable hashes equal.
        let hashes: Vec<_> = ["base64-patch.eml", "qp-patch.eml"]
            .iter()
            .map(|n| parse(&fixture(n)).patch_hash.unwrap())
            .collect();
        assert_eq!(hashes[0], hashes[1]);
    }

    #[test]
    fn patch_as_attachment_is_read() {
        for raw in both_endings(&fixture("attachment-patch.eml")) {
            let m = parse(&raw);
            assert!(m.has_diff, "{}", m.body);
            assert!(m.body.starts_with("Please apply"), "{}", m.body);
            assert!(m.body.contains("diff --git a/Makefile b/Makefile"));
        }
    }

    #[test]
    fn html_only_mail_has_no_diff_and_says_why() {
        for raw in both_endings(&fixture("html-only.eml")) {
            let m = parse(&raw);
            assert!(!m.has_diff);
            assert!(
                m.warnings.iter().any(|w| w.contains("HTML-only")),
                "{:?}",
                m.warnings
            );
        }
    }

    #[test]
    fn missing_message_id_gets_a_stable_synthetic_one() {
        let raw = b"From: a@x\nSubject: [PATCH] x\n\nbody\n";
        let a = parse(raw);
        let b = parse(raw);
        assert!(a.message_id_synthesized);
        assert_eq!(a.message_id, b.message_id);
        assert!(a.message_id.ends_with("@patchline.invalid"));
        assert!(a.warnings.iter().any(|w| w.contains("Message-ID")));
    }

    #[test]
    fn deep_mime_and_huge_header_blocks_are_refused_naming_the_mail() {
        let limits = MailLimits {
            max_header_size: 200,
            max_depth: 3,
            ..MailLimits::default()
        };
        let nested = |depth: usize| {
            let mut m = String::from("From: a@x\nMessage-ID: <deep@x>\nMIME-Version: 1.0\n");
            for i in 0..depth {
                m.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
                ));
            }
            m.push_str("Content-Type: text/plain\n\nx\n");
            for i in (0..depth).rev() {
                m.push_str(&format!("--b{i}--\n"));
            }
            m
        };
        assert!(parse_mail(nested(3).as_bytes(), &limits).is_ok());
        let e = parse_mail(nested(4).as_bytes(), &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mail <deep@x>: MIME parts nest 4 deep, over the limit of 3"
        );
        let big = format!("Message-ID: <big@x>\n{}\nbody\n", "X-Pad: y\n".repeat(30));
        let e = parse_mail(big.as_bytes(), &limits).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("mail <big@x>: the header block is 291 bytes, over the limit of 200"),
            "{e}"
        );
    }

    #[test]
    fn invalid_input_errors_are_clear() {
        let limits = MailLimits {
            max_size: 100,
            max_parts: 4,
            ..MailLimits::default()
        };
        assert!(matches!(parse_mail(b"", &limits), Err(Error::Empty)));
        assert!(matches!(parse_mail(b"\n\n", &limits), Err(Error::Empty)));
        let big = vec![b'a'; 101];
        let e = parse_mail(&big, &limits).unwrap_err().to_string();
        assert!(e.contains("101 bytes") && e.contains("100"), "{e}");
        let e = parse_mail(b"\x00\x01\x02 binary junk\n", &limits)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("not a mail"), "{e}");
    }

    #[test]
    fn eight_bit_and_invalid_utf8_headers_warn() {
        let raw = b"From: J\xc3\xa9r\xc3\xb4me <j@x>\nSubject: [PATCH] caf\xe9\nMessage-Id: <8@x>\n\nbody\n";
        let m = parse(raw);
        assert!(m.subject.starts_with("[PATCH] caf"));
        assert!(
            m.warnings.iter().any(|w| w.contains("not valid UTF-8")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn a_50_mb_mail_parses_under_a_64_mb_limit() {
        let mut raw = b"From: a@x\nSubject: [PATCH] big\nMessage-Id: <big@x>\n\nbig change\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1,800000 @@\n".to_vec();
        while raw.len() < 50 * 1024 * 1024 {
            raw.extend_from_slice(
                b"+a line of a very large generated file, sixty-four bytes long..\n",
            );
        }
        let m = parse(&raw);
        assert!(m.has_diff);
        assert_eq!(m.message_id, "big@x");
    }

    #[test]
    fn bad_corpus_gives_clear_results() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bad");
        let expect: &[(&str, Result<&str, &str>)] = &[
            ("no-message-id.eml", Ok("no Message-ID")),
            ("invalid-utf8-headers.eml", Ok("not valid UTF-8")),
            ("malformed-mime.eml", Ok("")),
            ("dup-id-a.eml", Ok("")),
            ("dup-id-b.eml", Ok("")),
            ("empty.eml", Err("mail is empty")),
            ("binary-garbage.eml", Err("not a mail")),
            ("headers-only.eml", Ok("")),
            ("bad-date-and-from.eml", Ok("From")),
        ];
        let mut listed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            listed += 1;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (_, want) = expect
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} has no expectation here"));
            for raw in both_endings(&std::fs::read(&path).unwrap()) {
                match (parse_mail(&raw, &MailLimits::default()), want) {
                    (Ok(m), Ok(warning)) => assert!(
                        warning.is_empty() || m.warnings.iter().any(|w| w.contains(warning)),
                        "{name}: {:?}",
                        m.warnings
                    ),
                    (Err(e), Err(msg)) => {
                        let text = e.to_string();
                        assert!(text.contains(msg) && !text.contains('\n'), "{name}: {text}");
                    }
                    (got, _) => panic!("{name}: unexpected {got:?}"),
                }
            }
        }
        assert_eq!(listed, expect.len());
    }

    #[test]
    fn diff_detection_is_exact() {
        let cases = [
            ("diff --git a/x b/x\n", true),
            ("text\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", true),
            ("Regards,\n---\nsig\n", false),
            ("--- a/x\nsome text\n@@ -1 +1 @@\n", false),
            ("see diff --git in the docs\n", false),
        ];
        for (body, want) in cases {
            assert_eq!(find_diff(body).is_some(), want, "{body:?}");
        }
    }

    /// The same mail as delivered by the list (Received, DKIM/ARC, List-*,
    /// X-* headers, more recipients, a footer after the patch) has the
    /// fingerprint of the mail as sent; a change to what it says does not.
    #[test]
    fn fingerprint_ignores_transport_and_sees_content() {
        let sent = fixture("plain-patch.eml");
        let text = String::from_utf8(sent.clone()).unwrap();
        let same = [
            fixture("plain-patch-via-list.eml"),
            text.replace(
                "To: hello-devel@example.org\n",
                "To: other@example.com\nCc: hello-devel@example.org\n",
            )
            .into_bytes(),
            format!("{text}\n--\nYou received this because you are subscribed.\n").into_bytes(),
        ];
        let different = [
            text.replace(
                "Subject: [PATCH 1/2] hello: greet",
                "Subject: [PATCH 1/2] hello: meet",
            ),
            text.replace("From: Ada Contributor", "From: Eve Impostor"),
            text.replace("09:00:00 +0000", "09:00:01 +0000"),
            text.replace("the whole world.", "the whole wide world."),
            text.replace("+    printf(\"hello, world,", "+    printf(\"hello, globe,"),
        ];
        for [lf, crlf] in [both_endings(&sent)] {
            let expected = parse(&lf).fingerprint;
            assert_eq!(parse(&crlf).fingerprint, expected, "CRLF");
            for (i, raw) in same.iter().enumerate() {
                for raw in both_endings(raw) {
                    assert_eq!(parse(&raw).fingerprint, expected, "same content {i}");
                }
            }
            for (i, raw) in different.iter().enumerate() {
                for raw in both_endings(raw.as_bytes()) {
                    assert_ne!(parse(&raw).fingerprint, expected, "different content {i}");
                }
            }
        }
    }

    #[test]
    fn a_patch_ends_with_its_last_hunk() {
        let body = "text\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n-- \n2.1\n\n___\nfooter\n";
        let start = find_diff(body).unwrap();
        assert!(body[..patch_end(body, start)].ends_with("No newline at end of file\n"));
        assert_eq!(hunk_counts("@@ -3 +3,4 @@ fn x"), Some((1, 4)));
        assert_eq!(without_footer("a\n__________\nlist\n"), "a\n");
        assert_eq!(without_footer("a\n"), "a\n");
    }
}
