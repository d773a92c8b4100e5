//! mbox files as a mail source: streamed, memory bounded by the largest
//! mail, resumable by byte offset.
//!
//! A separator is a `From ` line with an asctime date, blank line before it
//! or not, exactly as `git mailsplit` decides (`is_separator`); before the
//! first mail any `From ` line is one. docs/intake.md says where this
//! differs from Python's `mailbox`. The file is
//! only read, never rewritten or locked; a mail still being appended (the
//! file does not end with a newline) is left for the next run.

use super::{Error, FetchStats, Flow, MailSource, Oversize, RawMail, Reread, Resume, Sink};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// How `From ` lines inside mails were quoted by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MboxFormat {
    /// `>From `, `>>From `, ... lose one `>` (reversible at any depth).
    #[default]
    Mboxrd,
    /// Only `>From ` becomes `From ` (the classic format of mail servers).
    Mboxo,
    /// Nothing was quoted: `git format-patch --stdout` without
    /// `--pretty=mboxrd` (what `git mailsplit` assumes without `--mboxrd`).
    None,
}

pub struct MboxSource {
    path: PathBuf,
    format: MboxFormat,
    max_mail_size: u64,
}

/// Bytes of the file's start fingerprinted in the cursor, to notice a
/// replaced or rewritten mbox.
const FINGERPRINT_LEN: u64 = 4096;

/// The parsed cursor: `offset=N;fp=HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    offset: u64,
    fingerprint: String,
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        let mut offset = None;
        let mut fingerprint = None;
        for part in text.split(';') {
            match part.split_once('=') {
                Some(("offset", v)) => offset = v.parse().ok(),
                Some(("fp", v)) => fingerprint = Some(v.to_owned()),
                _ => return None,
            }
        }
        Some(Cursor {
            offset: offset?,
            fingerprint: fingerprint?,
        })
    }

    fn render(&self) -> String {
        format!("offset={};fp={}", self.offset, self.fingerprint)
    }
}

impl MboxSource {
    pub fn new(path: PathBuf, format: MboxFormat, max_mail_size: u64) -> Self {
        Self {
            path,
            format,
            max_mail_size,
        }
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// sha256 of the first `FINGERPRINT_LEN` bytes (or fewer when the cursor
    /// offset is smaller: those bytes cannot change without the mails we
    /// already took changing).
    fn fingerprint(&self, file: &mut File, len: u64) -> Result<String, Error> {
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        let mut head = Vec::with_capacity(len as usize);
        file.by_ref()
            .take(len)
            .read_to_end(&mut head)
            .map_err(|e| self.io(e))?;
        Ok(hex::encode(&Sha256::digest(&head)[..12]))
    }
}

/// A separator as `git mailsplit` recognises one (its `is_from_line`):
/// `From `, then a `HH:MM:SS` time as the last colon-separated field and a
/// year above 90 after it, e.g. `From 4ce3fb9a Mon Sep 17 00:00:00 2001`.
/// No blank line is needed before it. Requiring the date keeps an unquoted
/// `From the start...` line in a `git format-patch` body (format `none`)
/// from splitting the mail, and agrees with what `git am` makes of the same
/// mbox.
fn is_separator(line: &[u8]) -> bool {
    if line.len() < 20 || !line.starts_with(b"From ") {
        return false;
    }
    // git looks for the last `:` before the last two bytes (the newline,
    // and the last character of the line).
    let Some(colon) = line[5..line.len() - 2]
        .iter()
        .rposition(|b| *b == b':')
        .map(|i| i + 5)
    else {
        return false;
    };
    let digit = |i: usize| line.get(i).is_some_and(u8::is_ascii_digit);
    let time = [colon - 4, colon - 2, colon - 1, colon + 1, colon + 2];
    if !time.into_iter().all(digit) {
        return false;
    }
    // strtol: leading white space, a sign, digits.
    let rest = line.get(colon + 3..).unwrap_or_default();
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let (negative, rest) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let year = rest
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
    !negative && year > 90
}

/// The most of an over-limit mail's head kept in memory.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// Length of the header block at the start of `bytes`, its blank line
/// included (all of `bytes` when it has no end).
fn head_len(bytes: &[u8]) -> usize {
    let mut pos = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        pos += line.len();
        if is_blank(line) {
            break;
        }
    }
    pos
}

/// Where a mail lies in an mbox file: from its first line after the
/// separator to the end of its last line (the blank line before the next
/// separator excluded), and how it is unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxSpan {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    pub format: MboxFormat,
}

