//! Runs: one row per pipeline run, with what it was started with (trigger,
//! cause, options, the stage it begins at) and how it ended.

use super::{Error, Stage, Store, now};
use crate::vocabulary::vocabulary;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

vocabulary! {
    /// What started a run.
    pub enum Trigger {
        Timer = "timer",
        Manual = "manual",
        Api = "api",
    }
}

vocabulary! {
    /// Where a run is: `running` until its report stage ended, then `ok` or
    /// `failed` (decided by `stage::final_state`).
    pub enum RunState {
        Running = "running",
        Ok = "ok",
        Failed = "failed",
    }
}

/// What a run was created with: the repositories it is for (empty: every
/// configured one) and whether it publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub repos: Vec<String>,
    /// Run every stage but publish, which is recorded `skipped`.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub trigger: Trigger,
    pub cause: Option<String>,
    pub started_by: Option<String>,
    pub jenkins_url: Option<String>,
    pub state: RunState,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The stage the run begins at: `collect`, or the stage of the
    /// per-stage command that created it (`patchline apply` makes a run
    /// that begins at `apply`).
    #[serde(skip)]
    pub first_stage: Stage,
    #[serde(skip)]
    pub options: RunOptions,
    /// Created through the HTTP worker (`POST /runs`): such runs hold
    /// their repositories until their report stage ends.
    #[serde(skip)]
    pub via_api: bool,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub trigger: Trigger,
    pub cause: Option<&'a str>,
    pub started_by: Option<&'a str>,
    pub jenkins_url: Option<&'a str>,
    pub first_stage: Stage,
    pub options: RunOptions,
    pub via_api: bool,
}

#[cfg(test)]
impl NewRun<'static> {
    /// A run beginning at collect, with nothing else said.
    pub fn for_test(trigger: Trigger) -> Self {
        NewRun {
            trigger,
            cause: None,
            started_by: None,
            jenkins_url: None,
            first_stage: Stage::Collect,
            options: RunOptions::default(),
            via_api: false,
        }
    }
}

const COLUMNS: &str = "id, trigger, cause, started_by, jenkins_url, state, created_at, finished_at, first_stage, repos, dry_run, via_api";

impl Store {
    /// Creates a run and returns its id.
    pub fn create_run(&mut self, new: &NewRun<'_>) -> Result<i64, Error> {
        insert_run(&self.conn, new).map_err(|e| self.err(e))
    }

    /// Creates a run unless `refuse`, shown the unfinished runs made
    /// through the HTTP worker, returns why not; both in one transaction,
    /// so two requests cannot both pass the check.
    pub fn create_run_unless<T>(
        &mut self,
        new: &NewRun<'_>,
        refuse: impl FnOnce(&[RunRow]) -> Option<T>,
    ) -> Result<Result<i64, T>, Error> {
        let (tx, wrap) = self.immediate()?;
        let open: Vec<RunRow> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM runs WHERE finished_at IS NULL AND via_api = 1 ORDER BY id"
                ))
                .map_err(&wrap)?;
            stmt.query_map([], run_from_row)
                .and_then(|rows| rows.collect())
                .map_err(&wrap)?
        };
        if let Some(why) = refuse(&open) {
            return Ok(Err(why));
        }
        let id = insert_run(&tx, new).map_err(&wrap)?;
        tx.commit().map_err(&wrap)?;
        Ok(Ok(id))
    }

    pub fn run(&self, id: i64) -> Result<RunRow, Error> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(Error::NoSuchRun(id))
    }

    pub fn latest_run(&self) -> Result<Option<RunRow>, Error> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM runs ORDER BY id DESC LIMIT 1"),
                [],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` runs older than `before`, newest first.
    pub fn runs_before(&self, before: i64, limit: u32) -> Result<Vec<RunRow>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![before, limit], run_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Marks `run` running again (a resumed run, until its report ends).
    pub fn reopen_run(&mut self, run: i64) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE runs SET state = 'running', finished_at = NULL WHERE id = ?1",
                [run],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records how `run` ended.
    pub fn finish_run(&mut self, run: i64, state: RunState) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?2, finished_at = ?3 WHERE id = ?1",
                params![run, state, now()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

fn insert_run(conn: &rusqlite::Connection, new: &NewRun<'_>) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO runs (trigger, cause, started_by, jenkins_url, created_at, first_stage, repos, dry_run, via_api)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            new.trigger,
            new.cause,
            new.started_by,
            new.jenkins_url,
            now(),
            new.first_stage,
            serde_json::to_string(&new.options.repos).unwrap_or_else(|_| "[]".into()),
            new.options.dry_run,
            new.via_api
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let repos: String = r.get(9)?;
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        cause: r.get(2)?,
        started_by: r.get(3)?,
        jenkins_url: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        finished_at: r.get(7)?,
        first_stage: r.get(8)?,
        options: RunOptions {
            repos: serde_json::from_str(&repos).unwrap_or_default(),
            dry_run: r.get(10)?,
        },
        via_api: r.get(11)?,
    })
}
