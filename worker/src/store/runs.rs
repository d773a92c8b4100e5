//! Runs: one row per pipeline run, with what it was started with.

use super::{Error, Store, now};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub cause: Option<String>,
    pub started_by: Option<String>,
    pub jenkins_url: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    pub fn create_run(
        &mut self,
        trigger: &str,
        cause: Option<&str>,
        started_by: Option<&str>,
        jenkins_url: Option<&str>,
    ) -> Result<i64, Error> {
        self.conn
            .execute(
                "INSERT INTO runs (trigger, cause, started_by, jenkins_url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![trigger, cause, started_by, jenkins_url, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn run(&self, id: i64) -> Result<RunRow, Error> {
        self.conn
            .query_row(
                "SELECT id, trigger, cause, started_by, jenkins_url, state, created_at, finished_at FROM runs WHERE id = ?1",
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
                "SELECT id, trigger, cause, started_by, jenkins_url, state, created_at, finished_at FROM runs ORDER BY id DESC LIMIT 1",
                [],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        cause: r.get(2)?,
        started_by: r.get(3)?,
        jenkins_url: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        finished_at: r.get(7)?,
    })
}
