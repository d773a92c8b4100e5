//! Stage jobs: admitting a stage start (order, one stage of a run at a
//! time, one unfinished run per repository), running it on a blocking
//! thread with its own `Store`, and recovering after a restart.
//!
//! A job's state lives in the `stages` table (`queued` is written on
//! admission, the pipeline writes `running`/`ok`/`failed`), so a client
//! that disconnects loses nothing and a restarted worker knows what was
//! cut short: `queued`/`running` rows become `interrupted` and can be
//! started again (stages are idempotent).

use super::error::ApiError;
use super::stage_log::{self, StageLog};
use crate::config::Config;
use crate::stage::collect::Progress;
use crate::stage::{self, Stage};
use crate::store::{self, Store, now};
use rusqlite::{OptionalExtension, params};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The worker's own table: what a run was created with. It is created by
/// `serve` (not a numbered migration: only the worker reads it, and a
/// database without it is simply one the worker has not used yet).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS server_runs (
    run_id  INTEGER PRIMARY KEY REFERENCES runs(id),
    repos   TEXT NOT NULL,
    dry_run INTEGER NOT NULL DEFAULT 0
);";

/// Stage states a job can be in. `pending` is never stored: it is how the
/// API shows a stage that was not started.
pub const ACTIVE: [&str; 2] = ["queued", "running"];
const DONE_FOR_NEXT: [&str; 2] = ["ok", "skipped"];

/// What a run was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub repos: Vec<String>,
    pub dry_run: bool,
}

/// Creates the worker's table and marks jobs a previous process left
/// unfinished as `interrupted`; returns how many there were.
pub fn prepare(store: &Store) -> Result<usize, store::Error> {
    store
        .conn()
        .execute_batch(SCHEMA)
        .map_err(|e| store.err(e))?;
    store
        .conn()
        .execute(
            "UPDATE stages SET state = 'interrupted', finished_at = ?1,
                error = 'the worker stopped while this stage ran; start the stage again to resume it'
             WHERE state IN ('queued', 'running')
               AND run_id IN (SELECT run_id FROM server_runs)",
            [now()],
        )
        .map_err(|e| store.err(e))
}

pub fn options(store: &Store, run: i64) -> Result<Option<RunOptions>, store::Error> {
    store
        .conn()
        .query_row(
            "SELECT repos, dry_run FROM server_runs WHERE run_id = ?1",
            [run],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
        )
        .optional()
        .map(|o| {
            o.map(|(repos, dry_run)| RunOptions {
                repos: serde_json::from_str(&repos).unwrap_or_default(),
                dry_run,
            })
        })
        .map_err(|e| store.err(e))
}

/// A new run, validated.
pub struct NewRun<'a> {
    pub trigger: &'a str,
    pub cause: &'a str,
    pub started_by: Option<&'a str>,
    pub jenkins_url: Option<&'a str>,
    pub options: RunOptions,
}

/// Creates a run unless an unfinished run of the worker covers one of its
/// repositories (409 naming that run).
pub fn create_run(store: &mut Store, new: &NewRun<'_>) -> Result<i64, ApiError> {
    let tx = store.transaction()?;
    let wrap = |e| ApiError::internal(format!("state database: {e}"));
    {
        let mut stmt = tx
            .prepare(
                "SELECT r.id, o.repos, r.jenkins_url FROM runs r JOIN server_runs o ON o.run_id = r.id
                 WHERE r.finished_at IS NULL ORDER BY r.id",
            )
            .map_err(wrap)?;
        let open: Vec<(i64, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(wrap)?;
        for (id, repos, url) in open {
            let repos: Vec<String> = serde_json::from_str(&repos).unwrap_or_default();
            if let Some(shared) = repos.iter().find(|r| new.options.repos.contains(r)) {
                let by = url.map(|u| format!(" ({u})")).unwrap_or_default();
                return Err(ApiError::conflict(
                    format!(
                        "run {id}{by} is still running for repository {shared}: one run at a time per repository; wait for it, or finish it by starting its report stage"
                    ),
                    Some(id),
                ));
            }
        }
    }
    tx.execute(
        "INSERT INTO runs (trigger, cause, started_by, jenkins_url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new.trigger, new.cause, new.started_by, new.jenkins_url, now()],
    )
    .map_err(wrap)?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO server_runs (run_id, repos, dry_run) VALUES (?1, ?2, ?3)",
        params![
            id,
            serde_json::to_string(&new.options.repos).unwrap_or_else(|_| "[]".into()),
            new.options.dry_run
        ],
    )
    .map_err(wrap)?;
    tx.commit().map_err(wrap)?;
    Ok(id)
}

