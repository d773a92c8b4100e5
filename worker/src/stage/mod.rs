//! The run state machine: which stages a run goes through, in which order,
//! and how a stage's outcome is recorded.
//!
//! Stages: `collect -> apply -> build (local or Koji) -> publish -> test ->
//! report`. A stage is recorded as `running` before it starts and
//! `ok`/`failed` with its summary after, so `status` always tells where a
//! run is, a killed run shows the stage it died in, and `run --resume` goes
//! on from there. `report` always runs, also after a stage stopped the
//! pipeline.

pub mod apply;
pub mod build;
pub mod collect;
pub mod publish;
pub mod report;
pub mod test;

use crate::cli::{Failure, Trigger};
use crate::config::Config;
use crate::mail::source::MailSource;
use crate::patch::apply::AmOptions;
use crate::stage::apply::ApplySummary;
use crate::stage::build::BuildSummary;
use crate::stage::collect::{CollectSummary, Progress};
use crate::stage::publish::PublishSummary;
use crate::store::{self, Store};
use serde_json::json;

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
        |store| crate::stage::publish::publish_stage(store, config, run).map_err(stage_failure),
        |_| None,
        |_| json!({}),
    )
}

/// Runs `report` of `run`: composes, writes and sends the reports. A
/// transport that cannot deliver fails the stage with exit code 3 (the
/// reports stay in the outbox for the next attempt).
pub fn report_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<crate::stage::report::ReportSummary, Failure> {
    record_stage(
        store,
        run,
        "report",
        |store| {
            crate::stage::report::report_stage(store, config, run).map_err(|e| Failure {
                code: match e {
                    crate::stage::report::Error::Notify(crate::notify::Error::NotSent {
                        ..
                    }) => 3,
                    _ => 1,
                },
                message: e.to_string(),
            })
        },
        |_| None,
        |_| json!({}),
    )
}

/// Runs `test` of `run`: it fails when a test failed, timed out or could
/// not start (tests of targets that did not build are skipped).
pub fn test_stage(
    store: &mut Store,
    config: &Config,
    run: i64,
) -> Result<crate::stage::test::TestSummary, Failure> {
    record_stage(
        store,
        run,
        "test",
        |store| crate::stage::test::test_stage(store, config, run).map_err(stage_failure),
        |summary| {
            (summary.failed > 0).then(|| {
                summary
                    .results
                    .iter()
                    .filter(|r| !matches!(r.state.as_str(), "passed" | "skipped"))
                    .map(crate::checks::TestResult::headline)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        },
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
            crate::stage::build::build_stage(store, config, run).map_err(|e| Failure {
                code: if e.is_infrastructure() { 3 } else { 1 },
                message: e.to_string(),
            })
        },
        |summary| {
            (summary.failed > 0).then(|| {
                summary
                    .builds
                    .iter()
                    .filter(|b| b.state != build::BuildState::Ok)
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
            crate::stage::apply::apply_stage(store, config, run, None, opts).map_err(stage_failure)
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
        Stage::Test => value(test_stage(store, config, run)?),
        Stage::Report => value(report_stage(store, config, run)?),
    })
}

/// How `patchline run` ended.
pub struct Outcome {
    pub run: i64,
    /// `ok` or `failed`.
    pub state: String,
    /// The error that stopped the pipeline before its last stage, if any
    /// (a stage that ran to its end with problems is not one).
    pub stopped_by: Option<Failure>,
    /// The report stage's summary, when it ran.
    pub report: Option<crate::stage::report::ReportSummary>,
}

/// `patchline run`: a new run through every stage.
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
    drive(store, config, run, progress)
}

/// `patchline run --resume`: continues `run` (default: the latest run,
/// unless it finished ok) at its first unfinished stage.
pub fn resume(
    store: &mut Store,
    config: &Config,
    run: Option<i64>,
    progress: &dyn Progress,
) -> Result<Outcome, Failure> {
    let run = match run {
        Some(id) => store.run(id)?.id,
        None => match store.latest_run()? {
            Some(r) if r.state != "ok" => r.id,
            Some(r) => {
                return Err(Failure {
                    code: 2,
                    message: format!("no unfinished run to resume: run {} finished ok", r.id),
                });
            }
            None => {
                return Err(Failure {
                    code: 2,
                    message: "no unfinished run to resume: there is no run yet".into(),
                });
            }
        },
    };
    drive(store, config, run, progress)
}

/// Where a run goes on from: its first stage that has not finished `ok`
/// (never started, died in, stopped by an error, or finished with
/// problems: every stage is idempotent, so a stage re-run redoes only what
/// is not done, e.g. the target that did not build). `None` when every
/// stage before `report` is ok.
pub fn first_unfinished(stages: &[store::StageRow]) -> Option<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|s| *s != Stage::Report)
        .find(|stage| {
            !stages
                .iter()
                .any(|row| row.stage == stage.as_str() && row.state == "ok")
        })
}

