//! Classification of a parsed mail (pure): patch, cover letter, pull
//! request, reply, or not a patch with the reason the report shows.
//!
//! A pull request is kept with its fields and `kind` but is never a patch
//! (`is_patch` false): the apply stage must not take it.

use crate::mail::parse::ParsedMail;
use crate::mail::subject::{self, NotPatch, SubjectFields, SubjectGrammar, SubjectKind};
use serde::Serialize;

/// What a mail is, as `patchline parse` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailKind {
    Patch,
    Cover,
    /// `[PULL]`, `[GIT PULL]`: kept, not applied.
    Pull,
    Reply,
    /// No patch subject, an impossible numbering, or no diff.
    NotPatch,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Patch => "patch",
            MailKind::Cover => "cover",
            MailKind::Pull => "pull",
            MailKind::Reply => "reply",
            MailKind::NotPatch => "not-patch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kind: MailKind,
    /// Every word of the subject's bracket groups, as written.
    pub prefixes: Vec<String>,
    pub is_patch: bool,
    /// A series' cover letter (`0/N`): part of the series, no diff needed.
    pub is_cover: bool,
    /// The subject fields whenever the subject matched, even when the mail
    /// is not taken as a patch (no diff), so callers can show them.
    pub fields: Option<SubjectFields>,
    /// Why it is not a patch.
    pub reason: Option<String>,
}

pub const NO_DIFF: &str = "subject matched but no diff";

pub const PULL_REQUEST: &str = "pull request: kept, not applied";

