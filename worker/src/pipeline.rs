//! The run state machine: which stages a run goes through, in which order,
//! and how a stage's outcome is recorded.
//!
//! Stages implemented so far: `collect`. A stage is recorded as `running`
//! before it starts and `ok`/`failed` with its summary after, so `status`
//! always tells where a run is, and a killed run shows the stage it died in.

use crate::cli::{Failure, Trigger};
use crate::config::Config;
use crate::intake::collect::{self, CollectSummary, Progress};
use crate::intake::source::MailSource;
use crate::store::{self, Store};
use serde_json::json;

pub struct Outcome {
    pub run: i64,
    pub state: String,
    pub collect: CollectSummary,
}

/// Runs `collect` of `run` with `source`, recording the stage.
pub fn collect_stage(
    store: &mut Store,
    config: &Config,
    source: &mut dyn MailSource,
    run: i64,
    progress: &dyn Progress,
) -> Result<CollectSummary, Failure> {
    store.start_stage(run, "collect")?;
    let _span = tracing::info_span!("stage", run, stage = "collect").entered();
    match collect::collect(store, config, source, run, progress) {
        Ok(summary) => {
            let value = serde_json::to_value(&summary).unwrap_or_default();
            store.finish_stage(run, "collect", true, &value, None)?;
            Ok(summary)
        }
        Err(e) => {
            let message = e.to_string();
            // Mails stored before the failure stay counted in the summary.
            let partial = collect::summarize(store, run, &source.key())
                .ok()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_default();
            store.finish_stage(run, "collect", false, &partial, Some(&message))?;
            store.event(Some(run), Some("collect"), "error", &message)?;
            Err(e.into())
        }
    }
}

/// `patchline run`: a new run through every implemented stage.
pub fn run(
    store: &mut Store,
    config: &Config,
    trigger: Trigger,
    progress: &dyn Progress,
) -> Result<Outcome, Failure> {
    let cause = match trigger {
        Trigger::Manual => "patchline run",
        Trigger::Timer => "timer",
    };
    let user = std::env::var("USER").ok();
    let run = store.create_run(trigger.as_str(), Some(cause), user.as_deref(), None)?;
    let mut source = collect::source_from_config(config)?;
    let summary = collect_stage(store, config, source.as_mut(), run, progress)?;
    store
        .conn()
        .execute(
            "UPDATE runs SET state = 'ok', finished_at = ?2 WHERE id = ?1 AND state = 'running'",
            rusqlite::params![run, store::now()],
        )
        .map_err(|e| store.err(e))?;
    let state = store.run(run)?.state;
    Ok(Outcome {
        run,
        state,
        collect: summary,
    })
}

/// The run with each stage's state and summary (`status --json`).
pub fn status(store: &Store, run: i64) -> Result<serde_json::Value, store::Error> {
    let row = store.run(run)?;
    let stages = store.stages(run)?;
    Ok(json!({ "run": row, "stages": stages }))
}