/// The stored state of each stage of `run` that has a row.
fn stage_states(store: &Store, run: i64) -> Result<Vec<(String, String)>, store::Error> {
    let mut stmt = store
        .conn()
        .prepare("SELECT stage, state FROM stages WHERE run_id = ?1")
        .map_err(|e| store.err(e))?;
    stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(|e| store.err(e))
}

/// Admits `stage` of `run` and records it `queued`, or says why not: the
/// run does not exist (404), is finished, has a stage queued or running,
/// or the stage before this one has not finished ok (409). `report` may
/// start whatever the other stages did, as long as none is running.
pub fn admit_stage(store: &mut Store, run: i64, stage: Stage) -> Result<(), ApiError> {
    let row = store.run(run)?;
    if let Some(at) = row.finished_at {
        return Err(ApiError::conflict(
            format!("run {run} is finished (at {at}); create a new run"),
            Some(run),
        ));
    }
    let states = stage_states(store, run)?;
    if let Some((busy, state)) = states.iter().find(|(_, s)| ACTIVE.contains(&s.as_str())) {
        return Err(ApiError::conflict(
            format!("stage {busy} of run {run} is {state}; a run runs one stage at a time"),
            Some(run),
        ));
    }
    let position = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    if stage != Stage::Report && position > 0 {
        let before = Stage::ALL[position - 1];
        let state = states
            .iter()
            .find(|(s, _)| s == before.as_str())
            .map_or("not started", |(_, st)| st.as_str());
        if !DONE_FOR_NEXT.contains(&state) {
            return Err(ApiError::conflict(
                format!(
                    "stage {stage} of run {run} cannot start: {before} must finish ok first (it is {state})"
                ),
                Some(run),
            ));
        }
    }
    store
        .conn()
        .execute(
            "INSERT INTO stages (run_id, stage, state) VALUES (?1, ?2, 'queued')
             ON CONFLICT (run_id, stage) DO UPDATE SET state = 'queued', error = NULL",
            params![run, stage.as_str()],
        )
        .map_err(|e| store.err(e))?;
    Ok(())
}

/// What a job needs, shared by all jobs of the worker.
pub struct JobContext {
    pub config: Arc<Config>,
    pub db: PathBuf,
    pub logs: PathBuf,
    pub running: AtomicUsize,
}

/// Progress of `collect` as log lines.
struct LogProgress;

impl Progress for LogProgress {
    fn mail(&self, stored: u64, origin: &str) {
        if stored % 64 == 1 {
            tracing::info!(stored, origin, "mail stored");
        }
    }
}

/// Runs `stage` of `run` to its end and records the outcome; meant for a
/// blocking thread, detached from the request that started it.
pub fn run_job(ctx: &JobContext, run: i64, stage: Stage) {
    ctx.running.fetch_add(1, Ordering::SeqCst);
    let log = StageLog::open(&ctx.logs, run, stage);
    if let Err(e) = &log {
        tracing::error!(run, %stage, "cannot open the stage log: {e}");
    }
    let span = tracing::info_span!("stage", run, stage = stage.as_str());
    let entered = span.enter();
    tracing::info!(
        "{stage} of run {run} starts (patchline {})",
        env!("CARGO_PKG_VERSION")
    );
    match Store::open(&ctx.db) {
        Ok(mut store) => execute(ctx, &mut store, run, stage, log.as_ref().ok()),
        // Nothing can be recorded; a restart marks the stage interrupted.
        Err(e) => tracing::error!("cannot open the state database: {e}"),
    }
    drop(entered);
    drop(log);
    ctx.running.fetch_sub(1, Ordering::SeqCst);
}

