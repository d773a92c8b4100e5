//! What `git am` takes from a patch mail (pure), as `git mailinfo` does:
//! the author (From:, or an in-body `From:`), the author date, the subject
//! cleaned of `Re:` and `[...]` prefixes, the commit message up to the patch
//! break, and the patch text after it.

use mail_parser::{MessageParser, PartType};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not a mail: no header could be parsed")]
    NotAMail,
    #[error("the mail has no author: no usable From header")]
    NoAuthor,
    /// git mailinfo fails on it too ("cannot convert from X to UTF-8"), so
    /// git am refuses the mail; an author spelled as raw `=?...?=` text
    /// would be a guess.
    #[error(
        "the {header} header has an encoded word in charset {charset:?}, which cannot be converted to UTF-8"
    )]
    BadCharset {
        header: &'static str,
        charset: String,
    },
    /// A NUL written as an encoded word (`=00`): git mailinfo refuses it
    /// ("a NUL byte in 'Subject' is not allowed"); a commit holding it is
    /// what `git fsck` flags.
    #[error("the {header} header decodes to a NUL byte, which a commit cannot hold")]
    NulInHeader { header: &'static str },
    /// git am stops with "Patch is empty." on such a mail.
    #[error("the mail {subject:?} has no patch: nothing after the message looks like a diff")]
    NoPatch { subject: String },
}

