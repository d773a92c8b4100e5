//! Unified and git diffs, parsed (pure) from the text of a patch mail.
//!
//! Zero-copy where it counts: hunk lines borrow from the input. Handles
//! git's extended headers (modes, renames, copies, similarity, `index`
//! lines), quoted paths with C-style escapes, `\ No newline at end of file`,
//! CRLF content, and `GIT binary patch` (literal and delta, base85 + zlib).
//! Paths that would escape the repository (absolute, `..`, `.git`) are
//! refused here, before anything could write them.
//!
//! Every size the input claims (a binary block's `literal N`/`delta N`, a
//! delta's result size, a hunk header's line counts, the number of hunks,
//! a line's length) is checked against [`Limits`] before anything is
//! allocated for it: anyone can post to a list, and a claimed size must
//! never become an allocation the process cannot survive.

use std::io::Read;

/// The largest sizes a patch may claim. Not configurable: each is far
/// above what a real patch mail carries (the mail itself is capped by
/// `intake.max_mail_size`), and only there so that a hostile claim fails
/// its series with a message instead of aborting the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one binary file: a `literal N`/`delta N` block's inflated
    /// size and a delta's result size.
    pub max_binary_size: usize,
    /// Hunks of one file.
    pub max_hunks: usize,
    /// Old or new line count of one `@@` header.
    pub max_hunk_lines: u32,
    /// Bytes of one line of the patch.
    pub max_line_length: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_binary_size: 128 * 1024 * 1024,
        max_hunks: 100_000,
        max_hunk_lines: 10_000_000,
        max_line_length: 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("line {line}: refusing path {path:?}: {reason}")]
    HostilePath {
        line: usize,
        path: String,
        reason: &'static str,
    },
    #[error("line {line}: malformed hunk header {text:?}")]
    BadHunkHeader { line: usize, text: String },
    #[error("line {line}: hunk {header:?} of {file} ends early: {reason}")]
    TruncatedHunk {
        line: usize,
        file: String,
        header: String,
        reason: String,
    },
    #[error("line {line}: bad quoted path {text:?}: {reason}")]
    BadQuoting {
        line: usize,
        text: String,
        reason: &'static str,
    },
    #[error("line {line}: binary patch of {file}: {reason}")]
    BadBinary {
        line: usize,
        file: String,
        reason: String,
    },
    #[error("line {line}: {reason}")]
    BadHeader { line: usize, reason: String },
    #[error("line {line}: {file}: {what} is {claimed}, over the limit of {limit}")]
    OverLimit {
        line: usize,
        file: String,
        /// What the limit is on, e.g. "the `literal` size (bytes)".
        what: &'static str,
        claimed: u128,
        limit: u128,
    },
    #[error("no diff found in the patch")]
    NoDiff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Context,
    Add,
    Remove,
}

/// One line of a hunk: its text without the `+`/`-`/` ` marker, with its
/// line ending (`\n` or `\r\n`) unless `\ No newline at end of file`
/// followed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HunkLine<'a> {
    pub kind: LineKind,
    pub text: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk<'a> {
    pub old_start: u32,
    pub old_lines: u32,
    pub new_start: u32,
    pub new_lines: u32,
    /// The `@@ ... @@ section` line as written, for failure reports.
    pub header: &'a str,
    /// 1-based line number of the header in the input.
    pub line: usize,
    pub lines: Vec<HunkLine<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryData {
    /// The whole new content.
    Literal(Vec<u8>),
    /// A git delta against the old content.
    Delta(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPatch {
    /// Old -> new.
    pub forward: BinaryData,
    /// New -> old, when given.
    pub reverse: Option<BinaryData>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Modified,
    Added,
    Deleted,
    Renamed { similarity: Option<u8> },
    Copied { similarity: Option<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch<'a> {
    /// Path before (`None` for an added file).
    pub old_path: Option<String>,
    /// Path after (`None` for a deleted file).
    pub new_path: Option<String>,
    pub old_mode: Option<u32>,
    pub new_mode: Option<u32>,
    pub status: Status,
    /// Abbreviated blob ids of the `index` line, when present.
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    pub hunks: Vec<Hunk<'a>>,
    pub binary: Option<BinaryPatch>,
    /// `Binary files a/x and b/y differ`: git said binary but sent no data.
    pub binary_without_data: bool,
    /// 1-based line of the first line of this file's diff.
    pub line: usize,
}

impl FilePatch<'_> {
    /// The path this patch is about, for messages.
    pub fn display_path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("?")
    }
}

/// Lines of the input with their 1-based numbers; each slice keeps its
/// line ending.
struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
        Some(&self.rest[..end])
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.peek()?;
        self.rest = &self.rest[line.len()..];
        self.number += 1;
        Some(line)
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(trim_eol(line)).into_owned()
}

/// Parses every file diff in `input` (a mail body: commit message, `---`,
/// diffstat and signature around the diffs are skipped).
pub fn parse(input: &[u8]) -> Result<Vec<FilePatch<'_>>, Error> {
    parse_with(input, &Limits::DEFAULT)
}

