//! Stage jobs: admitting a run and a stage start through the state
//! machine (`crate::stage`), running the stage on a blocking thread with
//! its own `Store`, and recovering after a restart.
//!
//! A job's state lives in the `stages` table (`queued` is written on
//! admission, the state machine writes `running`/`ok`/`failed`), so a
//! client that disconnects loses nothing and a restarted worker knows what
//! was cut short: `queued`/`running` rows whose process is gone become
//! `interrupted` and can be started again (stages are idempotent).

use super::error::ApiError;
use super::stage_log::{self, StageLog};
use crate::config::Config;
use crate::stage::collect::Progress;
use crate::stage::{self, NewRun, Stage, StageState};
use crate::store::{self, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Marks the stage jobs a previous worker process left unfinished as
/// `interrupted`; returns how many there were.
pub fn prepare(store: &mut Store) -> Result<usize, store::Error> {
    let own = std::process::id();
    let mut n = 0;
    for (run, row) in store.active_stages()? {
        // At start-up nothing of this process runs yet: a row naming our
        // pid is a previous process's that had the same pid (a container).
        let alive = |pid| pid != own && stage::process_alive(pid);
        if stage::effective_state(&row, &alive) == StageState::Interrupted {
            let why = "the worker stopped while this stage ran; start the stage again to resume it";
            if store.interrupt_stage(run, row.stage, why)? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Creates a run unless an unfinished run of the worker covers one of its
/// repositories (409 naming that run).
pub fn create_run(store: &mut Store, new: &NewRun<'_>) -> Result<i64, ApiError> {
    store.create_run_unless(new, |open| {
        open.iter().find_map(|run| {
            let shared = run.options.repos.iter().find(|r| new.options.repos.contains(r))?;
            let by = run
                .jenkins_url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            Some(ApiError::conflict(
                format!(
                    "run {}{by} is still running for repository {shared}: one run at a time per repository; wait for it, or finish it by starting its report stage",
                    run.id
                ),
                Some(run.id),
            ))
        })
    })?
}

/// Admits `stage` of `run` and records it `queued`, or says why not: the
/// run does not exist (404), or the state machine refuses (409).
pub fn admit_stage(store: &mut Store, run: i64, stage: Stage) -> Result<(), ApiError> {
    stage::admit_queued(store, run, stage)?
        .map_err(|refusal| ApiError::conflict(refusal.to_string(), Some(refusal.run())))
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
    let outcome = stage::execute(store, &ctx.config, run, stage, &LogProgress);
    if let Err(failure) = &outcome {
        tracing::debug!("{stage} of run {run} stopped: {}", failure.message);
    }
    let row = store
        .stages(run)
        .ok()
        .and_then(|s| s.into_iter().find(|s| s.stage == stage));
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
}

/// Largest part of one target's build log copied into the stage log.
const BUILD_LOG_TAIL: u64 = 256 * 1024;

/// Copies the end of each Koji target's build log into the stage log, so
/// the Jenkins console shows the rpmbuild output. A local build's output
/// reached the stage log line by line while it ran (`live_log`): copying
/// it again would show it twice.
fn copy_build_logs(log: &StageLog, summary: Option<&serde_json::Value>) {
    let Some(builds) = summary.and_then(|s| s["builds"].as_array()) else {
        return;
    };
    for b in builds.iter().filter(|b| !b["task_id"].is_null()) {
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
