//! What a series says it is based on (pure): the `base-commit:` footer of
//! `git format-patch --base` (and b4), and Patchew's `Based-on:` lines
//! naming the Message-ID of another series it needs first.
//!
//! Read from the decoded body text of the cover letter or a patch; never
//! from a quoted line (`> base-commit:` in a reply is someone else's).

/// A series' base as its mails state it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesBase {
    /// The full commit id (`base-commit:`), lower-case hex.
    pub commit: Option<String>,
    /// Message-IDs (without angle brackets) of series this one is based on.
    pub based_on: Vec<String>,
}

/// The base a body states. `base-commit:` must be a full 40 (SHA-1) or 64
/// (SHA-256) hex id, as git writes it, so a prose line cannot name one;
/// `Based-on:` takes `<id>` or a bare `id@host`.
pub fn series_base(body: &str) -> SeriesBase {
    let mut base = SeriesBase::default();
    let mut in_hunk = false;
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        // Inside a diff, `base-commit:` at the start of a line can only be
        // a context line of a file (written ` base-commit:`) or not there
        // at all, so only hunk lines need skipping.
        if line.starts_with("@@ ") {
            in_hunk = true;
            continue;
        }
        if in_hunk && (line.starts_with([' ', '+', '-', '\\']) || line.is_empty()) {
            continue;
        }
        in_hunk = false;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("base-commit") {
            let hex = value.to_ascii_lowercase();
            let full = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit());
            if full && base.commit.is_none() {
                base.commit = Some(hex);
            }
        } else if key.eq_ignore_ascii_case("based-on") {
            let id = value
                .strip_prefix('<')
                .and_then(|v| v.split_once('>'))
                .map(|(id, _)| id)
                .unwrap_or(value);
            let bare = !id.is_empty() && id.contains('@') && !id.contains(char::is_whitespace);
            if bare && !base.based_on.iter().any(|b| b == id) {
                base.based_on.push(id.to_owned());
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9852d85ec9d492ebef56dc5f229416c925758edc";

    #[test]
    fn footers_of_git_b4_and_patchew() {
        let cases: Vec<(String, SeriesBase)> = vec![
            // git format-patch --base, cover letter: after the diffstat.
            (
                format!(
                    "Text.\n\nA (2):\n  a\n\n a | 1 +\n\nbase-commit: {SHA}\nprerequisite-patch-id: 1111111111111111111111111111111111111111\n-- \n2.47.3\n"
                ),
                SeriesBase {
                    commit: Some(SHA.into()),
                    based_on: vec![],
                },
            ),
            // A single patch: after its diff, whose last hunk ends first.
            (
                format!(
                    "Msg.\n---\n a | 2 +-\n\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-x\n+y\n\nbase-commit: {}\n-- \n2.47.3\n",
                    SHA.to_uppercase()
                ),
                SeriesBase {
                    commit: Some(SHA.into()),
                    based_on: vec![],
                },
            ),
            // Patchew's Based-on, bracketed or bare, several, not doubled.
            (
                "Needs these first.\n\nBased-on: <20240101.1@a.org>\nBased-on: 20240102.2@b.org\nbased-on: <20240101.1@a.org>\n".to_owned(),
                SeriesBase {
                    commit: None,
                    based_on: vec!["20240101.1@a.org".into(), "20240102.2@b.org".into()],
                },
            ),
            // Not footers: quoted, abbreviated, prose, inside a hunk.
            (
                format!(
                    "> base-commit: {SHA}\nbase-commit: 9852d85\nBased-on: the work of last year\ndiff --git a/a b/a\n@@ -1,2 +1,2 @@\n base-commit: {SHA}\n-x\n+y\n"
                ),
                SeriesBase::default(),
            ),
        ];
        for (body, want) in &cases {
            assert_eq!(&series_base(body), want, "{body}");
            let crlf = body.replace('\n', "\r\n");
            assert_eq!(&series_base(&crlf), want, "CRLF {body}");
        }
    }
}