/// [`parse`] with explicit limits (tests use small ones).
pub fn parse_with<'a>(input: &'a [u8], limits: &Limits) -> Result<Vec<FilePatch<'a>>, Error> {
    check_line_lengths(input, limits)?;
    let mut lines = Lines {
        rest: input,
        number: 0,
    };
    let mut files = Vec::new();
    while let Some(line) = lines.peek() {
        if line.starts_with(b"diff --git ") {
            lines.next();
            files.push(parse_git_file(&mut lines, line, limits)?);
        } else if line.starts_with(b"--- ") && is_traditional_start(&lines) {
            files.push(parse_traditional_file(&mut lines, limits)?);
        } else {
            lines.next();
        }
    }
    if files.is_empty() {
        return Err(Error::NoDiff);
    }
    Ok(files)
}

/// Refuses a line longer than the limit, wherever it is: a hunk line
/// borrows from the input, but the applier copies lines, and a report
/// quotes them.
fn check_line_lengths(input: &[u8], limits: &Limits) -> Result<(), Error> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', input).chain([input.len()]);
    for (number, end) in (1..).zip(ends) {
        if end - start > limits.max_line_length {
            return Err(Error::OverLimit {
                line: number,
                file: "the patch".into(),
                what: "a line's length (bytes)",
                claimed: (end - start) as u128,
                limit: limits.max_line_length as u128,
            });
        }
        start = end + 1;
    }
    Ok(())
}

/// `--- x` followed by `+++ y` and a hunk header.
fn is_traditional_start(lines: &Lines<'_>) -> bool {
    let mut probe = Lines {
        rest: lines.rest,
        number: lines.number,
    };
    probe.next();
    let plus = probe.next();
    let hunk = probe.next();
    plus.is_some_and(|p| p.starts_with(b"+++ ")) && hunk.is_some_and(|h| h.starts_with(b"@@ -"))
}

fn parse_traditional_file<'a>(
    lines: &mut Lines<'a>,
    limits: &Limits,
) -> Result<FilePatch<'a>, Error> {
    let start = lines.number + 1;
    let minus = lines.next().unwrap_or_default();
    let number = lines.number;
    let old = header_path(&minus[4..], number)?;
    let plus = lines.next().unwrap_or_default();
    let new = header_path(&plus[4..], lines.number)?;
    let mut file = FilePatch {
        status: match (&old, &new) {
            (None, _) => Status::Added,
            (_, None) => Status::Deleted,
            _ => Status::Modified,
        },
        old_path: old,
        new_path: new,
        old_mode: None,
        new_mode: None,
        old_id: None,
        new_id: None,
        hunks: Vec::new(),
        binary: None,
        binary_without_data: false,
        line: start,
    };
    parse_hunks(lines, &mut file, limits)?;
    Ok(file)
}

fn parse_git_file<'a>(
    lines: &mut Lines<'a>,
    first: &'a [u8],
    limits: &Limits,
) -> Result<FilePatch<'a>, Error> {
    let start = lines.number;
    let (a, b) = git_header_paths(&first[b"diff --git ".len()..], start)?;
    let mut file = FilePatch {
        old_path: a.clone(),
        new_path: b.clone(),
        old_mode: None,
        new_mode: None,
        status: Status::Modified,
        old_id: None,
        new_id: None,
        hunks: Vec::new(),
        binary: None,
        binary_without_data: false,
        line: start,
    };
    let mut rename_from = None;
    let mut rename_to = None;
    let mut similarity = None;
    let mut copy = false;
    while let Some(line) = lines.peek() {
        let l = trim_eol(line);
        let n = lines.number + 1;
        let field = |prefix: &[u8]| l.strip_prefix(prefix);
        if let Some(m) = field(b"old mode ") {
            file.old_mode = Some(parse_mode(m, n)?);
        } else if let Some(m) = field(b"new mode ") {
            file.new_mode = Some(parse_mode(m, n)?);
        } else if let Some(m) = field(b"deleted file mode ") {
            file.old_mode = Some(parse_mode(m, n)?);
            file.status = Status::Deleted;
        } else if let Some(m) = field(b"new file mode ") {
            file.new_mode = Some(parse_mode(m, n)?);
            file.status = Status::Added;
        } else if let Some(p) = field(b"rename from ").or_else(|| field(b"copy from ")) {
            copy = l.starts_with(b"copy");
            rename_from = Some(checked_path(unquote(p, n)?, n)?);
        } else if let Some(p) = field(b"rename to ").or_else(|| field(b"copy to ")) {
            rename_to = Some(checked_path(unquote(p, n)?, n)?);
        } else if let Some(s) = field(b"similarity index ") {
            similarity = std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.trim_end_matches('%').parse().ok());
        } else if field(b"dissimilarity index ").is_some() {
        } else if let Some(ids) = field(b"index ") {
            let ids = String::from_utf8_lossy(ids);
            let mut parts = ids.split_whitespace();
            if let Some((old, new)) = parts.next().and_then(|r| r.split_once("..")) {
                file.old_id = Some(old.to_owned());
                file.new_id = Some(new.to_owned());
            }
            if let Some(mode) = parts.next() {
                let mode = parse_mode(mode.as_bytes(), n)?;
                file.old_mode.get_or_insert(mode);
                file.new_mode.get_or_insert(mode);
            }
        } else if l.starts_with(b"--- ") || l.starts_with(b"+++ ") {
            let path = header_path(&l[4..], n)?;
            // git writes /dev/null for the absent side; the header's own
            // names are authoritative otherwise (they resolve spaces).
            if l.starts_with(b"--- ") {
                if path.is_some() || file.status == Status::Added {
                    file.old_path = path;
                }
            } else if path.is_some() || file.status == Status::Deleted {
                file.new_path = path;
            }
        } else if l.starts_with(b"Binary files ") {
            file.binary_without_data = true;
        } else if l == b"GIT binary patch" {
            lines.next();
            file.binary = Some(parse_binary(lines, file.display_path(), limits)?);
            continue;
        } else {
            break;
        }
        lines.next();
    }
    if let (Some(from), Some(to)) = (rename_from, rename_to) {
        file.old_path = Some(from);
        file.new_path = Some(to);
        file.status = if copy {
            Status::Copied { similarity }
        } else {
            Status::Renamed { similarity }
        };
    }
    match file.status {
        Status::Added => file.old_path = None,
        Status::Deleted => file.new_path = None,
        _ => {}
    }
    if file.old_path.is_none() && file.new_path.is_none() {
        return Err(Error::BadHeader {
            line: start,
            reason: "diff --git names no file".into(),
        });
    }
    parse_hunks(lines, &mut file, limits)?;
    Ok(file)
}