impl MboxSpan {
    /// Streams the mail, unquoted, into `out` (memory: one line); returns
    /// the bytes written. The same bytes the source would have handed
    /// over without a size limit.
    pub fn copy_to(&self, out: &mut dyn std::io::Write) -> Result<u64, Error> {
        let io = |source| Error::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.start)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file.take(self.end - self.start));
        let mut line = Vec::with_capacity(256);
        let mut written = 0u64;
        loop {
            line.clear();
            if read_line(&mut reader, &mut line).map_err(io)? == 0 {
                break;
            }
            let unquoted = unquote(&line, self.format);
            out.write_all(unquoted).map_err(io)?;
            written += unquoted.len() as u64;
        }
        Ok(written)
    }
}

/// `BufRead::read_until(b'\n', line)` with the `memchr` crate's
/// vectorised search: std's is byte by byte for short lines, and an mbox
/// is millions of them.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (done, used) = match memchr::memchr(b'\n', buf) {
            Some(i) => (true, i + 1),
            None => (buf.is_empty(), buf.len()),
        };
        line.extend_from_slice(&buf[..used]);
        reader.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// Removes one level of `>From ` quoting from `line` per `format`.
fn unquote(line: &[u8], format: MboxFormat) -> &[u8] {
    if format == MboxFormat::None || !line.starts_with(b">") {
        return line;
    }
    let depth = line.iter().take_while(|b| **b == b'>').count();
    let rest = &line[depth..];
    let quoted = rest.starts_with(b"From ")
        && match format {
            MboxFormat::Mboxrd => true,
            MboxFormat::Mboxo => depth == 1,
            MboxFormat::None => false,
        };
    if quoted { &line[1..] } else { line }
}

impl MailSource for MboxSource {
    fn key(&self) -> String {
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("mbox:{}", path.display())
    }

