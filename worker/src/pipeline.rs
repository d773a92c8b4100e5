//! The run state machine: which stages a run goes through, in which order,
//! and how a stage's outcome is recorded.
//!
//! Stages implemented so far: `collect`, `apply`, `build` (local or Koji),
//! `publish`. A stage is recorded as `running` before it starts and
//! `ok`/`failed` with its summary after, so `status` always tells where a
//! run is, and a killed run shows the stage it died in.

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
    pub apply: ApplySummary,
    pub build: BuildSummary,
    pub publish: PublishSummary,
}

/// Runs one stage of `run` and records it: `running` before, then `ok` or
/// `failed` with its summary. `problems` names what failed inside a stage
/// that ran to its end (series that did not apply, targets that did not
/// build): such a stage is `failed` too, with the summary of what it did.
/// `partial` gives the summary to keep when the stage itself errs.
fn record_stage<T: serde::Serialize>(
    store: &mut Store,
    run: i64,
    stage: &str,
    work: impl FnOnce(&mut Store) -> Result<T, Failure>,
    problems: impl FnOnce(&T) -> Option<String>,
    partial: impl FnOnce(&Store) -> serde_json::Value,
) -> Result<T, Failure> {
    store.start_stage(run, stage)?;
    let _span = tracing::info_span!("stage", run, stage).entered();
    match work(store) {
        Ok(summary) => {
            let value = serde_json::to_value(&summary).unwrap_or_default();
            let error = problems(&summary);
            store.finish_stage(run, stage, error.is_none(), &value, error.as_deref())?;
            Ok(summary)
        }
        Err(failure) => {
            let value = partial(store);
            store.finish_stage(run, stage, false, &value, Some(&failure.message))?;
            store.event(Some(run), Some(stage), "error", &failure.message)?;
            Err(failure)
        }
    }
}

fn stage_failure(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: e.to_string(),
    }
}

/// Runs `publish` of `run`, recording the stage.
pub fn publish_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<PublishSummary, Failure> {
    record_stage(
        store,
        run,
        "publish",
        |store| crate::publish::publish_stage(store, config, run).map_err(stage_failure),
        |_| None,
        |_| json!({}),
    )
}

/// Runs `build` of `run`: it fails when a target build failed (the others
/// are built all the same).
pub fn build_stage(store: &mut Store, config: &Config, run: i64) -> Result<BuildSummary, Failure> {
    record_stage(
        store,
        run,
        "build",
        |store| {
            crate::build::build_stage(store, config, run).map_err(|e| Failure {
                code: if e.is_infrastructure() { 3 } else { 1 },
                message: e.to_string(),
            })
        },
        |summary| {
            (summary.failed > 0).then(|| {
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
            })
        },
        |_| json!({}),
    )
}

/// Runs `apply` of `run`: it fails when a series did not apply (the others
/// are applied all the same).
pub fn apply_stage(store: &mut Store, config: &Config, run: i64) -> Result<ApplySummary, Failure> {
    let opts = AmOptions {
        apply: crate::patch::hunks::ApplyOptions {
            ignore_whitespace: config.apply.ignore_whitespace,
            unidiff_zero: false,
        },
        three_way: config.apply.three_way,
        ..AmOptions::default()
    };
    record_stage(
        store,
        run,
        "apply",
        |store| {
            crate::patch::stage::apply_stage(store, config, run, None, opts).map_err(stage_failure)
        },
        |summary| {
            (summary.series_failed > 0).then(|| {
                let titles: Vec<&str> = summary
                    .series
                    .iter()
                    .filter(|s| s.state == "failed")
                    .map(|s| s.title.as_str())
                    .collect();
                format!(
                    "{} series did not apply: {}",
                    summary.series_failed,
                    titles.join("; ")
                )
            })
        },
        |_| json!({}),
    )
}

/// Runs `collect` of `run` with `source`; mails stored before a failure
/// stay counted in the stage's summary.
pub fn collect_stage(
    store: &mut Store,
    config: &Config,
    source: &mut dyn MailSource,
    run: i64,
    progress: &dyn Progress,
) -> Result<CollectSummary, Failure> {
    let key = source.key();
    record_stage(
        store,
        run,
        "collect",
        |store| collect::collect(store, config, source, run, progress).map_err(Failure::from),
        |_| None,
        |store| {
            collect::summarize(store, run, &key)
                .ok()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_default()
        },
    )
}

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Collect,
    Apply,
    Build,
    Publish,
    Test,
    Report,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Collect,
        Stage::Apply,
        Stage::Build,
        Stage::Publish,
        Stage::Test,
        Stage::Report,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Collect => "collect",
            Stage::Apply => "apply",
            Stage::Build => "build",
            Stage::Publish => "publish",
            Stage::Test => "test",
            Stage::Report => "report",
        }
    }

    /// The stage named `name`, or `None` for a name that is not a stage.
    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs one stage of an existing run and records it (the entry point of
/// the HTTP worker and of the per-stage commands). Returns the stage's
/// summary as JSON; a stage that ran to its end but found problems (a
/// series that did not apply, a target that did not build) is recorded
/// `failed` and still returns `Ok` with its summary: read the state from
/// the store.
pub fn run_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
    stage: Stage,
    progress: &dyn Progress,
) -> Result<serde_json::Value, Failure> {
    fn value<T: serde::Serialize>(t: T) -> serde_json::Value {
        serde_json::to_value(t).unwrap_or_default()
    }
    store.run(run)?;
    Ok(match stage {
        Stage::Collect => {
            let mut source = collect::source_from_config(config)?;
            value(collect_stage(
                store,
                config,
                source.as_mut(),
                run,
                progress,
            )?)
        }
        Stage::Apply => value(apply_stage(store, config, run)?),
        Stage::Build => value(build_stage(store, config, run)?),
        Stage::Publish => value(publish_stage(store, config, run)?),
        Stage::Test | Stage::Report => {
            return Err(Failure {
                code: 2,
                message: format!("stage {stage} is not available in this version"),
            });
        }
    })
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
    // A stage that failed already marked the run failed.
    store
        .conn()
        .execute(
            "UPDATE runs SET state = CASE WHEN state = 'running' THEN 'ok' ELSE state END, finished_at = ?2 WHERE id = ?1",
            rusqlite::params![run, store::now()],
        )
        .map_err(|e| store.err(e))?;
    let state = store.run(run)?.state;
    Ok(Outcome {
        run,
        state,
        collect: summary,
        apply,
        build,
        publish,
    })
}

/// The run with each stage's state and summary (`status --json`).
pub fn status(store: &Store, run: i64) -> Result<serde_json::Value, store::Error> {
    let row = store.run(run)?;
    let stages = store.stages(run)?;
    Ok(json!({ "run": row, "stages": stages }))
}
