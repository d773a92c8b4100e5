//! The outbox: composed reports until they are sent. A report is stored
//! once per run and key, as the exact bytes to send; a failed send leaves
//! it queued with its error, never drops it.

use super::{Error, Store, now};
use crate::vocabulary::vocabulary;
use rusqlite::{OptionalExtension, params};

/// A composed report, to be kept in the outbox.
#[derive(Debug, Clone, Copy)]
pub struct NewReport<'a> {
    pub run: i64,
    pub key: &'a str,
    pub message_id: &'a str,
    pub subject: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The RFC 5322 message.
    pub raw: &'a [u8],
    /// Queued for sending; `false` when no transport is configured and the
    /// report is only written to files.
    pub queued: bool,
}

/// A report as first stored: the same Message-ID and bytes on every later
/// attempt of the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    pub message_id: String,
    pub raw: Vec<u8>,
}

/// A queued report, with what a send needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReport {
    pub id: i64,
    pub run: i64,
    pub key: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub attempts: u32,
}

vocabulary! {
    /// Where a composed report is.
    pub enum OutboxState {
        /// Written to the run's directory only (no transport configured).
        Written = "written",
        /// Waiting to be sent (again).
        Queued = "queued",
        Sent = "sent",
    }
}

impl Store {
    /// The report `key` of `run` as stored, if it is in the outbox.
    pub fn stored_report(&self, run: i64, key: &str) -> Result<Option<StoredReport>, Error> {
        self.conn
            .query_row(
                "SELECT message_id, raw FROM outbox WHERE run_id = ?1 AND key = ?2",
                params![run, key],
                |r| {
                    Ok(StoredReport {
                        message_id: r.get(0)?,
                        raw: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Puts a composed report into the outbox; a second report with the
    /// same run and key is refused (the first one is the one to send).
    pub fn add_to_outbox(&mut self, report: &NewReport<'_>) -> Result<(), Error> {
        let recipients =
            serde_json::to_string(report.recipients).map_err(|source| Error::Encode {
                path: self.path.clone(),
                what: format!("recipients of report {} of run {}", report.key, report.run),
                source,
            })?;
        self.conn
            .execute(
                "INSERT INTO outbox (run_id, key, message_id, subject, sender, recipients, raw, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    report.run,
                    report.key,
                    report.message_id,
                    report.subject,
                    report.sender,
                    recipients,
                    report.raw,
                    if report.queued {
                        OutboxState::Queued
                    } else {
                        OutboxState::Written
                    },
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every queued report of every run, oldest first. Recipients that no
    /// longer decode come back empty, so that report's send fails (and
    /// says so) while the others are still sent.
    pub fn queued_reports(&self) -> Result<Vec<QueuedReport>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, run_id, key, sender, recipients, raw, attempts FROM outbox
                 WHERE state = 'queued' ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            let recipients: String = r.get(4)?;
            Ok(QueuedReport {
                id: r.get(0)?,
                run: r.get(1)?,
                key: r.get(2)?,
                sender: r.get(3)?,
                recipients: serde_json::from_str(&recipients).unwrap_or_default(),
                raw: r.get(5)?,
                attempts: r.get(6)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Records a send attempt of outbox report `id`: sent, or still queued
    /// with the last error; `attempts` counts every try so far.
    pub fn record_delivery(
        &mut self,
        id: i64,
        sent: bool,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4, sent_at = ?5 WHERE id = ?1",
                params![
                    id,
                    if sent {
                        OutboxState::Sent
                    } else {
                        OutboxState::Queued
                    },
                    attempts,
                    error,
                    sent.then(now)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether a report with `key` was composed in any run: replies that
    /// are sent once per series and state (held, superseded) look here.
    pub fn report_key_used(&self, key: &str) -> Result<bool, Error> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE key = ?1)",
                [key],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The outbox state (`written`, `queued` or `sent`) and attempts of
    /// report `key` of `run`.
    pub fn outbox_state(&self, run: i64, key: &str) -> Result<Option<(OutboxState, u32)>, Error> {
        self.conn
            .query_row(
                "SELECT state, attempts FROM outbox WHERE run_id = ?1 AND key = ?2",
                params![run, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Trigger};

    fn report<'a>(run: i64, key: &'a str, recipients: &'a [String]) -> NewReport<'a> {
        NewReport {
            run,
            key,
            message_id: "m.1@example.org",
            subject: "run report",
            sender: "patchline@example.org",
            recipients,
            raw: b"Subject: run report\r\n\r\nbody\r\n",
            queued: true,
        }
    }

    #[test]
    fn a_report_stays_queued_until_sent() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let to = vec!["list@example.org".to_owned()];
        s.add_to_outbox(&report(run, "run", &to)).unwrap();
        s.add_to_outbox(&NewReport {
            queued: false,
            ..report(run, "written", &to)
        })
        .unwrap();
        assert!(s.add_to_outbox(&report(run, "run", &to)).is_err());
        assert_eq!(
            s.stored_report(run, "run").unwrap(),
            Some(StoredReport {
                message_id: "m.1@example.org".into(),
                raw: b"Subject: run report\r\n\r\nbody\r\n".to_vec(),
            })
        );
        assert_eq!(s.stored_report(run, "other").unwrap(), None);

        let queued = s.queued_reports().unwrap();
        assert_eq!(queued.len(), 1, "a written report is not sent");
        assert_eq!(queued[0].key, "run");
        assert_eq!(queued[0].recipients, to);
        s.record_delivery(queued[0].id, false, 3, Some("refused"))
            .unwrap();
        assert_eq!(
            s.outbox_state(run, "run").unwrap(),
            Some((OutboxState::Queued, 3))
        );
        s.record_delivery(queued[0].id, true, 4, None).unwrap();
        assert_eq!(
            s.outbox_state(run, "run").unwrap(),
            Some((OutboxState::Sent, 4))
        );
        assert_eq!(
            s.outbox_state(run, "written").unwrap(),
            Some((OutboxState::Written, 0))
        );
        assert!(s.queued_reports().unwrap().is_empty());
    }
}
