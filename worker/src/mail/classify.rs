//! Classification of a parsed mail (pure): patch, cover letter, or not a
//! patch with the reason the report shows.

use crate::mail::parse::ParsedMail;
use crate::mail::subject::{SubjectFields, SubjectGrammar};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
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

pub fn classify(mail: &ParsedMail, grammar: &SubjectGrammar) -> Verdict {
    match grammar.parse(&mail.subject) {
        Err(not) => Verdict {
            is_patch: false,
            is_cover: false,
            fields: None,
            reason: Some(not.to_string()),
        },
        Ok(fields) if fields.index == Some(0) => Verdict {
            is_patch: true,
            is_cover: true,
            fields: Some(fields),
            reason: None,
        },
        Ok(fields) if !mail.has_diff => Verdict {
            is_patch: false,
            is_cover: false,
            fields: Some(fields),
            reason: Some(NO_DIFF.to_owned()),
        },
        Ok(fields) => Verdict {
            is_patch: true,
            is_cover: false,
            fields: Some(fields),
            reason: None,
        },
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
}