fn parse_mode(m: &[u8], line: usize) -> Result<u32, Error> {
    std::str::from_utf8(m)
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim(), 8).ok())
        .ok_or_else(|| Error::BadHeader {
            line,
            reason: format!("bad file mode {:?}", String::from_utf8_lossy(m)),
        })
}

/// The two names of `diff --git a/x b/y`. Ambiguous with spaces in names;
/// git resolves it by requiring both names to be equal after the prefix,
/// and the `---`/`+++`/rename lines that follow override them anyway.
fn git_header_paths(rest: &[u8], line: usize) -> Result<(Option<String>, Option<String>), Error> {
    let rest = trim_eol(rest);
    if rest.first() == Some(&b'"') {
        let (a, after) = split_quoted(rest, line)?;
        let b = after.strip_prefix(b" ").unwrap_or(after);
        let b = unquote(b, line)?;
        return Ok((
            Some(checked_path(strip_prefix(&a), line)?),
            Some(checked_path(strip_prefix(&b), line)?),
        ));
    }
    // Equal names: `a/<name> b/<name>` has length 2*len + 5.
    if rest.len() % 2 == 1 {
        let half = (rest.len() - 1) / 2;
        let (a, b) = (&rest[..half], &rest[half + 1..]);
        if rest[half] == b' ' && a.get(2..) == b.get(2..) && a.len() > 2 {
            let name = String::from_utf8_lossy(&a[2..]).into_owned();
            let name = checked_path(name, line)?;
            return Ok((Some(name.clone()), Some(name)));
        }
    }
    // Different names (a rename): the rename lines will say which.
    let s = String::from_utf8_lossy(rest);
    match s.split_once(" b/") {
        Some((a, b)) => Ok((
            Some(checked_path(strip_prefix(a), line)?),
            Some(checked_path(b.to_owned(), line)?),
        )),
        None => Err(Error::BadHeader {
            line,
            reason: format!("cannot read the file names of `diff --git {s}`"),
        }),
    }
}

fn strip_prefix(path: &str) -> String {
    match path.split_once('/') {
        Some((_, rest)) => rest.to_owned(),
        None => path.to_owned(),
    }
}

/// The path of a `---`/`+++` line: `/dev/null` is `None`; the first path
/// component (`a/`, `b/`) is stripped as `-p1` does; a tab and timestamp
/// after it are ignored.
fn header_path(rest: &[u8], line: usize) -> Result<Option<String>, Error> {
    let rest = trim_eol(rest);
    let name = if rest.first() == Some(&b'"') {
        // A tab (and a timestamp) may follow the closing quote.
        split_quoted(rest, line)?.0
    } else {
        let end = memchr::memchr(b'\t', rest).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).trim_end().to_owned()
    };
    if name == "/dev/null" {
        return Ok(None);
    }
    Ok(Some(checked_path(strip_prefix(&name), line)?))
}

