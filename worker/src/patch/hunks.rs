//! Applying the hunks of one file to its content (pure), with `git apply`'s
//! matching rules: every context line must match exactly (or modulo
//! whitespace with `ignore_whitespace`); a hunk is tried where its header
//! says first, then ever farther before and after; a hunk that starts at
//! line 1 (or 0) must match at the beginning, and one without trailing
//! context must match at the end.

use crate::patch::parse::{Hunk, LineKind};

/// Why a hunk did not apply, with what the report shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkFailure {
    /// 1-based number of the hunk in its file.
    pub hunk: usize,
    /// The `@@ -a,b +c,d @@` line.
    pub header: String,
    /// The first lines the patch expected (context and removed lines).
    pub expected: Vec<String>,
    /// What the file has at the position the header names.
    pub found: Vec<String>,
}

impl std::fmt::Display for HunkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hunk #{} {} does not match", self.hunk, self.header)?;
        if let Some(first) = self.expected.first() {
            write!(f, " (expected {first:?}")?;
            match self.found.first() {
                Some(found) => write!(f, ", found {found:?})")?,
                None => write!(f, ", found the end of the file)")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// `--ignore-whitespace`: context compares equal when it differs only
    /// in whitespace.
    pub ignore_whitespace: bool,
    /// `--unidiff-zero`: hunks may come without context (`diff -U0`), so
    /// a hunk at line 1 or without trailing context is not anchored. Off
    /// for `git am`, which has no such option.
    pub unidiff_zero: bool,
}

/// Splits content into lines that keep their endings.
#[cfg(test)]
fn split_lines(content: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::with_capacity(content.len() / 32 + 1);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', content) {
        lines.push(&content[start..=end]);
        start = end + 1;
    }
    if start < content.len() {
        lines.push(&content[start..]);
    }
    lines
}

fn same(a: &[u8], b: &[u8], opts: ApplyOptions) -> bool {
    if a == b {
        return true;
    }
    if !opts.ignore_whitespace {
        return false;
    }
    let squash = |s: &[u8]| -> Vec<u8> {
        s.split(|c| c.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .flat_map(|w| w.iter().copied().chain([b' ']))
            .collect()
    };
    squash(a) == squash(b)
}

fn matches_at(image: &[&[u8]], pre: &[&[u8]], at: usize, opts: ApplyOptions) -> bool {
    if at + pre.len() > image.len() {
        return false;
    }
    let last = pre.len().saturating_sub(1);
    pre.iter().zip(&image[at..]).enumerate().all(|(n, (p, i))| {
        // Like git, a last preimage line marked `\ No newline at end of
        // file` also matches the same line with its line ending.
        same(p, i, opts)
            || (n == last
                && !p.ends_with(b"\n")
                && i.starts_with(p)
                && i[p.len()..].iter().all(u8::is_ascii_whitespace))
    })
}

/// `git apply`'s search: the expected line first, then alternately one
/// further forward and one further back (forward first, as git does: with
/// two candidate places, the order decides which one is patched).
fn find_position(
    image: &[&[u8]],
    pre: &[&[u8]],
    expected: usize,
    match_beginning: bool,
    match_end: bool,
    opts: ApplyOptions,
) -> Option<usize> {
    if pre.len() > image.len() {
        return None;
    }
    if match_beginning && match_end {
        return (pre.len() == image.len() && matches_at(image, pre, 0, opts)).then_some(0);
    }
    if match_beginning {
        return matches_at(image, pre, 0, opts).then_some(0);
    }
    if match_end {
        let at = image.len() - pre.len();
        return matches_at(image, pre, at, opts).then_some(at);
    }
    let last = image.len() - pre.len();
    let start = expected.min(last);
    if matches_at(image, pre, start, opts) {
        return Some(start);
    }
    let (mut back, mut fwd) = (start, start);
    loop {
        let can_back = back > 0;
        let can_fwd = fwd < last;
        if !can_back && !can_fwd {
            return None;
        }
        if can_fwd {
            fwd += 1;
            if matches_at(image, pre, fwd, opts) {
                return Some(fwd);
            }
        }
        if can_back {
            back -= 1;
            if matches_at(image, pre, back, opts) {
                return Some(back);
            }
        }
    }
}

/// Moves lines from the front of `rest` to the end of `image` until it
/// has `lines` lines or `rest` is empty.
fn split_until<'a>(image: &mut Vec<&'a [u8]>, rest: &mut &'a [u8], lines: usize) {
    let Some(want) = lines.checked_sub(image.len()).filter(|&n| n > 0) else {
        return;
    };
    // One vectorised scan for the line ends, not a search per line.
    let mut start = 0;
    let mut taken = 0;
    for end in memchr::memchr_iter(b'\n', rest) {
        image.push(&rest[start..=end]);
        start = end + 1;
        taken += 1;
        if taken == want {
            break;
        }
    }
    if taken < want && start < rest.len() {
        image.push(&rest[start..]);
        start = rest.len();
    }
    *rest = &rest[start..];
}

