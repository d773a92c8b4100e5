//! Stages: one row per run and stage, with its state and summary, and the
//! event log.

use super::{Error, Store, now};
use rusqlite::params;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageRow {
    pub stage: String,
    pub state: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl Store {
    pub fn stages(&self, run: i64) -> Result<Vec<StageRow>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT stage, state, started_at, finished_at, summary, error FROM stages WHERE run_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows: Vec<StageRow> = stmt
            .query_map([run], |r| {
                let summary: Option<String> = r.get(4)?;
                Ok(StageRow {
                    stage: r.get(0)?,
                    state: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                    error: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        rows.sort_by_key(|s| crate::stage::Stage::parse(&s.stage).map(|s| s as u8));
        Ok(rows)
    }

    pub fn start_stage(&mut self, run: i64, stage: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO stages (run_id, stage, state, started_at) VALUES (?1, ?2, 'running', ?3)
                 ON CONFLICT (run_id, stage) DO UPDATE SET state = 'running', started_at = excluded.started_at, finished_at = NULL, error = NULL",
                params![run, stage, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn finish_stage(
        &mut self,
        run: i64,
        stage: &str,
        ok: bool,
        summary: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), Error> {
        let tx = self.transaction()?;
        let res = (|| {
            tx.execute(
                "UPDATE stages SET state = ?3, finished_at = ?4, summary = ?5, error = ?6 WHERE run_id = ?1 AND stage = ?2",
                params![
                    run,
                    stage,
                    if ok { "ok" } else { "failed" },
                    now(),
                    summary.to_string(),
                    error
                ],
            )?;
            if !ok {
                tx.execute("UPDATE runs SET state = 'failed' WHERE id = ?1", [run])?;
            }
            tx.commit()
        })();
        res.map_err(|e| self.err(e))
    }

    pub fn event(
        &self,
        run: Option<i64>,
        stage: Option<&str>,
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