fn execute(ctx: &JobContext, store: &mut Store, run: i64, stage: Stage, log: Option<&StageLog>) {
    let dry_run = options(store, run)
        .ok()
        .flatten()
        .is_some_and(|o| o.dry_run);
    let outcome = if dry_run && stage == Stage::Publish {
        Err("dry run: nothing is published".to_owned())
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stage::run_stage(store, &ctx.config, run, stage, &LogProgress)
        }))
        .map_err(|_| "the stage stopped on an internal error (a bug: please report it)".to_owned())
        .and_then(|r| r.map_err(|f| f.message))
        .map(|_| ())
    };
    if let Err(message) = &outcome {
        let state = stage_states(store, run)
            .ok()
            .and_then(|s| s.into_iter().find(|(s, _)| s == stage.as_str()))
            .map(|(_, st)| st);
        // A stage that failed inside `record_stage` is already recorded;
        // one refused before it started (or skipped) is recorded here.
        if state.as_deref().is_some_and(|s| ACTIVE.contains(&s)) {
            let skipped = message.starts_with("dry run");
            let recorded = if skipped {
                mark_skipped(store, run, stage, message)
            } else {
                store.start_stage(run, stage.as_str()).and_then(|()| {
                    store.finish_stage(run, stage.as_str(), false, &json!({}), Some(message))
                })
            };
            if let Err(e) = recorded {
                tracing::error!("cannot record the stage's outcome: {e}");
            }
        }
    }
    let row = store
        .stages(run)
        .ok()
        .and_then(|s| s.into_iter().find(|s| s.stage == stage.as_str()));
    if let Some(row) = &row {
        if stage == Stage::Build
            && let Some(log) = log
        {
            copy_build_logs(log, row.summary.as_ref());
        }
        let summary = row
            .summary
            .as_ref()
            .and_then(|s| serde_json::to_string_pretty(s).ok())
            .unwrap_or_default();
        tracing::info!("summary: {summary}");
        match &row.error {
            Some(e) => tracing::warn!("{stage} of run {run} finished {}: {e}", row.state),
            None => tracing::info!("{stage} of run {run} finished {}", row.state),
        }
    }
    if stage == Stage::Report {
        let finished = stage::finish_run(store, run, false);
        if let Err(e) = finished {
            tracing::error!("cannot mark run {run} finished: {e}");
        }
    }
}

fn mark_skipped(store: &Store, run: i64, stage: Stage, why: &str) -> Result<(), store::Error> {
    tracing::info!("{stage} skipped: {why}");
    store
        .conn()
        .execute(
            "UPDATE stages SET state = 'skipped', started_at = ?3, finished_at = ?3, summary = ?4, error = NULL
             WHERE run_id = ?1 AND stage = ?2",
            params![run, stage.as_str(), now(), json!({ "skipped": why }).to_string()],
        )
        .map(|_| ())
        .map_err(|e| store.err(e))
}

/// Largest part of one target's build log copied into the stage log.
const BUILD_LOG_TAIL: u64 = 256 * 1024;

/// Copies the end of each target's build log into the stage log, so the
/// Jenkins console shows the rpmbuild output.
fn copy_build_logs(log: &StageLog, summary: Option<&serde_json::Value>) {
    let Some(builds) = summary.and_then(|s| s["builds"].as_array()) else {
        return;
    };
    for b in builds {
        let Some(path) = b["log"].as_str() else {
            continue;
        };
        let path = std::path::Path::new(path);
        let size = stage_log::size(path);
        let from = size.saturating_sub(BUILD_LOG_TAIL);
        log.line(&format!(
            "----- {} {} {}: {} ({} bytes{}) -----",
            b["repo"].as_str().unwrap_or("?"),
            b["branch"].as_str().unwrap_or("?"),
            b["target"].as_str().unwrap_or("?"),
            path.display(),
            size,
            if from > 0 { ", end shown" } else { "" }
        ));
        if let Ok(chunk) = stage_log::read_chunk(path, from, BUILD_LOG_TAIL as usize) {
            log.line(&String::from_utf8_lossy(&chunk.bytes));
        }
    }
}