pub fn classify(mail: &ParsedMail, grammar: &SubjectGrammar) -> Verdict {
    let verdict = |kind, fields, reason: Option<String>| Verdict {
        kind,
        prefixes: subject::prefixes(&mail.subject),
        is_patch: matches!(kind, MailKind::Patch | MailKind::Cover),
        is_cover: kind == MailKind::Cover,
        fields,
        reason,
    };
    match grammar.parse(&mail.subject) {
        Err(NotPatch::Reply) => verdict(MailKind::Reply, None, Some(NotPatch::Reply.to_string())),
        Err(not) => verdict(MailKind::NotPatch, None, Some(not.to_string())),
        // A QEMU-style `[PULL 03/15]` carries a patch of the request: a
        // patch (grouped under the `[PULL 00/15]` cover's thread), which
        // the apply stage takes as a series only when the cover has no
        // `git request-pull` text to fetch (`stage::apply`).
        Ok(fields)
            if fields.kind == SubjectKind::Pull
                && fields.index.is_some_and(|i| i > 0)
                && mail.has_diff =>
        {
            verdict(MailKind::Patch, Some(fields), None)
        }
        // Before the cover test: `[PULL 0/3]` is a pull request's cover.
        Ok(fields) if fields.kind == SubjectKind::Pull => {
            verdict(MailKind::Pull, Some(fields), Some(PULL_REQUEST.to_owned()))
        }
        Ok(fields) if fields.index == Some(0) => verdict(MailKind::Cover, Some(fields), None),
        Ok(fields) if !mail.has_diff => {
            verdict(MailKind::NotPatch, Some(fields), Some(NO_DIFF.to_owned()))
        }
        Ok(fields) => verdict(MailKind::Patch, Some(fields), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::{MailLimits, parse_mail};

    fn verdict(fixture: &str) -> Vec<Verdict> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mail")
            .join(fixture);
        let raw = std::fs::read_to_string(path).unwrap().replace("\r\n", "\n");
        [raw.clone(), raw.replace('\n', "\r\n")]
            .iter()
            .map(|r| {
                let mail = parse_mail(r.as_bytes(), &MailLimits::default()).unwrap();
                classify(&mail, &SubjectGrammar::default())
            })
            .collect()
    }

    #[test]
    fn fixtures_are_classified() {
        let cases: &[(&str, bool, bool, Option<&str>)] = &[
            ("plain-patch.eml", true, false, None),
            ("cover-letter.eml", true, true, None),
            ("team-form.eml", true, false, None),
            ("encoded-subject.eml", true, false, None),
            ("base64-patch.eml", true, false, None),
            ("qp-patch.eml", true, false, None),
            ("attachment-patch.eml", true, false, None),
            ("html-only.eml", false, false, Some(NO_DIFF)),
            ("reply.eml", false, false, Some("reply to a patch")),
        ];
        for (fixture, is_patch, is_cover, reason) in cases {
            for v in verdict(fixture) {
                assert_eq!(v.is_patch, *is_patch, "{fixture}: {v:?}");
                assert_eq!(v.is_cover, *is_cover, "{fixture}: {v:?}");
                assert_eq!(v.reason.as_deref(), *reason, "{fixture}: {v:?}");
            }
        }
        let team = &verdict("team-form.eml")[0];
        let fields = team.fields.as_ref().unwrap();
        assert_eq!(fields.branch.as_deref(), Some("stable-1.0"));
        assert_eq!(fields.repo.as_deref(), Some("kimchi"));
        assert_eq!(fields.version, 2);
    }

    fn mail_with(subject: &str, has_diff: bool) -> ParsedMail {
        let diff = if has_diff {
            "---\n a | 1 +\n\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -0,0 +1 @@\n+x\n"
        } else {
            "Please pull.\n"
        };
        let raw = format!(
            "From: A <a@example.org>\nMessage-ID: <m@x>\nSubject: {subject}\n\nBody.\n{diff}"
        );
        parse_mail(raw.as_bytes(), &MailLimits::default()).unwrap()
    }

    #[test]
    fn kinds_table() {
        let g = SubjectGrammar::default();
        let cases: &[(&str, bool, MailKind, bool, &[&str])] = &[
            (
                "[PATCH v2 1/2] t",
                true,
                MailKind::Patch,
                true,
                &["PATCH", "v2", "1/2"],
            ),
            (
                "[PATCH 0/2] t",
                false,
                MailKind::Cover,
                true,
                &["PATCH", "0/2"],
            ),
            (
                "[GIT PULL] t",
                false,
                MailKind::Pull,
                false,
                &["GIT", "PULL"],
            ),
            (
                "[PULL v2 0/3] t",
                true,
                MailKind::Pull,
                false,
                &["PULL", "v2", "0/3"],
            ),
            (
                "[master GIT PULL hello] t",
                false,
                MailKind::Pull,
                false,
                &["master", "GIT", "PULL", "hello"],
            ),
            // A QEMU-style pull's patch: a patch of the request's series.
            (
                "[PULL 03/15] t",
                true,
                MailKind::Patch,
                true,
                &["PULL", "03/15"],
            ),
            (
                "[PULL 03/15] t",
                false,
                MailKind::Pull,
                false,
                &["PULL", "03/15"],
            ),
            ("Re: [PATCH] t", true, MailKind::Reply, false, &["PATCH"]),
            ("Sv: [PULL] t", false, MailKind::Reply, false, &["PULL"]),
            ("[PATCH] t", false, MailKind::NotPatch, false, &["PATCH"]),
            (
                "[ANNOUNCE] t",
                false,
                MailKind::NotPatch,
                false,
                &["ANNOUNCE"],
            ),
        ];
        for (subject, has_diff, kind, is_patch, prefixes) in cases {
            let v = classify(&mail_with(subject, *has_diff), &g);
            assert_eq!(v.kind, *kind, "{subject}: {v:?}");
            assert_eq!(v.is_patch, *is_patch, "{subject}: {v:?}");
            assert_eq!(v.prefixes, *prefixes, "{subject}: {v:?}");
        }
        let pull = classify(&mail_with("[PULL v2 0/3] t", true), &g);
        assert!(!pull.is_cover, "a pull request's 0/N is no patch cover");
        assert_eq!(pull.reason.as_deref(), Some(PULL_REQUEST));
        assert_eq!(pull.fields.map(|f| f.version), Some(2));
    }
}
