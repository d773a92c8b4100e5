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

    /// Records what `run` made of the request in mail `mail_id`.
    pub fn record_pull<T: Serialize>(
        &mut self,
        mail_id: i64,
        run: i64,
        state: PullState,
        result: &T,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(result).map_err(|source| Error::Encode {
            path: self.path.clone(),
            what: format!("pull request of mail {mail_id} in run {run}"),
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO pulls (mail_id, run_id, state, result, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (mail_id) DO UPDATE SET run_id = excluded.run_id,
                    state = excluded.state, result = excluded.result,
                    finished_at = excluded.finished_at",
                params![mail_id, run, state, json, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The outcomes recorded in `run`, in the order they were decided.
    pub fn run_pulls(&self, run: i64) -> Result<Vec<(PullState, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT state, result FROM pulls WHERE run_id = ?1 ORDER BY finished_at, mail_id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }
}
