//! The patch subject grammar (pure): the team's `[branch PATCH repo] title`
//! form, the ordinary `[PATCH v2 3/7]` forms, and user regexes.
//! OWNER: subject/mail helper. The types below are the contract.

use serde::{Deserialize, Serialize};

/// The fields a patch subject carries. `version` is 1 when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubjectFields {
    pub branch: Option<String>,
    pub repo: Option<String>,
    pub version: u32,
    pub index: Option<u32>,
    pub total: Option<u32>,
    pub title: String,
    /// Every other word found in the bracketed prefixes (`RFC`, `RESEND`,
    /// `qemu`, ...), in order, as written.
    pub tags: Vec<String>,
}

/// Why a subject is not a patch subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPatch {
    /// No `[... PATCH ...]` prefix and no user pattern matched.
    NoMatch,
    /// `Re:`/`AW:`... in front: a reply in a patch thread.
    Reply,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("subject pattern {pattern:?} is not a valid regex: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct SubjectGrammar {
    custom: Vec<regex::Regex>,
}

impl SubjectGrammar {
    pub fn new(patterns: &[String]) -> Result<Self, Error> {
        let custom = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|source| Error::BadPattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { custom })
    }

    pub fn parse(&self, _subject: &str) -> Result<SubjectFields, NotPatch> {
        let _ = &self.custom;
        Err(NotPatch::NoMatch)
    }
}
