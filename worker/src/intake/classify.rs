//! TODO(h-subject): replaced by the subject helper.
use crate::intake::mail::ParsedMail;
use crate::intake::subject::{SubjectFields, SubjectGrammar};
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub is_patch: bool,
    pub is_cover: bool,
    pub fields: Option<SubjectFields>,
    pub reason: Option<String>,
}
pub fn classify(_mail: &ParsedMail, _grammar: &SubjectGrammar) -> Verdict {
    Verdict {
        is_patch: false,
        is_cover: false,
        fields: None,
        reason: None,
    }
}
