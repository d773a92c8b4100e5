//! Pull requests: the `[GIT PULL]`/`[PULL]` mails intake kept, and what
//! the apply stage made of each (one row per request mail).
//!
//! As with builds, `result` holds the outcome as the stage describes it
//! (JSON, never looked into here); `state` repeats its verdict so a
//! request that landed or was refused is not taken again.

use super::{Error, Store, now};
use crate::mail::subject::SubjectFields;
use crate::vocabulary::vocabulary;
use rusqlite::params;
use serde::Serialize;

vocabulary! {
    /// What became of a pull request.
    pub enum PullState {
        /// Its commits are on the routed branch (fast-forward or merge).
        Landed = "landed",
        /// Refused (moved tip, not allowed, conflicts, unreadable text):
        /// final, like a failed series; a new request is a new mail.
        Refused = "refused",
        /// A QEMU-style `[PULL 00/N]` cover without `git request-pull`
        /// text: its `[PULL n/N]` patches went through the apply stage as
        /// a series.
        AsSeries = "as-series",
    }
}

/// A kept pull request mail not dealt with yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPull {
    pub mail_id: i64,
    pub message_id: String,
    pub subject: String,
    pub from_email: Option<String>,
    pub fields: SubjectFields,
    /// The raw mail, relative to the archive directory.
    pub raw_path: String,
    pub list_id: Option<String>,
}

/// What an outcome decoded without its state says: refused, so it is
/// never counted as landed.
impl Default for PullState {
    fn default() -> Self {
        PullState::Refused
    }
}

impl Store {
    /// Every pull request mail (the request itself: unnumbered or `0/N`;
    /// the numbered patches a QEMU-style `[PULL 03/15]` carries along are
    /// not requests) with no recorded outcome, in order of arrival.
    pub fn pending_pulls(&self) -> Result<Vec<PendingPull>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.id, m.message_id, m.subject, m.from_email, m.fields, m.raw_path, m.list_id
                 FROM mails m
                 WHERE m.error IS NULL AND m.is_patch = 0 AND m.fields IS NOT NULL
                   AND json_extract(m.fields, '$.kind') = 'pull'
                   AND COALESCE(json_extract(m.fields, '$.index'), 0) = 0
                   AND NOT EXISTS (SELECT 1 FROM pulls p WHERE p.mail_id = m.id)
                 ORDER BY m.received_at, m.id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            let fields: String = r.get(4)?;
            Ok(PendingPull {
                mail_id: r.get(0)?,
                message_id: r.get(1)?,
                subject: r.get(2)?,
                from_email: r.get(3)?,
                fields: serde_json::from_str(&fields).unwrap_or_default(),
                raw_path: r.get(5)?,
                list_id: r.get(6)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Records what `run` made of the request in mail `mail_id`; `moved`
    /// is `(repo, branch, new tip)` when it moved a branch.
    pub fn record_pull<T: Serialize>(
        &mut self,
        mail_id: i64,
        run: i64,
        state: PullState,
        moved: Option<(&str, &str, &str)>,
        result: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(result).map_err(|source| Error::Encode {
            path: self.path.clone(),
            what: format!("pull request of mail {mail_id} in run {run}"),
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO pulls (mail_id, run_id, state, repo, branch, new_tip, result, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (mail_id) DO UPDATE SET run_id = excluded.run_id,
                    state = excluded.state, repo = excluded.repo, branch = excluded.branch,
                    new_tip = excluded.new_tip, result = excluded.result,
                    finished_at = excluded.finished_at",
                params![
                    mail_id,
                    run,
                    state,
                    moved.map(|m| m.0),
                    moved.map(|m| m.1),
                    moved.map(|m| m.2),
                    json,
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The outcomes recorded in `run` (JSON, as the stage wrote them), in
    /// the order they were decided: what a resumed apply stage reports of
    /// the attempt that was killed.
    pub fn pulls_of_run(&self, run: i64) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT result FROM pulls WHERE run_id = ?1 ORDER BY finished_at, mail_id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([run], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The branches the pull requests landed in `run` moved, with their
    /// last tip, in the order they landed.
    pub fn pull_moved_branches(&self, run: i64) -> Result<Vec<(String, String, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT repo, branch, new_tip FROM pulls
                 WHERE run_id = ?1 AND state = 'landed' AND new_tip IS NOT NULL
                 ORDER BY finished_at, mail_id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The pull request cover (`[PULL 00/N]`, `[GIT PULL 0/N]`) with
    /// Message-ID `message_id`, as its raw archive path.
    pub fn pull_cover(&self, message_id: &str) -> Result<Option<String>, Error> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT raw_path FROM mails WHERE message_id = ?1 AND error IS NULL
                   AND json_extract(fields, '$.kind') = 'pull'
                   AND COALESCE(json_extract(fields, '$.index'), 0) = 0",
                [message_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The series holding the mail `message_id` (cover letter or patch), as
    /// `(key, state)`: what a `Based-on:` line points at.
    pub fn series_of_mail(
        &self,
        message_id: &str,
    ) -> Result<Option<(String, super::SeriesState)>, Error> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT s.key, s.state FROM mails m JOIN patches p ON p.mail_id = m.id
                 JOIN series s ON s.id = p.series_id
                 WHERE m.message_id = ?1 ORDER BY s.id DESC LIMIT 1",
                [message_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