/// Refuses paths that would leave the work tree or touch git's own files.
pub fn checked_path(path: String, line: usize) -> Result<String, Error> {
    let hostile = |reason| Error::HostilePath {
        line,
        path: path.clone(),
        reason,
    };
    if path.is_empty() {
        return Err(hostile("empty path"));
    }
    if path.starts_with('/') {
        return Err(hostile("absolute path"));
    }
    if path.contains('\0') {
        return Err(hostile("NUL byte in path"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(hostile("empty path component")),
            "." | ".." => return Err(hostile("`.` or `..` component")),
            c if c.eq_ignore_ascii_case(".git") => return Err(hostile("`.git` component")),
            _ => {}
        }
    }
    Ok(path)
}

/// Splits a leading C-quoted string from the rest.
fn split_quoted(s: &[u8], line: usize) -> Result<(String, &[u8]), Error> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Ok((unquote(&s[..=i], line)?, &s[i + 1..])),
            _ => i += 1,
        }
    }
    Err(Error::BadQuoting {
        line,
        text: String::from_utf8_lossy(s).into_owned(),
        reason: "no closing quote",
    })
}

/// Decodes git's C-style quoting (`"a/f\303\251 \"x\""`); unquoted input
/// is returned as it is.
pub fn unquote(s: &[u8], line: usize) -> Result<String, Error> {
    let s = trim_eol(s);
    let bad = |reason| Error::BadQuoting {
        line,
        text: String::from_utf8_lossy(s).into_owned(),
        reason,
    };
    let Some(inner) = s.strip_prefix(b"\"") else {
        return Ok(String::from_utf8_lossy(s).into_owned());
    };
    let inner = inner
        .strip_suffix(b"\"")
        .ok_or_else(|| bad("no closing quote"))?;
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let esc = *inner.get(i + 1).ok_or_else(|| bad("dangling backslash"))?;
        i += 2;
        out.push(match esc {
            b'a' => 7,
            b'b' => 8,
            b't' => b'\t',
            b'n' => b'\n',
            b'v' => 11,
            b'f' => 12,
            b'r' => b'\r',
            b'"' => b'"',
            b'\\' => b'\\',
            b'0'..=b'3' => {
                let digits = inner
                    .get(i - 1..i + 2)
                    .ok_or_else(|| bad("short octal escape"))?;
                i += 2;
                let text = std::str::from_utf8(digits).map_err(|_| bad("bad octal escape"))?;
                u8::from_str_radix(text, 8).map_err(|_| bad("bad octal escape"))?
            }
            _ => return Err(bad("unknown escape")),
        });
    }
    String::from_utf8(out).map_err(|_| bad("path is not UTF-8"))
}

fn parse_hunk_header(l: &[u8], line: usize) -> Result<(u32, u32, u32, u32), Error> {
    let bad = || Error::BadHunkHeader {
        line,
        text: text(l),
    };
    let s = std::str::from_utf8(trim_eol(l)).map_err(|_| bad())?;
    let rest = s.strip_prefix("@@ -").ok_or_else(bad)?;
    let (ranges, _) = rest.split_once(" @@").ok_or_else(bad)?;
    let (old, new) = ranges.split_once(" +").ok_or_else(bad)?;
    let range = |r: &str| -> Option<(u32, u32)> {
        match r.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (os, ol) = range(old).ok_or_else(bad)?;
    let (ns, nl) = range(new).ok_or_else(bad)?;
    Ok((os, ol, ns, nl))
}

fn parse_hunks<'a>(
    lines: &mut Lines<'a>,
    file: &mut FilePatch<'a>,
    limits: &Limits,
) -> Result<(), Error> {
    while let Some(line) = lines.peek() {
        if !line.starts_with(b"@@ -") {
            break;
        }
        lines.next();
        let header_line = lines.number;
        let over = |what, claimed: u128, limit: u128| Error::OverLimit {
            line: header_line,
            file: file.display_path().to_owned(),
            what,
            claimed,
            limit,
        };
        if file.hunks.len() >= limits.max_hunks {
            return Err(over(
                "the number of hunks",
                file.hunks.len() as u128 + 1,
                limits.max_hunks as u128,
            ));
        }
        let (old_start, old_lines, new_start, new_lines) = parse_hunk_header(line, header_line)?;
        for count in [old_lines, new_lines] {
            if count > limits.max_hunk_lines {
                return Err(over(
                    "a hunk header's line count",
                    count.into(),
                    limits.max_hunk_lines.into(),
                ));
            }
        }
        let header = std::str::from_utf8(trim_eol(line)).unwrap_or("@@");
        let mut hunk = Hunk {
            old_start,
            old_lines,
            new_start,
            new_lines,
            header,
            line: header_line,
            lines: Vec::new(),
        };
        let (mut old_left, mut new_left) = (old_lines, new_lines);
        while old_left > 0 || new_left > 0 {
            let at = lines.number + 1;
            let truncated = |reason: String| Error::TruncatedHunk {
                line: at,
                file: file.display_path().to_owned(),
                header: header.to_owned(),
                reason,
            };
            let Some(l) = lines.next() else {
                return Err(truncated(format!(
                    "the patch ends with {old_left} old and {new_left} new lines still expected"
                )));
            };
            let (kind, text) = match l.first() {
                Some(b' ') => (LineKind::Context, &l[1..]),
                Some(b'-') => (LineKind::Remove, &l[1..]),
                Some(b'+') => (LineKind::Add, &l[1..]),
                // Mailers strip the space of an empty context line.
                Some(b'\n') | Some(b'\r') => (LineKind::Context, l),
                Some(b'\\') => {
                    strip_last_newline(&mut hunk);
                    continue;
                }
                _ => {
                    return Err(truncated(format!(
                        "unexpected line {:?} with {old_left} old and {new_left} new lines still expected",
                        text_of(l)
                    )));
                }
            };
            match kind {
                LineKind::Context => {
                    old_left = old_left
                        .checked_sub(1)
                        .ok_or_else(|| truncated("more old lines than the header says".into()))?;
                    new_left = new_left
                        .checked_sub(1)
                        .ok_or_else(|| truncated("more new lines than the header says".into()))?;
                }
                LineKind::Remove => {
                    old_left = old_left.checked_sub(1).ok_or_else(|| {
                        truncated("more removed lines than the header says".into())
                    })?;
                }
                LineKind::Add => {
                    new_left = new_left
                        .checked_sub(1)
                        .ok_or_else(|| truncated("more added lines than the header says".into()))?;
                }
            }
            hunk.lines.push(HunkLine { kind, text });
        }
        // A `\ No newline` marker right after the last line of the hunk.
        if lines.peek().is_some_and(|l| l.starts_with(b"\\")) {
            lines.next();
            strip_last_newline(&mut hunk);
        }
        file.hunks.push(hunk);
    }
    Ok(())
}