/// Applies `hunks` to `content` and returns the new content.
pub fn apply_hunks(
    content: &[u8],
    hunks: &[Hunk<'_>],
    opts: ApplyOptions,
) -> Result<Vec<u8>, HunkFailure> {
    Ok(apply_hunks_lines(content, hunks, opts)?.concat())
}

/// As [`apply_hunks`], but the new content as pieces: slices of `content`
/// where lines were kept, of the patch where they were added (what a pack
/// delta against `content` is made from).
///
/// The file is split into lines only as far as the hunks need: a hunk
/// that matches where its header says (nearly all of them) needs the
/// lines up to its end, and the rest after the last hunk stays one piece.
/// Only a hunk that must be searched for, or anchored at the end, splits
/// the whole file, and then the search is `git apply`'s, as before: the
/// exact place is the first one it tries, so the result is the same.
/// Patches to large files spent most of their time splitting lines no
/// hunk was near.
pub fn apply_hunks_lines<'a>(
    content: &'a [u8],
    hunks: &[Hunk<'a>],
    opts: ApplyOptions,
) -> Result<Vec<&'a [u8]>, HunkFailure> {
    let mut image: Vec<&[u8]> = Vec::new();
    let mut rest = content;
    for (n, hunk) in hunks.iter().enumerate() {
        let pre: Vec<&[u8]> = hunk
            .lines
            .iter()
            .filter(|l| l.kind != LineKind::Add)
            .map(|l| l.text)
            .collect();
        let post: Vec<&[u8]> = hunk
            .lines
            .iter()
            .filter(|l| l.kind != LineKind::Remove)
            .map(|l| l.text)
            .collect();
        let trailing = hunk
            .lines
            .iter()
            .rev()
            .take_while(|l| l.kind == LineKind::Context)
            .count();
        // Same rules as git apply: a hunk at line 0/1 is anchored at the
        // start and one without trailing context at the end, unless the
        // patch is known to have no context at all.
        let match_beginning = hunk.old_start == 0 || (hunk.old_start == 1 && !opts.unidiff_zero);
        let match_end = !opts.unidiff_zero && trailing == 0;
        // Hunks already applied shift the file: the new-side position is
        // where this one is expected now.
        let expected = (hunk.new_start as usize).saturating_sub(1);
        let exact = !match_beginning && !match_end && {
            split_until(&mut image, &mut rest, expected + pre.len());
            matches_at(&image, &pre, expected, opts)
        };
        let found = if exact {
            Some(expected)
        } else {
            split_until(&mut image, &mut rest, usize::MAX);
            find_position(&image, &pre, expected, match_beginning, match_end, opts)
        };
        let Some(at) = found else {
            let from = (hunk.old_start as usize).saturating_sub(1).min(image.len());
            return Err(HunkFailure {
                hunk: n + 1,
                header: hunk.header.to_owned(),
                expected: pre.iter().take(3).map(|l| lossy_line(l)).collect(),
                found: image[from..]
                    .iter()
                    .take(3)
                    .map(|l| lossy_line(l))
                    .collect(),
            });
        };
        // With --ignore-whitespace, context lines keep the file's version.
        let mut replacement: Vec<&[u8]> = Vec::with_capacity(post.len());
        let mut old_iter = image[at..at + pre.len()].iter();
        for line in &hunk.lines {
            match line.kind {
                LineKind::Context => {
                    if let Some(original) = old_iter.next() {
                        replacement.push(original);
                    }
                }
                LineKind::Remove => {
                    old_iter.next();
                }
                LineKind::Add => replacement.push(line.text),
            }
        }
        image.splice(at..at + pre.len(), replacement);
    }
    if !rest.is_empty() {
        image.push(rest);
    }
    Ok(image)
}