impl Error {
    /// The cleaned subject, when the mail got that far: what `Applying:`
    /// prints for a mail that then failed.
    pub fn subject(&self) -> &str {
        match self {
            Error::NoPatch { subject } => subject,
            Error::NotAMail
            | Error::NoAuthor
            | Error::BadCharset { .. }
            | Error::NulInHeader { .. } => "",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailInfoOptions {
    /// `--scissors`: drop everything above a `-- >8 --` line.
    pub scissors: bool,
    /// `--keep-cr`: keep `\r` of CRLF lines (off by default, as in `git am`).
    pub keep_cr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailInfo {
    pub author_name: String,
    pub author_email: String,
    /// Seconds since the epoch and the zone offset in seconds east of UTC,
    /// from the `Date:` header (or an in-body `Date:`).
    pub date: Option<(i64, i32)>,
    /// The cleaned subject: the commit's first line.
    pub subject: String,
    /// The whole commit message as `git am` writes it: subject, a blank
    /// line, the body up to the patch break, cleaned like `git stripspace`.
    pub message: String,
    /// The text from the patch break on.
    pub patch: Vec<u8>,
}

/// `git mailinfo`'s `cleanup_subject`: strips `Re:`, `:`, whitespace and
/// `[...]` groups from the front.
pub fn clean_subject(subject: &str) -> String {
    let mut s = subject;
    loop {
        let lower = s.get(..3).map(str::to_ascii_lowercase);
        if lower.as_deref() == Some("re:") && s.len() > 3 {
            s = &s[3..];
        } else if let Some(rest) = s.strip_prefix([' ', '\t', ':']) {
            s = rest;
        } else if s.starts_with('[') {
            match s.find(']') {
                Some(end) => s = &s[end + 1..],
                None => break,
            }
        } else {
            break;
        }
    }
    s.trim().to_owned()
}

/// `git mailinfo`'s patch break: `diff -`, `Index: `, `--- <name>`, or a
/// `---` line with only whitespace after it.
fn is_patch_break(line: &str) -> bool {
    if line.starts_with("diff -") || line.starts_with("Index: ") {
        return true;
    }
    let Some(rest) = line.strip_prefix("---") else {
        return false;
    };
    let rest = rest.trim_end_matches('\n');
    if let Some(name) = rest.strip_prefix(' ')
        && name.chars().next().is_some_and(|c| !c.is_whitespace())
    {
        return true;
    }
    rest.chars().all(char::is_whitespace)
}

fn is_scissors(line: &str) -> bool {
    let t = line.trim();
    (t.contains(">8") || t.contains("8<") || t.contains(">%") || t.contains("%<"))
        && t.chars()
            .all(|c| matches!(c, '-' | ' ' | '>' | '<' | '8' | '%'))
        && t.matches('-').count() >= 2
}

/// `git stripspace`: trailing whitespace removed from every line, runs of
/// blank lines collapsed to one, no blank lines at the start or end, and a
/// final newline.
pub fn stripspace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_blank = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            pending_blank = !out.is_empty();
            continue;
        }
        if pending_blank {
            out.push('\n');
            pending_blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `git interpret-trailers`' separator search: a token of letters, digits
/// and `-` (white space may follow it), then `:`. The token's length, or
/// `None` when the line is no trailer.
fn trailer_token_len(line: &str) -> Option<usize> {
    let mut whitespace = false;
    for (i, c) in line.char_indices() {
        if c == ':' {
            return (i >= 1).then_some(i);
        }
        if !whitespace && (c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        if i > 0 && (c == ' ' || c == '\t') {
            whitespace = true;
            continue;
        }
        break;
    }
    None
}

/// Where the message's trailer block starts (a byte offset), by git's
/// rule (`trailer.c`, `find_trailer_block_start`): the last paragraph, not
/// the title's, if all of its lines are trailers, or if it holds a
/// git-generated one (`Signed-off-by: `, `(cherry picked from commit `)
/// and at least a quarter of its lines are trailers. Indented lines
/// continue the trailer above them.
fn trailer_block_start(message: &str) -> Option<usize> {
    let lines: Vec<(usize, &str)> = message
        .split_inclusive('\n')
        .scan(0, |at, l| {
            let start = *at;
            *at += l.len();
            Some((start, l.trim_end_matches('\n')))
        })
        .collect();
    let title_end = lines
        .iter()
        .position(|(_, l)| l.trim().is_empty())
        .unwrap_or(lines.len());
    let (mut trailers, mut others, mut continuations) = (0usize, 0usize, 0usize);
    let mut recognized = false;
    let mut only_blank = true;
    for &(start, line) in lines[title_end..].iter().rev() {
        if line.trim().is_empty() {
            if only_blank {
                continue;
            }
            others += continuations;
            let block = (recognized && trailers * 3 >= others) || (trailers > 0 && others == 0);
            return block.then_some(start + line.len() + 1);
        }
        only_blank = false;
        if line.starts_with("Signed-off-by: ") || line.starts_with("(cherry picked from commit ") {
            trailers += 1;
            continuations = 0;
            recognized = true;
        } else if trailer_token_len(line).is_some() && !line.starts_with([' ', '\t']) {
            trailers += 1;
            continuations = 0;
        } else if line.starts_with([' ', '\t']) {
            continuations += 1;
        } else {
            others += 1 + continuations;
            continuations = 0;
        }
    }
    None
}

/// `(token, value)` of a trailer line, trimmed.
fn trailer_parts(line: &str) -> Option<(&str, &str)> {
    let len = trailer_token_len(line)?;
    Some((line[..len].trim(), line[len + 1..].trim()))
}

/// Adds `trailers` (`Token: value` lines) at the end of the message's
/// trailer block, as `git interpret-trailers --if-exists addIfDifferent
/// --trailer ...` does: a trailer whose token and value (both compared
/// without case, as git compares them) are already in the block, or were
/// added before it, is left out; a message without a trailer block gets
/// one after a blank line. Existing lines are never rewritten. Returns
/// the message and the trailers that were added.
pub fn append_trailers(message: &str, trailers: &[String]) -> (String, Vec<String>) {
    let mut out = message.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let start = trailer_block_start(&out);
    let mut present: Vec<(String, String)> = start
        .map(|at| {
            out[at..]
                .lines()
                .filter_map(trailer_parts)
                .map(|(t, v)| (t.to_ascii_lowercase(), v.to_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    let mut added = Vec::new();
    for trailer in trailers {
        let Some((token, value)) = trailer_parts(trailer) else {
            continue;
        };
        let key = (token.to_ascii_lowercase(), value.to_lowercase());
        if present.contains(&key) {
            continue;
        }
        present.push(key);
        added.push(format!("{token}: {value}"));
    }
    if added.is_empty() {
        return (message.to_owned(), added);
    }
    // Trailing blank lines are not part of any paragraph.
    while out.ends_with("\n\n") {
        out.pop();
    }
    if start.is_none() && !out.is_empty() {
        out.push('\n');
    }
    for line in &added {
        out.push_str(line);
        out.push('\n');
    }
    (out, added)
}

/// Decodes the RFC 2047 encoded words of a header value as `git mailinfo`
/// does: a word in a charset that cannot be converted is an error (git
/// refuses the mail), white space between two encoded words goes, and the
/// value ends at a NUL byte (git reads headers as C strings; a NUL kept
/// would make a commit `git fsck` flags).
fn decode_header_value(header: &'static str, raw: &str) -> Result<String, Error> {
    let raw = raw.split('\0').next().unwrap_or("");
    let mut out = String::new();
    let mut rest = raw;
    let mut after_word = false;
    while !rest.is_empty() {
        let Some(at) = rest.find("=?") else {
            out.push_str(rest);
            break;
        };
        let (before, word) = rest.split_at(at);
        let decoded =
            encoded_word(word).map_err(|charset| Error::BadCharset { header, charset })?;
        if !(after_word && decoded.is_some() && before.trim().is_empty()) {
            out.push_str(before);
        }
        match decoded {
            Some((text, len)) => {
                out.push_str(&text);
                rest = &word[len..];
                after_word = true;
            }
            None => {
                out.push_str("=?");
                rest = &word[2..];
                after_word = false;
            }
        }
    }
    if out.contains('\0') {
        return Err(Error::NulInHeader { header });
    }
    Ok(out)
}

/// One `=?charset?Q|B?text?=` at the start of `word`: its text and length
/// (`None`: not an encoded word), or the charset that cannot be converted.
fn encoded_word(word: &str) -> Result<Option<(String, usize)>, String> {
    let Some((charset, encoding, text, len)) = encoded_word_parts(word) else {
        return Ok(None);
    };
    let bytes = match encoding {
        "Q" | "q" => decode_q(text),
        _ => decode_b64(text),
    };
    // `charset*language` (RFC 2231) names the charset before the star.
    let charset = charset.split('*').next().unwrap_or(charset);
    let text = if charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii")
    {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        match mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes()) {
            Some(decode) => decode(&bytes),
            None => return Err(charset.to_owned()),
        }
    };
    Ok(Some((text, len)))
}

/// The charset, encoding, text and length of an encoded word at the start
/// of `word`.
fn encoded_word_parts(word: &str) -> Option<(&str, &str, &str, usize)> {
    let inner = word.strip_prefix("=?")?;
    let q1 = inner.find('?')?;
    let encoding = inner.get(q1 + 1..q1 + 2)?;
    if !matches!(encoding, "Q" | "q" | "B" | "b") || inner.get(q1 + 2..q1 + 3) != Some("?") {
        return None;
    }
    let text_start = q1 + 3;
    let end = inner.get(text_start..)?.find("?=")? + text_start;
    Some((&inner[..q1], encoding, &inner[text_start..end], end + 4))
}

fn decode_q(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'=', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'_', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    out
}

/// Base64 as git decodes it: characters outside the alphabet are skipped.
fn decode_b64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `git mailinfo`'s `unquote_quoted_pair`: quoted strings lose their quotes
/// and backslashes, comments keep their parentheses.
fn unquote_quoted_pair(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut literal = false;
                for c in chars.by_ref() {
                    if literal {
                        literal = false;
                    } else if c == '\\' {
                        literal = true;
                        continue;
                    } else if c == '"' {
                        break;
                    }
                    out.push(c);
                }
            }
            '(' => {
                out.push('(');
                let (mut literal, mut depth) = (false, 1);
                for c in chars.by_ref() {
                    if literal {
                        literal = false;
                    } else if c == '\\' {
                        literal = true;
                        continue;
                    } else if c == '(' {
                        depth += 1;
                    } else if c == ')' {
                        depth -= 1;
                        if depth == 0 {
                            out.push(')');
                            break;
                        }
                    }
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// git's `isspace`: ASCII white space only.
fn git_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `cleanup_space`: every run of white space becomes one space.
fn cleanup_space(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_space = false;
    for c in value.chars() {
        if git_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `get_sane_name`: a name that is empty, longer than 60 bytes or holds
/// `@`, `<` or `>` is replaced by the address.
fn sane_name(name: &str, email: &str) -> String {
    if name.is_empty() || name.len() > 60 || name.contains(['@', '<', '>']) {
        email.to_owned()
    } else {
        name.to_owned()
    }
}

/// ident.c's `crud`: what git trims from both ends of a name or address.
fn is_crud(c: char) -> bool {
    c <= ' ' || matches!(c, ',' | ':' | ';' | '<' | '>' | '"' | '\\' | '\'')
}

/// `strbuf_addstr_without_crud`, which `git am` applies to the author it
/// writes: ends trimmed of crud, `<`, `>` and newlines dropped inside.
fn without_crud(value: &str) -> String {
    value
        .trim_matches(is_crud)
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n'))
        .collect()
}

/// The author of a `From:` value exactly as `git mailinfo`'s `handle_from`
/// reads it, malformed values included: the address is the word around
/// the first `@` (brackets optional), the name what is left, so
/// `Name <Name user@host>` gives `user@host` for both (the leftover name
/// holds a `<`). Without an `@`, a `<...>` is the address.
fn git_author(value: &str) -> Option<(String, String)> {
    let value = cleanup_space(value);
    let f = unquote_quoted_pair(&value);
    let Some(at) = f.find('@') else {
        // parse_bogus_from: `John Doe <johndoe>`.
        let bra = value.find('<')?;
        let ket = value[bra..].find('>')? + bra;
        let email = value[bra + 1..ket].to_owned();
        let name = sane_name(value[..bra].trim_matches(git_space), &email);
        return Some((name, email));
    };
    let bytes = f.as_bytes();
    let mut start = at;
    let mut bracket = None;
    while start > 0 {
        let c = bytes[start - 1];
        if c.is_ascii_whitespace() || c == 0x0b {
            break;
        }
        if c == b'<' {
            bracket = Some(start - 1);
            break;
        }
        start -= 1;
    }
    let len = f[start..]
        .find(|c: char| git_space(c) || c == '>')
        .unwrap_or(f.len() - start);
    let email = f[start..start + len].to_owned();
    let end = (start + len + usize::from(start + len < f.len())).min(f.len());
    let mut rest = String::with_capacity(f.len());
    rest.push_str(&f[..start]);
    rest.push_str(&f[end..]);
    if let Some(b) = bracket {
        // git turns the `<` before the address into a space.
        rest.replace_range(b..b + 1, " ");
    }
    let rest = cleanup_space(&rest);
    let mut name = rest.trim_matches(git_space);
    if name.len() >= 2 && name.starts_with('(') && name.ends_with(')') {
        name = &name[1..name.len() - 1];
    }
    let name = sane_name(name, &email);
    Some((name, email))
}

fn date_of(d: &mail_parser::DateTime) -> (i64, i32) {
    let offset =
        (d.tz_hour as i32 * 3600 + d.tz_minute as i32 * 60) * if d.tz_before_gmt { -1 } else { 1 };
    (d.to_timestamp(), offset)
}

/// `text.split_inclusive('\n')`, with one vectorised scan for the line
/// ends: a patch of test data or translations has hundreds of thousands of
/// lines, and str's splitter looks for each end on its own.
fn lines_of(text: &str) -> Vec<&str> {
    let mut lines = Vec::with_capacity(text.len() / 40 + 1);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        // A line end is an ASCII byte: the cut is on a char boundary.
        lines.push(&text[start..=end]);
        start = end + 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

pub fn mailinfo(raw: &[u8], opts: MailInfoOptions) -> Result<MailInfo, Error> {
    let message = MessageParser::default().parse(raw).ok_or(Error::NotAMail)?;
    // The raw header, not mail-parser's address list: git reads malformed
    // values its own way, and the commit must say what `git am` says.
    let mut author = match message.header_raw("From") {
        Some(raw) => git_author(&decode_header_value("From", raw)?),
        None => None,
    };
    // Only checked: mail-parser's decoded subject is the one used.
    if let Some(raw) = message.header_raw("Subject") {
        decode_header_value("Subject", raw)?;
    }
    let mut date = message.date().map(date_of);
    let mut subject = message
        .subject()
        .unwrap_or("")
        // git reads the header as a C string: it ends at a NUL.
        .split('\0')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");

    // The text `git am` reads: text parts, then patch attachments.
    let mut body = String::new();
    for id in message.text_body.iter().chain(&message.attachments) {
        let Some(part) = message.parts.get(*id as usize) else {
            continue;
        };
        let is_attachment = message.attachments.contains(id);
        if is_attachment && !crate::mail::parse::is_patch_attachment(part) {
            continue;
        }
        let text = match &part.body {
            PartType::Text(t) => std::borrow::Cow::Borrowed(t.as_ref()),
            PartType::Binary(b) | PartType::InlineBinary(b) if is_attachment => {
                String::from_utf8_lossy(b)
            }
            _ => continue,
        };
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(&text);
    }
    if !opts.keep_cr && memchr::memchr(b'\r', body.as_bytes()).is_some() {
        body = body.replace("\r\n", "\n");
    }

    // Scissors: everything above the last scissors line is discussion.
    let mut lines: Vec<&str> = lines_of(&body);
    if opts.scissors
        && let Some(at) = lines.iter().rposition(|l| is_scissors(l))
    {
        lines.drain(..=at);
    }
    // In-body headers at the start of the body override the mail's.
    let mut i = 0;
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    let mut in_body = false;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if let Some(v) = line.strip_prefix("From:") {
            if let Some(a) = git_author(v.split('\0').next().unwrap_or("")) {
                author = Some(a);
            }
        } else if let Some(v) = line.strip_prefix("Subject:") {
            subject = v.split('\0').next().unwrap_or("").trim().to_owned();
        } else if let Some(v) = line.strip_prefix("Date:") {
            if let Some(d) = mail_parser::DateTime::parse_rfc822(v.trim()) {
                date = Some(date_of(&d));
            }
        } else {
            break;
        }
        in_body = true;
        i += 1;
    }
    if in_body {
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
    } else {
        i = 0;
    }
    let (name, email) = author
        .map(|(n, e)| (without_crud(&n), without_crud(&e)))
        .filter(|(_, e)| !e.is_empty())
        .ok_or(Error::NoAuthor)?;
    let subject = clean_subject(&subject);
    let rest = &lines[i..];
    let break_at = rest
        .iter()
        .position(|l| is_patch_break(l))
        .ok_or_else(|| Error::NoPatch {
            subject: subject.clone(),
        })?;
    let log: String = rest[..break_at].concat();
    // The lines are consecutive slices of `body` to its end: the patch is
    // the body from its first line on, cut out in place rather than
    // copied line by line (patches of test data run to megabytes).
    let patch_start = rest[break_at].as_ptr() as usize - body.as_ptr() as usize;
    drop(lines);
    body.drain(..patch_start);
    let patch: Vec<u8> = body.into_bytes();
    let message_text = stripspace(&format!("{subject}\n\n{log}"));
    Ok(MailInfo {
        // git uses the address as the name when there is none.
        author_name: if name.is_empty() { email.clone() } else { name },
        author_email: email,
        date,
        subject,
        message: message_text,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_cleaned_like_git_mailinfo() {
        let cases = [
            ("[PATCH] Fix it", "Fix it"),
            ("[PATCH v2 3/7] Fix it", "Fix it"),
            ("Re: [PATCH] Fix it", "Fix it"),
            ("[master PATCH kimchi] Team form", "Team form"),
            ("[qemu-devel] [PATCH 1/2] Two groups", "Two groups"),
            ("  :  Fix  ", "Fix"),
            ("[unclosed Fix", "[unclosed Fix"),
            ("Fix: keep the colon", "Fix: keep the colon"),
            ("re:", "re:"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_subject(input), want, "{input:?}");
        }
    }

    #[test]
    fn patch_breaks() {
        for yes in [
            "---\n",
            "--- \n",
            "--- a/file\n",
            "diff --git a/x b/x\n",
            "Index: foo\n",
            "---\t\n",
        ] {
            assert!(is_patch_break(yes), "{yes:?}");
        }
        for no in [
            "--\n",
            "----\n",
            "--- \tx\n",
            "-- \n",
            "---x\n",
            "text ---\n",
        ] {
            assert!(!is_patch_break(no), "{no:?}");
        }
    }

    #[test]
    fn stripspace_like_git() {
        assert_eq!(
            stripspace("\n\nSubj  \n\n\n\nbody \t\nmore\n\n\n"),
            "Subj\n\nbody\nmore\n"
        );
        assert_eq!(stripspace(""), "");
    }

    /// What `git mailinfo` (2.47) prints as Author and Email for each
    /// `From:` value; `git am` then trims ident crud, as we do.
    #[test]
    fn malformed_from_headers_read_as_git_mailinfo_reads_them() {
        let cases = [
            (
                "Name <Name user@example.org>",
                "user@example.org",
                "user@example.org",
            ),
            ("user@example.org", "user@example.org", "user@example.org"),
            ("Name user@example.org", "Name", "user@example.org"),
            (
                "\"Last, First\" <lf@example.org>",
                "Last, First",
                "lf@example.org",
            ),
            (
                "=?utf-8?B?!!!?= <b@example.org>",
                "b@example.org",
                "b@example.org",
            ),
            (
                "=?iso-8859-1?Q?Caf=E9?= <c@example.org>",
                "Café",
                "c@example.org",
            ),
            ("<only@example.org>", "only@example.org", "only@example.org"),
            ("Name <a@b> (comment)", "Name (comment)", "a@b"),
            ("Bogus <nobody>", "Bogus", "nobody"),
        ];
        for (from, name, email) in cases {
            let mail = format!("From: {from}\nSubject: s\n\nbody\n---\ndiff --git a/f b/f\n");
            let info = mailinfo(mail.as_bytes(), MailInfoOptions::default())
                .unwrap_or_else(|e| panic!("{from}: {e}"));
            assert_eq!(
                (info.author_name.as_str(), info.author_email.as_str()),
                (name, email),
                "{from}"
            );
        }
        let bogus =
            b"From: =?x-bogus?Q?Caf=E9?= <c@example.org>\nSubject: s\n\n---\ndiff --git a/f b/f\n";
        assert_eq!(
            mailinfo(bogus, MailInfoOptions::default()),
            Err(Error::BadCharset {
                header: "From",
                charset: "x-bogus".to_owned()
            })
        );
        let none = b"From: Name\nSubject: s\n\n---\ndiff --git a/f b/f\n";
        assert_eq!(
            mailinfo(none, MailInfoOptions::default()),
            Err(Error::NoAuthor)
        );
    }

    #[test]
    fn a_nul_byte_ends_a_header_as_in_git() {
        let mail = b"From: Ada <ada@example.org>\0x\nSubject: [PATCH] nul\0here\n\nbody\n---\ndiff --git a/f b/f\n";
        let info = mailinfo(mail, MailInfoOptions::default()).unwrap();
        assert_eq!(info.subject, "nul");
        assert_eq!(info.message, "nul\n\nbody\n");
        assert_eq!(info.author_name, "Ada");
        // Cut at the NUL, `Ada` has no address: git am refuses it too.
        let cut = b"From: Ada\0 <ada@example.org>\nSubject: s\n\n---\ndiff --git a/f b/f\n";
        assert_eq!(
            mailinfo(cut, MailInfoOptions::default()),
            Err(Error::NoAuthor)
        );
    }

    #[test]
    fn in_body_from_and_subject_override_the_headers() {
        let mail = b"From: Sender <sender@example.org>\nSubject: [PATCH] Wrong\nDate: Tue, 24 Nov 2026 09:00:00 +0100\nMessage-Id: <x@y>\n\nFrom: Real Author <real@example.org>\nSubject: Right subject\n\nThe body.\n\nSigned-off-by: Real Author <real@example.org>\n---\n f | 1 +\n\ndiff --git a/f b/f\n";
        let info = mailinfo(mail, MailInfoOptions::default()).unwrap();
        assert_eq!(info.author_name, "Real Author");
        assert_eq!(info.author_email, "real@example.org");
        assert_eq!(info.subject, "Right subject");
        assert_eq!(info.date, Some((1_795_507_200, 3600)));
        assert_eq!(
            info.message,
            "Right subject\n\nThe body.\n\nSigned-off-by: Real Author <real@example.org>\n"
        );
        assert!(info.patch.starts_with(b"---\n f | 1 +"));
    }

    #[test]
    fn scissors_drop_the_discussion_when_asked() {
        let mail = b"From: A <a@x>\nSubject: Re: question\n\nYes, like this:\n\n-- >8 --\nSubject: [PATCH] The fix\n\nFix it.\n---\ndiff --git a/f b/f\n";
        let info = mailinfo(
            mail,
            MailInfoOptions {
                scissors: true,
                ..MailInfoOptions::default()
            },
        )
        .unwrap();
        assert_eq!(info.message, "The fix\n\nFix it.\n");
        let plain = mailinfo(mail, MailInfoOptions::default()).unwrap();
        assert!(plain.message.contains("Yes, like this"));
    }

    /// Real `git format-patch` mails through `git mailinfo` and through us.
    #[test]
    fn same_as_git_mailinfo_on_format_patch_output() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let git = |args: &[&str], env: &[(&str, &str)]| {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=Committer",
                    "-c",
                    "user.email=c@example.org",
                    "-c",
                    "init.defaultBranch=master",
                ])
                .args(args)
                .envs(env.iter().copied())
                .current_dir(p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        git(&["init", "-q"], &[]);
        let messages = [
            (
                "Ada Lovelace",
                "ada@example.org",
                "Plain subject\n\nBody line.\n\nSigned-off-by: Ada <ada@example.org>",
            ),
            (
                "J\u{e9}r\u{f4}me Pr\u{fc}fer",
                "jerome@example.org",
                "Non-ASCII auth\u{f6}r and subject \u{e9}\n\nCorps du message.",
            ),
            (
                "Bob",
                "bob@example.org",
                "[tag] kept? no: brackets go\n\n  indented body\n\n\n\nafter blank lines   ",
            ),
            ("Eve", "eve@example.org", "Subject only"),
            (
                "Carol",
                "carol@example.org",
                "Body mentions --- dashes\n\nA line with --- inside is fine.\n--not a break",
            ),
        ];
        for (i, (name, email, msg)) in messages.iter().enumerate() {
            std::fs::write(p.join("f"), format!("{i}\n")).unwrap();
            git(&["add", "f"], &[]);
            git(
                &["commit", "-q", "-m", msg],
                &[
                    ("GIT_AUTHOR_NAME", name),
                    ("GIT_AUTHOR_EMAIL", email),
                    ("GIT_AUTHOR_DATE", "2026-11-24T09:00:00+0530"),
                ],
            );
            let mail = git(&["format-patch", "-1", "--stdout"], &[]);
            let mut child = Command::new("git")
                .args(["mailinfo", "msg", "patch"])
                .current_dir(p)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&mail).unwrap();
            let out = child.wait_with_output().unwrap();
            let info_text = String::from_utf8(out.stdout).unwrap();
            let field = |k: &str| {
                info_text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                    .unwrap_or("")
                    .to_owned()
            };
            let theirs_msg = std::fs::read_to_string(p.join("msg")).unwrap();
            let theirs_patch = std::fs::read(p.join("patch")).unwrap();
            let ours = mailinfo(&mail, MailInfoOptions::default()).unwrap();
            assert_eq!(ours.author_name, field("Author"), "case {i}");
            assert_eq!(ours.author_email, field("Email"), "case {i}");
            assert_eq!(ours.subject, field("Subject"), "case {i}");
            assert_eq!(
                ours.message,
                stripspace(&format!("{}\n\n{theirs_msg}", field("Subject"))),
                "case {i}"
            );
            assert_eq!(ours.patch, theirs_patch, "case {i}");
            assert_eq!(ours.date, Some((1_795_491_000, 19800)), "case {i}");
        }
    }

    /// The same messages and trailers through `git interpret-trailers
    /// --if-exists addIfDifferent` and through us.
    #[test]
    fn trailers_appended_as_git_interpret_trailers_does() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let rb = "Reviewed-by: Ada Lovelace <ada@example.org>".to_owned();
        let ack = "Acked-by: Bob <bob@example.org>".to_owned();
        let sob = "Signed-off-by: Test Author <author@example.org>".to_owned();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("Subject only\n", vec![rb.clone()]),
            ("Subject\n\nBody text.\n", vec![rb.clone(), ack.clone()]),
            (
                "Subject\n\nBody.\n\nSigned-off-by: Test Author <author@example.org>\n",
                vec![rb.clone(), sob.clone(), ack.clone()],
            ),
            (
                "Subject\n\nBody.\n\nreviewed-by: ada lovelace <ADA@example.org>\nSigned-off-by: Test Author <author@example.org>\n",
                vec![rb.clone(), ack.clone(), ack.clone()],
            ),
            // Not a trailer block: prose in the last paragraph, no
            // git-generated trailer.
            (
                "Subject\n\nBody.\nAcked-by: Bob <bob@example.org>\n",
                vec![ack.clone(), rb.clone()],
            ),
            // A quarter of trailers with a Signed-off-by is a block.
            (
                "Subject\n\nBody.\n\nSome words here\nmore words\nSigned-off-by: Test Author <author@example.org>\n",
                vec![rb.clone()],
            ),
            // Below a quarter it is not.
            (
                "Subject\n\nBody.\n\nline one\nline two\nline three\nline four\nSigned-off-by: Test Author <author@example.org>\n",
                vec![sob.clone()],
            ),
            // The title paragraph is never trailers.
            ("Fixes: the title\n", vec![rb.clone()]),
            (
                "Subject\n\nBody.\n\nSigned-off-by: Test Author <author@example.org>\nLink: https://example.org/x\n  continued\n",
                vec![rb.clone()],
            ),
            (
                "Subject\n\nBody.\n\nReviewed-by: Ada Lovelace <ada@example.org>\n",
                vec![rb.clone()],
            ),
        ];
        for (message, trailers) in &cases {
            let mut cmd = Command::new("git");
            cmd.args(["interpret-trailers", "--if-exists", "addIfDifferent"])
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null");
            for t in trailers {
                cmd.arg("--trailer").arg(t);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(message.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let theirs = String::from_utf8(out.stdout).unwrap();
            let (ours, added) = append_trailers(message, trailers);
            assert_eq!(ours, theirs, "{message:?} + {trailers:?}");
            for a in &added {
                assert!(ours.contains(a.as_str()));
            }
        }
        let (same, added) = append_trailers(
            "Subject\n\nBody.\n\nAcked-by: Bob <bob@example.org>\n",
            &[ack],
        );
        assert_eq!(
            same,
            "Subject\n\nBody.\n\nAcked-by: Bob <bob@example.org>\n"
        );
        assert!(added.is_empty(), "nothing new: nothing added");
    }

    #[test]
    fn errors_are_named() {
        assert_eq!(
            mailinfo(
                b"Subject: x\n\nno author\n---\n",
                MailInfoOptions::default()
            ),
            Err(Error::NoAuthor)
        );
        assert_eq!(
            mailinfo(
                b"From: a@x\nSubject: x\n\njust talk\n",
                MailInfoOptions::default()
            ),
            Err(Error::NoPatch {
                subject: "x".to_owned()
            })
        );
    }
}