fn text_of(l: &[u8]) -> String {
    let t = text(l);
    if t.len() > 60 {
        format!(
            "{}...",
            &t[..t.char_indices().nth(60).map_or(t.len(), |(i, _)| i)]
        )
    } else {
        t
    }
}

fn strip_last_newline(hunk: &mut Hunk<'_>) {
    if let Some(last) = hunk.lines.last_mut() {
        let t = last.text;
        let t = t.strip_suffix(b"\n").unwrap_or(t);
        // The `\r` of a CRLF line is content when the newline is missing.
        last.text = t;
    }
}

const BASE85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

fn base85_value(c: u8) -> Option<u32> {
    BASE85.iter().position(|b| *b == c).map(|p| p as u32)
}

/// One `literal N` / `delta N` block: base85 lines until an empty line.
fn parse_binary_block(
    lines: &mut Lines<'_>,
    file: &str,
    limits: &Limits,
) -> Result<Option<BinaryData>, Error> {
    let Some(head) = lines.peek() else {
        return Ok(None);
    };
    let head_text = text(head);
    let (is_delta, size) = if let Some(n) = head_text.strip_prefix("literal ") {
        (false, n)
    } else if let Some(n) = head_text.strip_prefix("delta ") {
        (true, n)
    } else {
        return Ok(None);
    };
    lines.next();
    let line = lines.number;
    let bad = |reason: String| Error::BadBinary {
        line,
        file: file.to_owned(),
        reason,
    };
    // Parsed as u128 so that any run of digits is read and reported as
    // over the limit rather than as a malformed number.
    let size: u128 = size
        .trim()
        .parse()
        .map_err(|_| bad(format!("bad size {size:?}")))?;
    if size > limits.max_binary_size as u128 {
        return Err(Error::OverLimit {
            line,
            file: file.to_owned(),
            what: if is_delta {
                "the `delta` size (bytes)"
            } else {
                "the `literal` size (bytes)"
            },
            claimed: size,
            limit: limits.max_binary_size as u128,
        });
    }
    let size = size as usize;
    let mut deflated = Vec::new();
    while let Some(l) = lines.next() {
        let l = trim_eol(l);
        if l.is_empty() {
            break;
        }
        let len = match l[0] {
            c @ b'A'..=b'Z' => (c - b'A' + 1) as usize,
            c @ b'a'..=b'z' => (c - b'a' + 27) as usize,
            _ => return Err(bad("bad base85 line length".into())),
        };
        let data = &l[1..];
        if !data.len().is_multiple_of(5) || data.len() / 5 * 4 < len {
            return Err(bad("base85 line of the wrong length".into()));
        }
        let mut decoded = Vec::with_capacity(data.len() / 5 * 4);
        for chunk in data.chunks(5) {
            let mut acc: u32 = 0;
            for c in chunk {
                let v = base85_value(*c)
                    .ok_or_else(|| bad(format!("bad base85 character {:?}", *c as char)))?;
                acc = acc
                    .checked_mul(85)
                    .and_then(|a| a.checked_add(v))
                    .ok_or_else(|| bad("base85 overflow".into()))?;
            }
            decoded.extend_from_slice(&acc.to_be_bytes());
        }
        deflated.extend_from_slice(&decoded[..len]);
    }
    // zlib cannot expand more than about 1032 to 1: a claim beyond what
    // the data can inflate to is not reserved (the size check below
    // refuses it once the data is read).
    let mut inflated = Vec::new();
    inflated
        .try_reserve_exact(size.min(deflated.len().saturating_mul(1032)))
        .map_err(|e| bad(format!("cannot reserve {size} bytes: {e}")))?;
    flate2::read::ZlibDecoder::new(&deflated[..])
        .take(size as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| bad(format!("zlib: {e}")))?;
    if inflated.len() != size {
        return Err(bad(format!(
            "inflated to {} bytes, the header says {size}",
            inflated.len()
        )));
    }
    Ok(Some(if is_delta {
        BinaryData::Delta(inflated)
    } else {
        BinaryData::Literal(inflated)
    }))
}

