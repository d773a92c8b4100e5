//! The run state machine: which stages a run goes through, in which order,
//! and how a stage's outcome is recorded.
//!
//! Stages implemented so far: `collect`, `apply`, `build` (local), `publish`. A stage is recorded as `running`
//! before it starts and `ok`/`failed` with its summary after, so `status`
//! always tells where a run is, and a killed run shows the stage it died in.

use crate::build::BuildSummary;
use crate::cli::{Failure, Trigger};
use crate::config::Config;
use crate::intake::collect::{self, CollectSummary, Progress};
use crate::intake::source::MailSource;
use crate::patch::apply::AmOptions;
use crate::patch::stage::ApplySummary;
use crate::publish::PublishSummary;
use crate::store::{self, Store};
use serde_json::json;

pub struct Outcome {
    pub run: i64,
    pub state: String,
    pub collect: CollectSummary,
    pub apply: Option<ApplySummary>,
    pub build: Option<BuildSummary>,
    pub publish: Option<PublishSummary>,
}

/// Runs `publish` of `run`, recording the stage.
pub fn publish_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<PublishSummary, Failure> {
    store.start_stage(run, "publish")?;
    let _span = tracing::info_span!("stage", run, stage = "publish").entered();
    match crate::publish::publish_stage(store, config, run) {
        Ok(summary) => {
            let value = serde_json::to_value(&summary).unwrap_or_default();
            store.finish_stage(run, "publish", true, &value, None)?;
            Ok(summary)
        }
        Err(e) => {
            let message = e.to_string();
            store.finish_stage(run, "publish", false, &json!({}), Some(&message))?;
            Err(Failure { code: 1, message })
        }
    }
}

/// Runs `build` of `run`, recording the stage: it fails when a target build
/// failed (the others are built all the same).
pub fn build_stage(store: &mut Store, config: &Config, run: i64) -> Result<BuildSummary, Failure> {
    store.start_stage(run, "build")?;
    let _span = tracing::info_span!("stage", run, stage = "build").entered();
    match crate::build::build_stage(store, config, run) {
        Ok(summary) => {
            let value = serde_json::to_value(&summary).unwrap_or_default();
            let error = (summary.failed > 0).then(|| {
                summary
                    .builds
                    .iter()
                    .filter(|b| b.state != "ok")
                    .map(|b| {
                        format!(
                            "{}/{} for {}: {}",
                            b.repo,
                            b.branch,
                            b.target,
                            b.error.as_deref().unwrap_or("failed")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            store.finish_stage(run, "build", summary.failed == 0, &value, error.as_deref())?;
            Ok(summary)
        }
        Err(e) => {
            let message = e.to_string();
            store.finish_stage(run, "build", false, &json!({}), Some(&message))?;
            Err(Failure { code: 1, message })
        }
    }
}

/// Runs `apply` of `run`, recording the stage: it fails when a series did
/// not apply (the others are applied all the same).
pub fn apply_stage(store: &mut Store, config: &Config, run: i64) -> Result<ApplySummary, Failure> {
    store.start_stage(run, "apply")?;
    let _span = tracing::info_span!("stage", run, stage = "apply").entered();
    let opts = AmOptions {
        apply: crate::patch::hunks::ApplyOptions {
            ignore_whitespace: config.apply.ignore_whitespace,
            unidiff_zero: false,
        },
        three_way: config.apply.three_way,
        ..AmOptions::default()
    };
    match crate::patch::stage::apply_stage(store, config, run, None, opts) {
        Ok(summary) => {
            let value = serde_json::to_value(&summary).unwrap_or_default();
            let failed = summary.series_failed > 0;
            let error = failed.then(|| {
                format!(
                    "{} series did not apply: {}",
                    summary.series_failed,
                    summary
                        .series
                        .iter()
                        .filter(|s| s.state == "failed")
                        .map(|s| s.title.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            });
            store.finish_stage(run, "apply", !failed, &value, error.as_deref())?;
            Ok(summary)
        }
        Err(e) => {
            let message = e.to_string();
            store.finish_stage(run, "apply", false, &json!({}), Some(&message))?;
            store.event(Some(run), Some("apply"), "error", &message)?;
            Err(Failure { code: 1, message })
        }
    }
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
    let apply = apply_stage(store, config, run)?;
    // Whatever applied is built, even when another series failed.
    let build = build_stage(store, config, run)?;
    let publish = publish_stage(store, config, run)?;
    let finished = if apply.series_failed > 0 || build.failed > 0 {
        "failed"
    } else {
        "ok"
    };
    store
        .conn()
        .execute(
            "UPDATE runs SET state = CASE WHEN state = 'running' THEN ?3 ELSE state END, finished_at = ?2 WHERE id = ?1",
            rusqlite::params![run, store::now(), finished],
        )
        .map_err(|e| store.err(e))?;
    let state = store.run(run)?.state;
    Ok(Outcome {
        run,
        state,
        collect: summary,
        apply: Some(apply),
        build: Some(build),
        publish: Some(publish),
    })
}

/// The run with each stage's state and summary (`status --json`).
pub fn status(store: &Store, run: i64) -> Result<serde_json::Value, store::Error> {
    let row = store.run(run)?;
    let stages = store.stages(run)?;
    Ok(json!({ "run": row, "stages": stages }))
}