fn lossy_line(l: &[u8]) -> String {
    String::from_utf8_lossy(l)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse::parse;
    use crate::testkit::{Lcg, git, git_with};

    fn random_file(rng: &mut Lcg, lines: usize) -> Vec<u8> {
        let words = [
            "alpha",
            "beta",
            "gamma",
            "delta",
            "",
            "{",
            "}",
            "return x;",
            "  indented",
        ];
        let mut out = Vec::new();
        for i in 0..lines {
            out.extend_from_slice(words[rng.below(words.len())].as_bytes());
            if rng.below(4) == 0 {
                out.extend_from_slice(format!(" {i}").as_bytes());
            }
            out.push(b'\n');
        }
        if rng.below(5) == 0 {
            out.pop();
        }
        out
    }

    fn random_edit(rng: &mut Lcg, content: &[u8]) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = split_lines(content).iter().map(|l| l.to_vec()).collect();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(lines.len() + 1);
            match rng.below(3) {
                0 if at < lines.len() => {
                    lines.remove(at);
                }
                1 if at < lines.len() => {
                    lines[at] = format!("changed {}\n", rng.below(1000)).into_bytes()
                }
                _ => lines.insert(at, format!("inserted {}\n", rng.below(1000)).into_bytes()),
            }
        }
        if rng.below(6) == 0
            && let Some(last) = lines.last_mut()
            && last.ends_with(b"\n")
        {
            last.pop();
        }
        lines.concat()
    }

    /// Random files and edits -> `git diff` -> our result must equal the
    /// edited file, as `git apply` makes it; and applied to a file whose
    /// lines moved, our verdict must be git's.
    #[test]
    fn same_result_as_git_apply_on_random_edits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        git(p, &["init", "-q"]);
        let mut rng = Lcg(7);
        for case in 0..300 {
            let len = 5 + rng.below(60);
            let old = random_file(&mut rng, len);
            let new = random_edit(&mut rng, &old);
            std::fs::write(p.join("a"), &old).unwrap();
            std::fs::write(p.join("b"), &new).unwrap();
            let context = ["-U3", "-U1", "-U0"][rng.below(3)];
            // `git diff --no-index` exits 1 when the files differ.
            let diff = git_with(p, &["diff", "--no-index", context, "a", "b"], None).stdout;
            if diff.is_empty() {
                continue;
            }
            let files = parse(&diff).unwrap();
            let opts = ApplyOptions {
                unidiff_zero: context == "-U0",
                ..ApplyOptions::default()
            };
            let ours = apply_hunks(&old, &files[0].hunks, opts);
            assert_eq!(
                ours.as_deref(),
                Ok(&new[..]),
                "case {case}\n{}",
                String::from_utf8_lossy(&diff)
            );

            // Shift the target: lines added at the top, and maybe a line
            // changed, then compare verdicts and results with git apply.
            let mut shifted = b"top 1\ntop 2\n".to_vec();
            shifted.extend_from_slice(&old);
            let mut shifted_lines: Vec<Vec<u8>> =
                split_lines(&shifted).iter().map(|l| l.to_vec()).collect();
            if rng.below(2) == 0 && shifted_lines.len() > 3 {
                let at = 2 + rng.below(shifted_lines.len() - 2);
                shifted_lines[at] = b"drifted\n".to_vec();
            }
            let shifted = shifted_lines.concat();
            std::fs::write(p.join("a"), &shifted).unwrap();
            let patch = String::from_utf8_lossy(&diff)
                .replace("a/b", "a/a")
                .replace("b/b", "b/a")
                .into_bytes();
            let mut args = vec!["apply"];
            if context == "-U0" {
                args.push("--unidiff-zero");
            }
            args.push("-");
            let applied = git_with(p, &args, Some(&patch));
            let (git_ok, err) = (applied.ok, applied.stderr);
            let git_result = std::fs::read(p.join("a")).unwrap();
            let files = parse(&patch).unwrap();
            let ours = apply_hunks(&shifted, &files[0].hunks, opts);
            assert_eq!(
                ours.is_ok(),
                git_ok,
                "case {case}: git says {err}\n{}",
                String::from_utf8_lossy(&patch)
            );
            if let Ok(ours) = ours {
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&git_result),
                    "case {case}\n{}",
                    String::from_utf8_lossy(&patch)
                );
            }
        }
    }

    #[test]
    fn failure_names_the_hunk_and_the_mismatch() {
        let diff = b"--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@ fn main\n two\n-three\n+THREE\n four\n";
        let files = parse(diff).unwrap();
        let e = apply_hunks(
            b"one\nTWO\nthree\nfour\n",
            &files[0].hunks,
            ApplyOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.hunk, 1);
        assert_eq!(e.header, "@@ -2,3 +2,3 @@ fn main");
        assert_eq!(e.expected[0], "two");
        assert_eq!(e.found[0], "TWO");
        assert!(
            e.to_string().contains("expected \"two\", found \"TWO\""),
            "{e}"
        );
        // Whitespace-only differences apply with ignore_whitespace.
        let ok = apply_hunks(
            b"one\ntwo  \nthree\n four\n",
            &files[0].hunks,
            ApplyOptions {
                ignore_whitespace: true,
                ..ApplyOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ok, b"one\ntwo  \nTHREE\n four\n");
    }
}