fn parse_binary(lines: &mut Lines<'_>, file: &str, limits: &Limits) -> Result<BinaryPatch, Error> {
    let line = lines.number;
    let forward = parse_binary_block(lines, file, limits)?.ok_or_else(|| Error::BadBinary {
        line,
        file: file.to_owned(),
        reason: "`GIT binary patch` without a literal or delta block".into(),
    })?;
    let reverse = parse_binary_block(lines, file, limits)?;
    Ok(BinaryPatch { forward, reverse })
}

/// Applies a git delta (as in pack files) to `base`; a result size over
/// [`Limits::DEFAULT`]'s `max_binary_size` is refused before anything is
/// allocated for it.
pub fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    apply_delta_with(base, delta, &Limits::DEFAULT)
}

/// [`apply_delta`] with explicit limits.
pub fn apply_delta_with(base: &[u8], delta: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    fn varint(d: &[u8], pos: &mut usize) -> Result<usize, String> {
        let mut value = 0usize;
        let mut shift = 0;
        loop {
            let b = *d.get(*pos).ok_or("delta header ends early")?;
            *pos += 1;
            value |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 56 {
                return Err("delta header too long".into());
            }
        }
    }
    let mut pos = 0;
    let base_size = varint(delta, &mut pos)?;
    if base_size != base.len() {
        return Err(format!(
            "delta is for a {base_size}-byte file, the file has {} bytes",
            base.len()
        ));
    }
    let result_size = varint(delta, &mut pos)?;
    if result_size > limits.max_binary_size {
        return Err(format!(
            "the delta's result size is {result_size} bytes, over the limit of {} bytes",
            limits.max_binary_size
        ));
    }
    // Reserved up to what a delta usually makes (the base plus its
    // inserts); a result past that grows as it is built, within the limit.
    let mut out = Vec::new();
    out.try_reserve_exact(result_size.min(base.len().saturating_add(delta.len())))
        .map_err(|e| format!("cannot reserve {result_size} bytes: {e}"))?;
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset = 0usize;
            let mut size = 0usize;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    offset |=
                        (*delta.get(pos).ok_or("copy offset ends early")? as usize) << (8 * i);
                    pos += 1;
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    size |= (*delta.get(pos).ok_or("copy size ends early")? as usize) << (8 * i);
                    pos += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let chunk = offset
                .checked_add(size)
                .and_then(|end| base.get(offset..end))
                .ok_or("delta copies past the end of the file")?;
            out.extend_from_slice(chunk);
        } else if op != 0 {
            let chunk = delta
                .get(pos..pos + op as usize)
                .ok_or("delta insert ends early")?;
            out.extend_from_slice(chunk);
            pos += op as usize;
        } else {
            return Err("reserved delta opcode 0".into());
        }
        // Copies may repeat: without this a small delta could build an
        // unbounded result before the size check at the end.
        if out.len() > result_size {
            return Err(format!(
                "delta makes more than the {result_size} bytes its header says"
            ));
        }
    }
    if out.len() != result_size {
        return Err(format!(
            "delta made {} bytes, its header says {result_size}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::git;
    use std::path::Path;

    /// A repository with one commit of `files`, then `change` applied and
    /// the `git diff --binary` of it.
    fn diff_of(
        files: &[(&str, &[u8])],
        change: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "base", "--allow-empty"]);
        change(dir.path());
        git(dir.path(), &["add", "-A"]);
        let diff = git(
            dir.path(),
            &["diff", "--cached", "--binary", "-M", "-C", "--full-index"],
        );
        (dir, diff)
    }

    #[test]
    fn modified_file_with_context_and_no_newline_at_eof() {
        let (_d, diff) = diff_of(&[("a.txt", b"one\ntwo\nthree")], |p| {
            std::fs::write(p.join("a.txt"), "one\n2\nthree\nfour").unwrap();
        });
        let files = parse(&diff).unwrap();
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert_eq!(f.old_path.as_deref(), Some("a.txt"));
        assert_eq!(f.new_path.as_deref(), Some("a.txt"));
        assert_eq!(f.status, Status::Modified);
        assert_eq!(f.old_mode, Some(0o100644));
        assert_eq!(f.old_id.as_ref().unwrap().len(), 40);
        let h = &f.hunks[0];
        assert_eq!(
            (h.old_start, h.old_lines, h.new_start, h.new_lines),
            (1, 3, 1, 4)
        );
        let kinds: Vec<(LineKind, &[u8])> = h.lines.iter().map(|l| (l.kind, l.text)).collect();
        assert_eq!(
            kinds,
            vec![
                (LineKind::Context, &b"one\n"[..]),
                (LineKind::Remove, b"two\n"),
                (LineKind::Remove, b"three"),
                (LineKind::Add, b"2\n"),
                (LineKind::Add, b"three\n"),
                (LineKind::Add, b"four"),
            ]
        );
    }

    #[test]
    fn added_deleted_renamed_copied_and_mode_changes() {
        let big = "shared line of text that makes the rename detectable\n".repeat(20);
        let (_d, diff) = diff_of(
            &[
                ("old name.txt", big.as_bytes()),
                ("gone.txt", b"bye\n"),
                ("run.sh", b"echo\n"),
            ],
            |p| {
                std::fs::rename(p.join("old name.txt"), p.join("new name.txt")).unwrap();
                std::fs::remove_file(p.join("gone.txt")).unwrap();
                std::fs::write(p.join("fresh.txt"), "hi\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            },
        );
        let files = parse(&diff).unwrap();
        let by = |p: &str| {
            files
                .iter()
                .find(|f| f.display_path() == p)
                .unwrap_or_else(|| panic!("{p}: {files:#?}"))
        };
        let fresh = by("fresh.txt");
        assert_eq!(
            (fresh.status, fresh.old_path.as_deref(), fresh.new_mode),
            (Status::Added, None, Some(0o100644))
        );
        let gone = files
            .iter()
            .find(|f| f.old_path.as_deref() == Some("gone.txt"))
            .unwrap();
        assert_eq!(
            (gone.status, gone.new_path.as_deref()),
            (Status::Deleted, None)
        );
        let renamed = by("new name.txt");
        assert_eq!(renamed.old_path.as_deref(), Some("old name.txt"));
        assert_eq!(
            renamed.status,
            Status::Renamed {
                similarity: Some(100)
            }
        );
        assert!(renamed.hunks.is_empty());
        let run = by("run.sh");
        assert_eq!(
            (run.old_mode, run.new_mode),
            (Some(0o100644), Some(0o100755))
        );
    }

    #[test]
    fn quoted_paths_with_escapes() {
        let (_d, diff) = diff_of(&[], |p| {
            std::fs::write(p.join("caf\u{e9} \"q\"\tx.txt"), "x\n").unwrap();
        });
        let files = parse(&diff).unwrap();
        assert_eq!(files[0].new_path.as_deref(), Some("caf\u{e9} \"q\"\tx.txt"));
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("\"a\\\\b\"", Ok("a\\b")),
            ("\"caf\\303\\251\"", Ok("caf\u{e9}")),
            ("\"tab\\there\"", Ok("tab\there")),
            ("\"open", Err("no closing quote")),
            ("\"bad\\q\"", Err("unknown escape")),
            ("\"\\377\"", Err("path is not UTF-8")),
        ];
        for (input, want) in cases {
            let got = unquote(input.as_bytes(), 1);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{input}"),
                (Err(Error::BadQuoting { reason, .. }), Err(w)) => {
                    assert_eq!(&reason, w, "{input}")
                }
                (g, w) => panic!("{input}: {g:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn binary_literal_and_delta_decode_to_the_real_bytes() {
        let old: Vec<u8> = (0..4000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let mut new = old.clone();
        new[100] ^= 0xff;
        new.extend_from_slice(b"\0tail");
        let fresh: Vec<u8> = (0..300u16)
            .flat_map(|i| i.to_be_bytes())
            .chain([0u8])
            .collect();
        let (_d, diff) = diff_of(&[("blob.bin", &old)], |p| {
            std::fs::write(p.join("blob.bin"), &new).unwrap();
            std::fs::write(p.join("fresh.bin"), &fresh).unwrap();
        });
        let files = parse(&diff).unwrap();
        for f in &files {
            let bin = f.binary.as_ref().unwrap_or_else(|| panic!("{f:#?}"));
            let result = match &bin.forward {
                BinaryData::Literal(bytes) => bytes.clone(),
                BinaryData::Delta(d) => apply_delta(&old, d).unwrap(),
            };
            let want = if f.display_path() == "blob.bin" {
                &new
            } else {
                &fresh
            };
            assert_eq!(&result, want, "{}", f.display_path());
        }
        assert!(
            files
                .iter()
                .any(|f| matches!(f.binary.as_ref().unwrap().forward, BinaryData::Delta(_)))
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        for (header, reason) in [
            (
                "diff --git a/../etc/passwd b/../etc/passwd\n",
                "`.` or `..` component",
            ),
            (
                "diff --git a/.git/config b/.git/config\n",
                "`.git` component",
            ),
            (
                "diff --git a/x/.GIT/hooks/pre-commit b/x/.GIT/hooks/pre-commit\n",
                "`.git` component",
            ),
            (
                "--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
                "absolute path",
            ),
            (
                "--- a/x\n+++ b/a/../../y\n@@ -1 +1 @@\n-a\n+b\n",
                "`.` or `..` component",
            ),
        ] {
            match parse(header.as_bytes()) {
                Err(Error::HostilePath { reason: r, .. }) => assert_eq!(r, reason, "{header}"),
                other => panic!("{header}: {other:?}"),
            }
        }
    }

    #[test]
    fn mail_body_around_the_diff_is_skipped_and_crlf_kept() {
        let body = "Fix it.\r\n\r\nSigned-off-by: A <a@x>\r\n---\r\n x | 2 +-\r\n\r\ndiff --git a/x b/x\r\nindex 1111111..2222222 100644\r\n--- a/x\r\n+++ b/x\r\n@@ -1,2 +1,2 @@\r\n keep\r\n-old\r\n+new\r\n-- \r\n2.47.3\r\n";
        let files = parse(body.as_bytes()).unwrap();
        assert_eq!(files.len(), 1);
        let lines: Vec<&[u8]> = files[0].hunks[0].lines.iter().map(|l| l.text).collect();
        assert_eq!(lines, vec![&b"keep\r\n"[..], b"old\r\n", b"new\r\n"]);
        assert_eq!(files[0].old_id.as_deref(), Some("1111111"));
    }

    #[test]
    fn broken_patches_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n",
                "ends with",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\nX\n",
                "unexpected line",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -a +1 @@\n",
                "malformed hunk header",
            ),
            ("diff --git a/x b/x\nold mode 99z\n", "bad file mode"),
            ("just text\n", "no diff found"),
        ];
        for (input, needle) in cases {
            let e = parse(input.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }

    #[test]
    fn zero_context_hunks_and_hunk_header_forms() {
        let diff = "--- a/f\n+++ b/f\n@@ -0,0 +1 @@\n+first\n@@ -5 +6,0 @@\n-gone\n";
        let files = parse(diff.as_bytes()).unwrap();
        let h: Vec<(u32, u32, u32, u32)> = files[0]
            .hunks
            .iter()
            .map(|h| (h.old_start, h.old_lines, h.new_start, h.new_lines))
            .collect();
        assert_eq!(h, vec![(0, 0, 1, 1), (5, 1, 6, 0)]);
    }

    #[test]
    fn claimed_sizes_over_the_limits_are_refused_before_allocating() {
        let small = Limits {
            max_binary_size: 100,
            max_hunks: 2,
            max_hunk_lines: 50,
            max_line_length: 40,
        };
        let git = "diff --git a/f b/f\nindex 1111111..2222222 100644\n";
        let cases: &[(String, &str)] = &[
            (
                format!("{git}GIT binary patch\nliteral 99999999999999\nAzzzzz\n\n"),
                "f: the `literal` size (bytes) is 99999999999999, over the limit of 100",
            ),
            (
                format!("{git}GIT binary patch\ndelta 101\nAzzzzz\n\n"),
                "the `delta` size (bytes) is 101, over the limit of 100",
            ),
            (
                format!("{git}--- a/f\n+++ b/f\n@@ -1,51 +1 @@\n-x\n"),
                "f: a hunk header's line count is 51, over the limit of 50",
            ),
            (
                format!(
                    "{git}--- a/f\n+++ b/f\n{}",
                    "@@ -1 +1 @@\n-x\n+y\n".repeat(3)
                ),
                "f: the number of hunks is 3, over the limit of 2",
            ),
            (
                format!(
                    "{git}--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+{}\n",
                    "y".repeat(40)
                ),
                "line 7: the patch: a line's length (bytes) is 41, over the limit of 40",
            ),
        ];
        for (input, want) in cases {
            let e = parse_with(input.as_bytes(), &small)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
        // The defaults let a real patch through.
        assert!(parse(format!("{git}--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+y\n").as_bytes()).is_ok());
        // A delta claiming a huge result, or building past its claim.
        let mut huge = vec![3u8];
        huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        huge.extend_from_slice(&[1, b'x']);
        assert!(
            apply_delta(b"abc", &huge)
                .unwrap_err()
                .contains("over the limit")
        );
        let looping: Vec<u8> = [3u8, 4].into_iter().chain([0x90, 3].repeat(10)).collect();
        assert!(
            apply_delta(b"abc", &looping)
                .unwrap_err()
                .contains("more than the 4 bytes")
        );
    }

    #[test]
    fn delta_errors_are_reported_not_panics() {
        assert!(
            apply_delta(b"abc", &[5, 3, 0x90, 1])
                .unwrap_err()
                .contains("5-byte")
        );
        assert!(
            apply_delta(b"abc", &[3, 3, 0x91, 2, 9])
                .unwrap_err()
                .contains("past the end")
        );
        assert!(
            apply_delta(b"abc", &[3, 1, 0])
                .unwrap_err()
                .contains("reserved")
        );
        assert_eq!(
            apply_delta(b"abc", &[3, 4, 0x90, 2, 2, b'x', b'y']).unwrap(),
            b"abxy"
        );
    }
}
