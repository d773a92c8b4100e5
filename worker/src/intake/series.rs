//! Series assembly (pure): which patch mails form which series, which are
//! complete, superseded, incomplete or expired, and which are duplicates.
//! OWNER: series helper. The types below are the contract.

use crate::intake::subject::SubjectFields;
use serde::Serialize;

/// A patch-classified mail as the assembler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMail {
    /// Row id in the `mails` table.
    pub mail_id: i64,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Sender's e-mail address, lower-cased.
    pub author: String,
    /// Unix seconds of the `Date:` header (or of arrival when missing).
    pub date: i64,
    /// Unix seconds when patchline stored it.
    pub received: i64,
    pub fields: SubjectFields,
    pub patch_hash: Option<String>,
    /// True for a cover letter (index 0, or no diff in a 0/N mail).
    pub is_cover: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblyConfig {
    /// Fallback grouping window (seconds) for mails of one author, version
    /// and total that are not threaded.
    pub thread_window: i64,
    /// An incomplete series older than this (seconds since its first mail
    /// arrived) is given up on and reported as expired.
    pub incomplete_deadline: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SeriesState {
    Complete,
    Incomplete { missing: Vec<u32> },
    Expired { missing: Vec<u32> },
    Superseded { by: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssembledSeries {
    /// Stable across runs: the Message-ID of the thread root (cover letter,
    /// or patch 1 when there is no cover), with `vN` appended for rerolls.
    pub key: String,
    pub version: u32,
    pub total: u32,
    /// Cover letter title, else patch 1's title.
    pub title: String,
    pub author: String,
    pub branch: Option<String>,
    pub repo: Option<String>,
    pub cover: Option<i64>,
    /// `(index, mail_id)`, sorted by index, one per index.
    pub patches: Vec<(u32, i64)>,
    pub state: SeriesState,
    /// Earliest `received` of its mails.
    pub first_received: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assembly {
    pub series: Vec<AssembledSeries>,
    /// `(duplicate mail_id, kept mail_id)`.
    pub duplicates: Vec<(i64, i64)>,
}

pub fn assemble(_mails: &[PatchMail], _now: i64, _cfg: &AssemblyConfig) -> Assembly {
    Assembly::default()
}