/// Fault injection for the crash tests: `PATCHLINE_FAILPOINT=after:apply`
/// (or `before:<stage>`) ends the process at once, as `kill -9` would,
/// at that stage boundary. Not a setting: nothing else reads it.
fn failpoint(when: &str, stage: Stage) {
    if std::env::var("PATCHLINE_FAILPOINT").is_ok_and(|v| v == format!("{when}:{stage}")) {
        eprintln!("patchline: failpoint {when}:{stage}: aborting");
        std::process::abort();
    }
}

/// Runs the stages of `run` from its first unfinished one; `report` always
/// runs last, also after a stage stopped the pipeline.
fn drive(
    store: &mut Store,
    config: &Config,
    run: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Failure> {
    let _span = tracing::info_span!("run", run).entered();
    let start = first_unfinished(&store.stages(run)?).unwrap_or(Stage::Report);
    store
        .conn()
        .execute(
            "UPDATE runs SET state = 'running', finished_at = NULL WHERE id = ?1",
            [run],
        )
        .map_err(|e| store.err(e))?;
    let mut stopped_by = None;
    for stage in Stage::ALL {
        // Report runs last whatever happened, after the loop.
        if stage == Stage::Report || (stage as u8) < (start as u8) {
            continue;
        }
        failpoint("before", stage);
        let result = run_stage(store, config, run, stage, progress);
        failpoint("after", stage);
        if let Err(failure) = result {
            tracing::error!(stage = %stage, "{}", failure.message);
            stopped_by = Some(failure);
            break;
        }
    }
    failpoint("before", Stage::Report);
    let report = match run_stage(store, config, run, Stage::Report, progress) {
        Ok(summary) => serde_json::from_value(summary).ok(),
        Err(failure) => {
            stopped_by.get_or_insert(failure);
            None
        }
    };
    let state = finish_run(store, run, stopped_by.is_some())?;
    Ok(Outcome {
        run,
        state: state.to_owned(),
        stopped_by,
        report,
    })
}

/// Marks `run` finished: `failed` when it was stopped or a stage's latest
/// attempt did not end `ok` (or `skipped`, a dry run's publish), else `ok`
/// (a resumed run whose failed stage now passed is ok). The one place a
/// run's final state is decided, for `patchline run` and the HTTP worker.
pub fn finish_run(store: &Store, run: i64, stopped: bool) -> Result<&'static str, store::Error> {
    let failed = stopped
        || store
            .stages(run)?
            .iter()
            .any(|s| !matches!(s.state.as_str(), "ok" | "skipped"));
    let state = if failed { "failed" } else { "ok" };
    store
        .conn()
        .execute(
            "UPDATE runs SET state = ?2, finished_at = ?3 WHERE id = ?1",
            rusqlite::params![run, state, store::now()],
        )
        .map_err(|e| store.err(e))?;
    Ok(state)
}

/// The run with each stage's state and summary (`status --json`).
pub fn status(store: &Store, run: i64) -> Result<serde_json::Value, store::Error> {
    let row = store.run(run)?;
    let stages = store.stages(run)?;
    Ok(json!({ "run": row, "stages": stages }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(states: &[(&str, &str)]) -> Vec<store::StageRow> {
        states
            .iter()
            .map(|(stage, state)| store::StageRow {
                stage: stage.to_string(),
                state: state.to_string(),
                started_at: None,
                finished_at: None,
                summary: None,
                error: None,
            })
            .collect()
    }

    #[test]
    fn a_run_resumes_at_its_first_stage_not_ok() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Stage>);
        let cases: [Case; 6] = [
            (&[], Some(Stage::Collect)),
            (&[("collect", "running")], Some(Stage::Collect)),
            (&[("collect", "ok"), ("apply", "ok")], Some(Stage::Build)),
            (
                &[
                    ("collect", "ok"),
                    ("apply", "failed"),
                    ("build", "ok"),
                    ("report", "ok"),
                ],
                Some(Stage::Apply),
            ),
            (
                &[
                    ("collect", "ok"),
                    ("apply", "ok"),
                    ("build", "ok"),
                    ("publish", "ok"),
                    ("test", "ok"),
                    ("report", "failed"),
                ],
                None,
            ),
            (
                &[
                    ("collect", "ok"),
                    ("apply", "ok"),
                    ("build", "ok"),
                    ("publish", "interrupted"),
                ],
                Some(Stage::Publish),
            ),
        ];
        for (stages, want) in cases {
            assert_eq!(first_unfinished(&rows(stages)), want, "{stages:?}");
        }
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
            assert_eq!(Stage::ALL[stage as usize], stage);
        }
        assert_eq!(Stage::parse("deploy"), None);
    }
}