    fn fetch(&mut self, resume: &Resume<'_>, sink: &mut Sink<'_>) -> Result<FetchStats, Error> {
        let mut file = File::open(&self.path).map_err(|e| self.io(e))?;
        let size = file.metadata().map_err(|e| self.io(e))?.len();
        let mut stats = FetchStats {
            total_hint: Some(size),
            ..FetchStats::default()
        };
        let start = match resume.cursor {
            None => 0,
            Some(text) => {
                let bad = |reason: String| Error::BadCursor {
                    source_key: self.key(),
                    cursor: text.to_owned(),
                    reason,
                };
                let cursor = Cursor::parse(text)
                    .ok_or_else(|| bad("not an mbox cursor (offset=N;fp=HEX)".into()))?;
                if cursor.offset > size {
                    return Err(bad(format!(
                        "the file is now {size} bytes, shorter than the {} bytes already read: it was truncated or replaced; run `patchline collect --reset-source` to read it from the start",
                        cursor.offset
                    )));
                }
                let fp = self.fingerprint(&mut file, cursor.offset.min(FINGERPRINT_LEN))?;
                if fp != cursor.fingerprint {
                    return Err(bad(
                        "the start of the file changed since it was last read: it was replaced; run `patchline collect --reset-source` to read it from the start".into(),
                    ));
                }
                cursor.offset
            }
        };
        file.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut offset = start;
        let mut line = Vec::with_capacity(256);
        // The mail being read: its separator offset and bytes so far.
        let mut current: Option<(u64, Vec<u8>)> = None;
        // Over the limit: only the head is kept; the size and where its
        // first line starts are counted for the span.
        let mut oversized = false;
        let mut mail_size = 0u64;
        let mut body_start = 0u64;
        let mut last_len = 0u64;
        // A cursor always points at a separator line (or the end).
        let mut prev_blank = true;
        let mut fingerprint: Option<String> = None;
        let mut size_hint = 0usize;

        loop {
            line.clear();
            let n = read_line(&mut reader, &mut line).map_err(|e| self.io(e))?;
            let at_eof = n == 0;
            let complete_line = line.ends_with(b"\n");
            if !at_eof && !complete_line {
                // A last line without newline: the writer is not done.
                if current.is_some() || !line.iter().all(u8::is_ascii_whitespace) {
                    let at = current.as_ref().map_or(offset, |(o, _)| *o);
                    stats.warnings.push(format!(
                        "mbox {} ends mid-line at byte {}: the last mail (from byte {at}) is left for the next run",
                        self.path.display(),
                        offset + n as u64
                    ));
                }
                break;
            }
            // Before the first mail any `From ` line starts one (a mail never
            // starts with one: its first line is a header), however short:
            // `From x` or a date `git mailsplit` would not take.
            let separator = !at_eof
                && (is_separator(&line) || (current.is_none() && line.starts_with(b"From ")));
            if (separator || at_eof)
                && let Some((mail_offset, mut bytes)) = current.take()
            {
                size_hint = bytes.len();
                // The blank line before the separator belongs to the mbox
                // (when there is one: writers that omit it exist). An
                // over-limit mail's bytes are its head: nothing to cut.
                if prev_blank && !oversized {
                    if bytes.ends_with(b"\r\n\r\n") {
                        bytes.truncate(bytes.len() - 2);
                    } else if bytes.ends_with(b"\n\n") {
                        bytes.truncate(bytes.len() - 1);
                    }
                }
                let item = mail_offset.to_string();
                let fp = match &fingerprint {
                    Some(fp) => fp.clone(),
                    None => {
                        let mut f = File::open(&self.path).map_err(|e| self.io(e))?;
                        let fp = self.fingerprint(&mut f, FINGERPRINT_LEN)?;
                        fingerprint = Some(fp.clone());
                        fp
                    }
                };
                let cursor = Cursor {
                    offset,
                    fingerprint: if offset < FINGERPRINT_LEN {
                        let mut f = File::open(&self.path).map_err(|e| self.io(e))?;
                        self.fingerprint(&mut f, offset)?
                    } else {
                        fp
                    },
                }
                .render();
                let seen = (resume.seen)(&item);
                if seen || oversized {
                    stats.cursor = Some(cursor.clone());
                }
                let oversize = oversized.then(|| {
                    // Without the blank line that belongs to the mbox.
                    let trailing = if prev_blank { last_len } else { 0 };
                    Oversize {
                        size: mail_size - trailing,
                        reread: Reread::Mbox(MboxSpan {
                            path: self.path.clone(),
                            start: body_start,
                            end: offset - trailing,
                            format: self.format,
                        }),
                    }
                });
                oversized = false;
                if seen {
                    stats.skipped_seen += 1;
                } else {
                    if let Some(big) = &oversize {
                        stats.warnings.push(format!(
                            "mbox {}: mail at byte {mail_offset} is {} bytes, larger than the limit of {} bytes: archived, not parsed",
                            self.path.display(),
                            big.size,
                            self.max_mail_size
                        ));
                    } else {
                        stats.cursor = None;
                    }
                    let raw = RawMail {
                        bytes,
                        origin: format!("mbox {} @ {mail_offset}", self.path.display()),
                        item: item.clone(),
                        cursor,
                        warnings: Vec::new(),
                        oversize,
                    };
                    stats.delivered += 1;
                    match sink(raw) {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop) => return Ok(stats),
                        Err(source) => return Err(Error::Sink { item, source }),
                    }
                }
            }
            if at_eof {
                break;
            }
            if separator {
                // Sized like the mail before (mails of a list are alike):
                // fewer reallocations and copies while it grows.
                current = Some((offset, Vec::with_capacity(size_hint.min(1 << 20) + 1024)));
                mail_size = 0;
                body_start = offset + n as u64;
            } else if let Some((_, bytes)) = current.as_mut() {
                let unquoted = unquote(&line, self.format);
                mail_size += unquoted.len() as u64;
                if !oversized {
                    bytes.extend_from_slice(unquoted);
                    if mail_size > self.max_mail_size {
                        oversized = true;
                        bytes.truncate(head_len(bytes).min(HEAD_LIMIT));
                        bytes.shrink_to_fit();
                    }
                }
            } else if !is_blank(&line) && offset == 0 {
                stats.warnings.push(format!(
                    "mbox {} does not start with a `From ` line: text before the first mail ignored",
                    self.path.display()
                ));
            }
            prev_blank = is_blank(&line);
            last_len = n as u64;
            offset += n as u64;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::source::fetch_all;

    fn mails(
        path: &std::path::Path,
        format: MboxFormat,
        cursor: Option<&str>,
    ) -> (Vec<RawMail>, FetchStats) {
        let mut src = MboxSource::new(path.to_path_buf(), format, 1 << 20);
        fetch_all(&mut src, cursor).unwrap()
    }

    fn mail(i: usize) -> String {
        format!(
            "From: a@x\nSubject: [PATCH] {i}\nMessage-Id: <{i}@x>\n\nbody {i}\n>From quoted\n>>From twice\n"
        )
    }

    fn mbox_of(n: usize) -> String {
        (0..n)
            .map(|i| format!("From x@y Thu Jan  1 00:00:00 1970\n{}\n", mail(i)))
            .collect()
    }

    #[test]
    fn separators_need_a_date() {
        for yes in [
            "From 4ce3fb9afeca Mon Sep 17 00:00:00 2001\n",
            "From mboxrd@z Thu Jan  1 00:00:00 1970\r\n",
            "From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n",
        ] {
            assert!(is_separator(yes.as_bytes()), "{yes}");
        }
        for no in [
            "From the body of a commit\n",
            "From: a@x\n",
            "From \n",
            "From x 12:00\n",
        ] {
            assert!(!is_separator(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn splits_unquotes_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mbox");
        std::fs::write(&p, mbox_of(5)).unwrap();
        let (all, _) = mails(&p, MboxFormat::Mboxrd, None);
        assert_eq!(all.len(), 5);
        assert_eq!(
            String::from_utf8_lossy(&all[0].bytes),
            "From: a@x\nSubject: [PATCH] 0\nMessage-Id: <0@x>\n\nbody 0\nFrom quoted\n>From twice\n"
        );
        let (o, _) = mails(&p, MboxFormat::Mboxo, None);
        assert!(String::from_utf8_lossy(&o[0].bytes).ends_with("\nFrom quoted\n>>From twice\n"));
        let (rest, _) = mails(&p, MboxFormat::Mboxrd, Some(&all[1].cursor));
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].bytes, all[2].bytes);
        let (none, _) = mails(&p, MboxFormat::Mboxrd, Some(&all[4].cursor));
        assert!(none.is_empty());
    }

    #[test]
    fn crlf_and_truncated_last_mail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mbox");
        let text = mbox_of(2).replace('\n', "\r\n");
        std::fs::write(
            &p,
            format!("{text}From x Thu Jan  1 00:00:00 1970\r\nSubject: half"),
        )
        .unwrap();
        let (got, stats) = mails(&p, MboxFormat::Mboxrd, None);
        assert_eq!(got.len(), 2);
        assert!(got[0].bytes.ends_with(b">From twice\r\n"));
        assert!(
            stats.warnings[0].contains("left for the next run"),
            "{:?}",
            stats.warnings
        );
        // Completed later: delivered once, from the cursor.
        std::fs::write(
            &p,
            format!("{text}From x Thu Jan  1 00:00:00 1970\r\nSubject: half done\r\n\r\nbody\r\n"),
        )
        .unwrap();
        let (later, stats) = mails(&p, MboxFormat::Mboxrd, Some(&got[1].cursor));
        assert_eq!(later.len(), 1, "{stats:?}");
        assert_eq!(later[0].bytes, b"Subject: half done\r\n\r\nbody\r\n");
    }

    #[test]
    fn replaced_or_shrunk_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mbox");
        std::fs::write(&p, mbox_of(3)).unwrap();
        let (all, _) = mails(&p, MboxFormat::Mboxrd, None);
        std::fs::write(&p, mbox_of(1)).unwrap();
        let mut src = MboxSource::new(p.clone(), MboxFormat::Mboxrd, 1 << 20);
        let never = |_: &str| false;
        let err = src
            .fetch(
                &Resume {
                    cursor: Some(&all[2].cursor),
                    seen: &never,
                },
                &mut |_| Ok(Flow::Continue),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("--reset-source"), "{err}");
        std::fs::write(&p, mbox_of(3).replace("body 0", "BODY 0")).unwrap();
        let err = src
            .fetch(
                &Resume {
                    cursor: Some(&all[1].cursor),
                    seen: &never,
                },
                &mut |_| Ok(Flow::Continue),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("replaced"), "{err}");
    }

