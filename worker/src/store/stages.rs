//! Stages: one row per run and stage, with its state, whether it ran to its
//! end, the process running it and its summary; and the event log.
//!
//! The store only records; what may start when, and what a run's end
//! state is, the state machine (`crate::stage`) decides.

use super::{Error, RunRow, Store, now};
use crate::vocabulary::vocabulary;
use rusqlite::params;
use serde::Serialize;

vocabulary! {
    /// The stages of a run, in order.
    pub enum Stage {
        Collect = "collect",
        Apply = "apply",
        Build = "build",
        Publish = "publish",
        Test = "test",
        Report = "report",
    }
}

impl Stage {
    /// The stage before this one (`None` for `collect`).
    pub fn before(self) -> Option<Stage> {
        let i = Stage::ALL.iter().position(|s| *s == self)?;
        i.checked_sub(1).map(|i| Stage::ALL[i])
    }
}

vocabulary! {
    /// A stage's state. `pending` is never stored: it is how a stage
    /// without a row (not started) is shown.
    pub enum StageState {
        Pending = "pending",
        Queued = "queued",
        Running = "running",
        Ok = "ok",
        Failed = "failed",
        Skipped = "skipped",
        Interrupted = "interrupted",
    }
}

impl StageState {
    /// Admitted and not finished: queued, or running.
    pub fn is_active(self) -> bool {
        matches!(self, StageState::Queued | StageState::Running)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageRow {
    pub stage: Stage,
    pub state: StageState,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The stage ran to its end: what it did can be used by the next stage
    /// (always so for `ok` and `skipped`; for `failed`, when the stage
    /// finished with problems, e.g. a series that did not apply, rather
    /// than being stopped by an error).
    #[serde(skip)]
    pub completed: bool,
    /// The process that admitted or runs the stage (while it is active).
    #[serde(skip)]
    pub pid: Option<u32>,
}

/// How a stage ended, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct StageEnd<'a> {
    pub state: StageState,
    pub completed: bool,
    pub summary: &'a serde_json::Value,
    pub error: Option<&'a str>,
}

const COLUMNS: &str = "stage, state, started_at, finished_at, summary, error, completed, pid";

/// A row of [`COLUMNS`] starting at column `at`.
fn stage_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StageRow> {
    let summary: Option<String> = r.get(at + 4)?;
    Ok(StageRow {
        stage: r.get(at)?,
        state: r.get(at + 1)?,
        started_at: r.get(at + 2)?,
        finished_at: r.get(at + 3)?,
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        error: r.get(at + 5)?,
        completed: r.get(at + 6)?,
        pid: r.get(at + 7)?,
    })
}

impl Store {
    /// The stages of `run` that have a row, in pipeline order.
    pub fn stages(&self, run: i64) -> Result<Vec<StageRow>, Error> {
        stages_of(&self.conn, run).map_err(|e| self.err(e))
    }

    /// Records `stage` of `run` as `state` (queued or running, by this
    /// process) if `admit`, shown the run and its stages, lets it; the
    /// check and the write in one transaction, so two callers cannot both
    /// be admitted.
    pub fn admit_stage<T>(
        &mut self,
        run: i64,
        stage: Stage,
        state: StageState,
        admit: impl FnOnce(&RunRow, &[StageRow]) -> Result<(), T>,
    ) -> Result<Result<(), T>, Error> {
        let row = self.run(run)?;
        let (tx, wrap) = self.immediate()?;
        let stages = stages_of(&tx, run).map_err(&wrap)?;
        if let Err(why) = admit(&row, &stages) {
            return Ok(Err(why));
        }
        let started = (state == StageState::Running).then(now);
        tx.execute(
            "INSERT INTO stages (run_id, stage, state, started_at, pid) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (run_id, stage) DO UPDATE SET state = excluded.state,
                started_at = COALESCE(excluded.started_at, started_at), finished_at = NULL,
                error = NULL, completed = 0, pid = excluded.pid",
            params![run, stage, state, started, std::process::id()],
        )
        .map_err(&wrap)?;
        tx.commit().map_err(&wrap)?;
        Ok(Ok(()))
    }

    /// Marks an admitted stage running, by this process.
    pub fn start_stage(&mut self, run: i64, stage: Stage) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO stages (run_id, stage, state, started_at, pid) VALUES (?1, ?2, 'running', ?3, ?4)
                 ON CONFLICT (run_id, stage) DO UPDATE SET state = 'running', started_at = excluded.started_at,
                    finished_at = NULL, error = NULL, completed = 0, pid = excluded.pid",
                params![run, stage, now(), std::process::id()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records how `stage` of `run` ended; a failed stage marks the run
    /// failed at once (its final state is decided when it finishes).
    pub fn finish_stage(
        &mut self,
        run: i64,
        stage: Stage,
        end: &StageEnd<'_>,
    ) -> Result<(), Error> {
        let tx = self.transaction()?;
        let res = (|| {
            tx.execute(
                "UPDATE stages SET state = ?3, finished_at = ?4, summary = ?5, error = ?6,
                    completed = ?7, pid = NULL,
                    started_at = COALESCE(started_at, ?4)
                 WHERE run_id = ?1 AND stage = ?2",
                params![
                    run,
                    stage,
                    end.state,
                    now(),
                    end.summary.to_string(),
                    end.error,
                    end.completed
                ],
            )?;
            if end.state == StageState::Failed {
                tx.execute("UPDATE runs SET state = 'failed' WHERE id = ?1", [run])?;
            }
            tx.commit()
        })();
        res.map_err(|e| self.err(e))
    }

    /// Every queued or running stage of every run: `(run, row)`.
    pub fn active_stages(&self) -> Result<Vec<(i64, StageRow)>, Error> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT run_id, {COLUMNS} FROM stages WHERE state IN ('queued', 'running') ORDER BY run_id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, stage_from_row(r, 1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Marks an active stage `interrupted` (its process is gone): `why`
    /// becomes its error. Returns whether it was still active.
    pub fn interrupt_stage(&mut self, run: i64, stage: Stage, why: &str) -> Result<bool, Error> {
        self.conn
            .execute(
                "UPDATE stages SET state = 'interrupted', finished_at = ?3, error = ?4, pid = NULL
                 WHERE run_id = ?1 AND stage = ?2 AND state IN ('queued', 'running')",
                params![run, stage, now(), why],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    pub fn event(
        &self,
        run: Option<i64>,
        stage: Option<Stage>,
        level: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO events (run_id, at, level, stage, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, now(), level, stage, message],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

fn stages_of(conn: &rusqlite::Connection, run: i64) -> rusqlite::Result<Vec<StageRow>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM stages WHERE run_id = ?1"))?;
    let mut rows: Vec<StageRow> = stmt
        .query_map([run], |r| stage_from_row(r, 0))?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|s| s.stage);
    Ok(rows)
}