    #[test]
    fn oversized_mail_skipped_and_sink_error_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mbox");
        let big = format!(
            "From x Thu Jan  1 00:00:00 1970\nSubject: big\n\n{}\n\n",
            "x".repeat(5000)
        );
        std::fs::write(&p, format!("{big}{}", mbox_of(1))).unwrap();
        let mut src = MboxSource::new(p.clone(), MboxFormat::Mboxrd, 1000);
        let (got, stats) = fetch_all(&mut src, None).unwrap();
        // The over-limit mail is handed over too (head and span), never
        // skipped: the archive keeps it and the report names it.
        assert_eq!(got.len(), 2);
        assert!(stats.warnings[0].contains("byte 0") && stats.warnings[0].contains("limit"));
        assert_eq!(
            stats.cursor, None,
            "a delivered mail follows the skipped one"
        );
        let never = |_: &str| false;
        let err = src
            .fetch(
                &Resume {
                    cursor: None,
                    seen: &never,
                },
                &mut |_| Err("disk full".into()),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("disk full") && err.contains(&got[0].item),
            "{err}"
        );
        // Over-limit mail last: the final cursor moves past it.
        std::fs::write(&p, format!("{}{big}", mbox_of(1))).unwrap();
        let (_, stats) = fetch_all(&mut src, None).unwrap();
        let end = std::fs::metadata(&p).unwrap().len();
        assert!(stats.cursor.unwrap().starts_with(&format!("offset={end};")));
    }

    #[test]
    fn same_split_as_git_mailsplit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r");
        let git = |args: &[&str]| crate::testkit::git(&repo, args);
        std::fs::create_dir(&repo).unwrap();
        git(&["init", "-q"]);
        for i in 0..4 {
            std::fs::write(repo.join("f"), format!("{i}\n")).unwrap();
            git(&["add", "f"]);
            git(&[
                "commit",
                "-q",
                "-m",
                &format!("c{i}"),
                "-m",
                "From the body\n>From quoted",
            ]);
        }
        for (pretty, format, flag) in [
            ("--pretty=mboxrd", MboxFormat::Mboxrd, "--mboxrd"),
            ("--pretty=email", MboxFormat::None, ""),
        ] {
            let mbox = git(&["format-patch", "--stdout", pretty, "--root", "HEAD"]);
            let p = dir.path().join("l.mbox");
            std::fs::write(&p, &mbox).unwrap();
            let split = dir.path().join(format!("split{flag}"));
            std::fs::create_dir_all(&split).unwrap();
            let mut args = vec!["mailsplit".to_owned(), format!("-o{}", split.display())];
            if !flag.is_empty() {
                args.push(flag.to_owned());
            }
            args.push(p.display().to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git(&args);
            let (ours, _) = mails(&p, format, None);
            assert_eq!(ours.len(), 4);
            for (i, m) in ours.iter().enumerate() {
                // mailsplit keeps the separator line and the blank line
                // that ends each mail in an mbox; we hand over neither.
                let theirs = std::fs::read(split.join(format!("{:04}", i + 1))).unwrap();
                let start = theirs.iter().position(|b| *b == b'\n').unwrap() + 1;
                let theirs = &theirs[start..theirs.len() - 1];
                assert_eq!(
                    String::from_utf8_lossy(&m.bytes),
                    String::from_utf8_lossy(theirs),
                    "mail {i} {pretty}"
                );
            }
        }
    }

    /// Runs the real `git mailsplit` on `file` and returns each mail as we
    /// hand it over: without its separator line and without the one blank
    /// line that ends a mail in an mbox (mailsplit keeps both).
    fn git_mailsplit(file: &std::path::Path, args: &[&str]) -> Vec<Vec<u8>> {
        let out = tempfile::tempdir().unwrap();
        let mut all = vec![
            "mailsplit".to_owned(),
            format!("-o{}", out.path().display()),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.push(file.display().to_string());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let ran = crate::testkit::git_with(out.path(), &all, None);
        assert!(ran.ok, "git {all:?}: {}", ran.stderr);
        let mut names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let mail = std::fs::read(name).unwrap();
                let start = mail.iter().position(|b| *b == b'\n').unwrap() + 1;
                let mut mail = mail[start..].to_vec();
                if mail.ends_with(b"\r\n\r\n") {
                    mail.truncate(mail.len() - 2);
                } else if mail.ends_with(b"\n\n") {
                    mail.truncate(mail.len() - 1);
                }
                mail
            })
            .collect()
    }

    /// mboxo unquoting applied to `git mailsplit`'s unquoted output: only
    /// `>From ` loses its `>` (git itself knows mboxrd only).
    fn unquote_mboxo(mail: &[u8]) -> Vec<u8> {
        mail.split_inclusive(|b| *b == b'\n')
            .flat_map(|line| unquote(line, MboxFormat::Mboxo).to_vec())
            .collect()
    }

    /// Every fixture of `tests/fixtures/mbox`, LF and CRLF, split by us and
    /// by the real `git mailsplit` (with `--keep-cr` for CRLF, `--mboxrd`
    /// for mboxrd): the same mails, byte for byte.
    #[test]
    fn fixtures_split_as_git_mailsplit_does() {
        // (fixture, format, mails). Python's `mailbox.mbox` counts the same
        // but for none-unquoted-body.mbox: 6, cutting at every `From ` line
        // of the commit messages (docs/intake.md says why we do not).
        let table = [
            ("no-blank-before-separator.mbox", MboxFormat::Mboxrd, 2),
            ("short-first-separator.mbox", MboxFormat::Mboxrd, 2),
            ("dated-variants.mbox", MboxFormat::Mboxrd, 5),
            ("none-unquoted-body.mbox", MboxFormat::None, 2),
            ("mboxrd-quoted.mbox", MboxFormat::Mboxrd, 2),
            ("mboxo-quoted.mbox", MboxFormat::Mboxo, 2),
        ];
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mbox");
        let dir = tempfile::tempdir().unwrap();
        for (name, format, count) in table {
            let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
            for crlf in [false, true] {
                let eol = if crlf { "\r\n" } else { "\n" };
                let text = text.replace('\n', eol);
                let file = dir.path().join(name);
                std::fs::write(&file, &text).unwrap();
                let (ours, stats) = mails(&file, format, None);
                let case = format!("{name} ({})", if crlf { "CRLF" } else { "LF" });
                assert!(stats.warnings.is_empty(), "{case}: {:?}", stats.warnings);
                // git calls a file whose first `From ` line has no date a
                // corrupt mailbox; it agrees once that line has one.
                let first = text.split_inclusive('\n').next().unwrap_or_default();
                let oracle_file = dir.path().join(format!("git-{name}"));
                if is_separator(first.as_bytes()) {
                    std::fs::write(&oracle_file, &text).unwrap();
                } else {
                    let dated = format!("From x Mon Jan  1 00:00:00 2024{eol}");
                    std::fs::write(&oracle_file, format!("{dated}{}", &text[first.len()..]))
                        .unwrap();
                }
                let mut args = Vec::new();
                if crlf {
                    args.push("--keep-cr");
                }
                if format == MboxFormat::Mboxrd {
                    args.push("--mboxrd");
                }
                let mut theirs = git_mailsplit(&oracle_file, &args);
                if format == MboxFormat::Mboxo {
                    theirs = theirs.iter().map(|m| unquote_mboxo(m)).collect();
                }
                assert_eq!(ours.len(), count, "{case}");
                assert_eq!(theirs.len(), count, "{case}: git mailsplit");
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert_eq!(
                        String::from_utf8_lossy(&a.bytes),
                        String::from_utf8_lossy(b),
                        "{case}: mail {i}"
                    );
                }
            }
        }
    }

    /// An over-limit mail is handed over with its head and its span; the
    /// span streams exactly the bytes an unlimited split gives (quoting
    /// undone, the mbox's blank line left out), LF and CRLF, blank line
    /// before the next separator or not.
    #[test]
    fn oversized_mail_keeps_its_head_and_a_span_that_rereads_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mbox");
        let body = format!("{}\n>From quoted\n", "y".repeat(3000));
        for eol in ["\n", "\r\n"] {
            for gap in ["\n", ""] {
                let text = format!(
                    "From x Thu Jan  1 00:00:00 1970\nFrom: a@x\nSubject: big\nMessage-Id: <big@x>\n\n{body}{gap}{}",
                    mbox_of(1)
                )
                .replace('\n', eol);
                std::fs::write(&p, &text).unwrap();
                let (whole, _) = mails(&p, MboxFormat::Mboxrd, None);
                let mut src = MboxSource::new(p.clone(), MboxFormat::Mboxrd, 1000);
                let (got, _) = fetch_all(&mut src, None).unwrap();
                assert_eq!(got.len(), 2);
                let big = got[0].oversize.clone().unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&got[0].bytes),
                    "From: a@x\nSubject: big\nMessage-Id: <big@x>\n\n".replace('\n', eol)
                );
                let mut reread = Vec::new();
                assert_eq!(big.copy_to(&got[0].bytes, &mut reread).unwrap(), big.size);
                assert_eq!(
                    String::from_utf8_lossy(&reread),
                    String::from_utf8_lossy(&whole[0].bytes),
                    "eol {eol:?} gap {gap:?}"
                );
                assert_eq!(got[1].oversize, None);
                assert_eq!(got[1].bytes, whole[1].bytes);
            }
        }
    }
}
