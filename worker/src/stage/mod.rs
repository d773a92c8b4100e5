//! The run state machine, and one module per stage.
//!
//! Stages: `collect -> apply -> build -> publish -> test -> report`. This
//! module alone decides what may start when ([`admit`]), what a stage's end
//! lets through, where a resumed run goes on ([`first_unfinished`]), what a
//! dry run skips and how a run ends ([`final_state`]). `patchline run`, the
//! per-stage commands and the HTTP worker all go through [`start`] (or, for
//! the worker, [`admit_queued`] then [`execute`]), so Jenkins, curl and the
//! CLI behave the same on the same input.
//!
//! A stage is recorded `running` before it starts and `ok`/`failed` with
//! its summary after, so `status` always tells where a run is. A stage that
//! ran to its end with problems (a series that did not apply, a target that
//! did not build, a test that failed) is `failed` but *completed*: the next
//! stage starts and works on what did succeed; the run still ends `failed`
//! and the report says why. A stage stopped by an error (mailbox
//! unreachable, Koji down) is `failed` and not completed: the stages after
//! it wait, and `report` runs all the same.
//!
//! The decisions are pure functions over the run's rows; the shell around
//! them records through the store.

pub mod apply;
pub mod build;
pub mod collect;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod report;
pub mod test;

pub use crate::store::{
    NewRun, RunOptions, RunRow, RunState, Stage, StageEnd, StageRow, StageState, Trigger,
};
pub use progress::{Progress, StageEnded, Unit};

use crate::config::Config;
use crate::mail::source::MailSource;
use crate::store::{self, Store};
use apply::ApplySummary;
use build::BuildSummary;
use collect::CollectSummary;
use publish::PublishSummary;
use report::ReportSummary;
use serde_json::json;
use test::TestSummary;

/// How a command ends: patchline's exit codes, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1: a stage failed (the report says why).
    StageFailed,
    /// 2: usage or configuration error; nothing was done.
    Usage,
    /// 3: infrastructure unreachable (IMAP, SMTP, Koji).
    Unreachable,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::StageFailed => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
        }
    }
}

/// A command's or stage's failure, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn stage(message: impl Into<String>) -> Self {
        Self::new(Exit::StageFailed, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::config::Error> for Failure {
    fn from(e: crate::config::Error) -> Self {
        Failure::usage(e.to_string())
    }
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Self {
        let exit = if matches!(e, store::Error::NoSuchRun(_)) {
            Exit::Usage
        } else {
            Exit::StageFailed
        };
        Failure::new(exit, e.to_string())
    }
}

impl From<collect::Error> for Failure {
    fn from(e: collect::Error) -> Self {
        let exit = if e.is_infrastructure() {
            Exit::Unreachable
        } else if matches!(e, collect::Error::Config(_)) {
            Exit::Usage
        } else {
            Exit::StageFailed
        };
        Failure::new(exit, e.to_string())
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::usage(r.to_string())
    }
}

/// Who asks for a stage. The rules are the same but for one point: an
/// operator's per-stage command may re-run a stage of a finished run (to
/// repair it: the run's end state is decided again), while the pipeline
/// (`patchline run`, the HTTP worker) never reopens a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Pipeline,
    Operator,
}

/// Why a stage may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The run is finished (its report stage ended).
    Finished { run: i64, at: i64 },
    /// Another stage of the run is queued or running.
    Busy {
        run: i64,
        stage: Stage,
        state: StageState,
    },
    /// The stage before has not run to its end.
    Waiting {
        run: i64,
        stage: Stage,
        before: Stage,
        state: StageState,
        error: Option<String>,
    },
    /// The run began at a later stage (`patchline apply` makes a run
    /// that begins at `apply`).
    NotInRun {
        run: i64,
        stage: Stage,
        first: Stage,
    },
}

impl Refusal {
    pub fn run(&self) -> i64 {
        match self {
            Refusal::Finished { run, .. }
            | Refusal::Busy { run, .. }
            | Refusal::Waiting { run, .. }
            | Refusal::NotInRun { run, .. } => *run,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Finished { run, at } => {
                write!(f, "run {run} is finished (at {at}); create a new run")
            }
            Refusal::Busy { run, stage, state } => write!(
                f,
                "stage {stage} of run {run} is {state}; a run runs one stage at a time"
            ),
            Refusal::Waiting {
                run,
                stage,
                before,
                state,
                error,
            } => {
                let state = match state {
                    StageState::Pending => "not started".to_owned(),
                    StageState::Failed => match error {
                        Some(e) => format!("failed: stopped by an error: {e}"),
                        None => "failed: stopped by an error".to_owned(),
                    },
                    other => other.to_string(),
                };
                write!(
                    f,
                    "stage {stage} of run {run} cannot start: {before} must finish ok first (it is {state})"
                )
            }
            Refusal::NotInRun { run, stage, first } => write!(
                f,
                "stage {stage} is not part of run {run}: the run began at {first}; create a new run"
            ),
        }
    }
}

/// Whether a stage's row lets the next stage start: it ran to its end
/// (`ok`, `skipped`, or `failed` with problems in what it did).
pub fn lets_through(row: &StageRow) -> bool {
    row.completed
        && matches!(
            row.state,
            StageState::Ok | StageState::Skipped | StageState::Failed
        )
}

/// A stage's state as the rules see it: an active row whose process is
/// gone (`alive` says no), or that names no process (written before
/// processes were recorded), is `interrupted`.
pub fn effective_state(row: &StageRow, alive: &dyn Fn(u32) -> bool) -> StageState {
    if row.state.is_active() && !row.pid.is_some_and(alive) {
        StageState::Interrupted
    } else {
        row.state
    }
}

/// May `stage` of `run` start now? `stages` are the run's rows; `alive`
/// tells whether a process id still runs.
///
/// - the pipeline never starts a stage of a finished run;
/// - one stage of a run at a time;
/// - a stage before the run's first stage is not part of it;
/// - the stage before must have run to its end (see [`lets_through`]);
///   `report` may start whatever the others did.
pub fn admit(
    run: &RunRow,
    stages: &[StageRow],
    stage: Stage,
    caller: Caller,
    alive: &dyn Fn(u32) -> bool,
) -> Result<(), Refusal> {
    if let (Caller::Pipeline, Some(at)) = (caller, run.finished_at) {
        return Err(Refusal::Finished { run: run.id, at });
    }
    if let Some(busy) = stages
        .iter()
        .find(|r| effective_state(r, alive).is_active())
    {
        return Err(Refusal::Busy {
            run: run.id,
            stage: busy.stage,
            state: busy.state,
        });
    }
    if stage < run.first_stage {
        return Err(Refusal::NotInRun {
            run: run.id,
            stage,
            first: run.first_stage,
        });
    }
    if stage == Stage::Report || stage == run.first_stage {
        return Ok(());
    }
    let Some(before) = stage.before() else {
        return Ok(());
    };
    match stages.iter().find(|r| r.stage == before) {
        Some(row) if lets_through(row) => Ok(()),
        row => Err(Refusal::Waiting {
            run: run.id,
            stage,
            before,
            state: row.map_or(StageState::Pending, |r| effective_state(r, alive)),
            error: row.and_then(|r| r.error.clone()),
        }),
    }
}

/// Where a run goes on from: its first stage (from the one it began at)
/// that has not finished `ok` (never started, died in, stopped by an error,
/// or finished with problems: every stage is idempotent, so a stage re-run
/// redoes only what is not done, e.g. the target that did not build).
/// `None` when every stage before `report` is ok.
pub fn first_unfinished(run: &RunRow, stages: &[StageRow]) -> Option<Stage> {
    Stage::ALL
        .iter()
        .copied()
        .filter(|s| *s != Stage::Report && *s >= run.first_stage)
        .find(|stage| {
            !stages
                .iter()
                .any(|row| row.stage == *stage && row.state == StageState::Ok)
        })
}

/// How a run ends: `failed` when it was stopped, or when any of its stages
/// (from the one it began at, `report` included) did not end `ok` or
/// `skipped` — a stage never started counts, so a run whose only stage was
/// `report` is failed; else `ok` (a resumed run whose failed stage now
/// passed is ok).
pub fn final_state(run: &RunRow, stages: &[StageRow], stopped: bool) -> RunState {
    let all_done = Stage::ALL
        .iter()
        .filter(|s| **s >= run.first_stage)
        .all(|stage| {
            stages.iter().any(|row| {
                row.stage == *stage && matches!(row.state, StageState::Ok | StageState::Skipped)
            })
        });
    if stopped || !all_done {
        RunState::Failed
    } else {
        RunState::Ok
    }
}

/// Whether process `pid` still runs (signal 0).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(pid) => rustix::process::test_kill_process(pid).is_ok(),
        None => false,
    }
}

/// What a stage did: its summary, typed.
#[derive(Debug, Clone)]
pub enum Summary {
    Collect(CollectSummary),
    Apply(ApplySummary),
    Build(BuildSummary),
    Publish(PublishSummary),
    Test(TestSummary),
    Report(ReportSummary),
    /// The stage was skipped, and why (a dry run's publish).
    Skipped(String),
}

impl Summary {
    fn to_json(&self) -> serde_json::Value {
        fn value<T: serde::Serialize>(t: &T) -> serde_json::Value {
            serde_json::to_value(t).unwrap_or_default()
        }
        match self {
            Summary::Collect(s) => value(s),
            Summary::Apply(s) => value(s),
            Summary::Build(s) => value(s),
            Summary::Publish(s) => value(s),
            Summary::Test(s) => value(s),
            Summary::Report(s) => value(s),
            Summary::Skipped(why) => json!({ "skipped": why }),
        }
    }

    /// What failed inside a stage that ran to its end (series that did not
    /// apply, targets that did not build, tests that failed): such a stage
    /// is `failed` too, with the summary of what it did.
    fn problems(&self) -> Option<String> {
        match self {
            Summary::Apply(s) => (s.series_failed > 0 || s.pulls_refused > 0).then(|| {
                let titles: Vec<&str> = s
                    .series
                    .iter()
                    .filter(|s| s.is(crate::store::SeriesState::Failed))
                    .map(|s| s.title.as_str())
                    .collect();
                let pulls: Vec<&str> = s
                    .pulls
                    .iter()
                    .filter(|p| p.error.is_some())
                    .map(|p| p.subject.as_str())
                    .collect();
                let mut text = Vec::new();
                if s.series_failed > 0 {
                    text.push(format!(
                        "{} series did not apply: {}",
                        s.series_failed,
                        titles.join("; ")
                    ));
                }
                if s.pulls_refused > 0 {
                    text.push(format!(
                        "{} pull request(s) refused: {}",
                        s.pulls_refused,
                        pulls.join("; ")
                    ));
                }
                text.join("; ")
            }),
            Summary::Build(s) => (s.failed > 0).then(|| {
                s.builds
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
            }),
            Summary::Test(s) => (s.failed > 0).then(|| {
                s.results
                    .iter()
                    .filter(|r| {
                        !matches!(
                            r.state,
                            crate::checks::TestState::Passed | crate::checks::TestState::Skipped
                        )
                    })
                    .map(crate::checks::TestResult::headline)
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
            _ => None,
        }
    }
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

/// Admits `stage` of `run` for the HTTP worker and records it `queued`;
/// a job then runs it with [`execute`].
pub fn admit_queued(
    store: &mut Store,
    run: i64,
    stage: Stage,
) -> Result<Result<(), Refusal>, store::Error> {
    store.admit_stage(run, stage, StageState::Queued, |row, stages| {
        admit(row, stages, stage, Caller::Pipeline, &process_alive)
    })
}

/// Admits and runs `stage` of `run` in this process (the per-stage
/// commands and `patchline run`).
pub fn start(
    store: &mut Store,
    config: &Config,
    run: i64,
    stage: Stage,
    caller: Caller,
    progress: &dyn Progress,
) -> Result<Summary, Failure> {
    start_with(store, config, run, stage, caller, None, progress)
}

/// [`start`] of `collect` with a source the caller keeps (`collect
/// --watch` waits on it for new mail between rounds).
pub fn start_collect(
    store: &mut Store,
    config: &Config,
    run: i64,
    source: &mut dyn MailSource,
    progress: &dyn Progress,
) -> Result<CollectSummary, Failure> {
    match start_with(
        store,
        config,
        run,
        Stage::Collect,
        Caller::Operator,
        Some(source),
        progress,
    )? {
        Summary::Collect(s) => Ok(s),
        other => Err(Failure::stage(format!(
            "collect returned a summary of another stage: {other:?}"
        ))),
    }
}

/// Admits `stage` of `run` for `caller` and records it `running`, by
/// this process.
fn admit_running(store: &mut Store, run: i64, stage: Stage, caller: Caller) -> Result<(), Failure> {
    store.admit_stage(run, stage, StageState::Running, |row, stages| {
        admit(row, stages, stage, caller, &process_alive)
    })??;
    Ok(())
}

fn start_with(
    store: &mut Store,
    config: &Config,
    run: i64,
    stage: Stage,
    caller: Caller,
    source: Option<&mut dyn MailSource>,
    progress: &dyn Progress,
) -> Result<Summary, Failure> {
    admit_running(store, run, stage, caller)?;
    execute_with(store, config, run, stage, source, progress)
}

/// Runs an admitted `stage` of `run` to its end and records the outcome:
/// `ok`; `failed` and completed (problems in what it did, see
/// [`Summary`]); `failed` and not completed (stopped by an error, or a
/// panic, which is caught: one bad input never takes the worker down);
/// `skipped` (a dry run's publish). After `report`, and after any stage of
/// a run that was already finished, the run's end state is decided.
/// Returns the summary, or the error that stopped the stage.
pub fn execute(
    store: &mut Store,
    config: &Config,
    run: i64,
    stage: Stage,
    progress: &dyn Progress,
) -> Result<Summary, Failure> {
    execute_with(store, config, run, stage, None, progress)
}

fn execute_with(
    store: &mut Store,
    config: &Config,
    run: i64,
    stage: Stage,
    source: Option<&mut dyn MailSource>,
    progress: &dyn Progress,
) -> Result<Summary, Failure> {
    let row = store.run(run)?;
    store.start_stage(run, stage)?;
    let _span = tracing::info_span!("stage", run, stage = stage.as_str()).entered();
    let began = std::time::Instant::now();
    progress.stage_begins(run, stage);
    // What a stage stopped by an error still did (mails stored before a
    // collect failure stay counted).
    let mut partial = json!({});
    let result = if row.options.dry_run && stage == Stage::Publish {
        Ok(Summary::Skipped("dry run: nothing is published".into()))
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work(store, config, &row, stage, source, progress, &mut partial)
        }))
        .unwrap_or_else(|panic| {
            Err(Failure::stage(format!(
                "the stage stopped on an internal error (a bug: please report it): {}",
                panic_message(panic.as_ref())
            )))
        })
    };
    let mut ended = StageState::Failed;
    let recorded = match &result {
        Ok(summary) => {
            let problems = summary.problems();
            let state = match (summary, &problems) {
                (Summary::Skipped(why), _) => {
                    tracing::info!("{stage} skipped: {why}");
                    StageState::Skipped
                }
                (_, Some(_)) => StageState::Failed,
                (_, None) => StageState::Ok,
            };
            ended = state;
            store.finish_stage(
                run,
                stage,
                &StageEnd {
                    state,
                    completed: true,
                    summary: &summary.to_json(),
                    error: problems.as_deref(),
                },
            )
        }
        Err(failure) => {
            tracing::error!("{stage}: {}", failure.message);
            store
                .finish_stage(
                    run,
                    stage,
                    &StageEnd {
                        state: StageState::Failed,
                        completed: false,
                        summary: &partial,
                        error: Some(&failure.message),
                    },
                )
                .and_then(|()| store.event(Some(run), Some(stage), "error", &failure.message))
        }
    };
    recorded?;
    progress.stage_ends(&StageEnded {
        run,
        stage,
        state: ended,
        outcome: &result,
        elapsed: began.elapsed(),
    });
    if stage == Stage::Report || row.finished_at.is_some() {
        finish(store, run, false)?;
    }
    result
}

/// The stage's own work, by stage.
fn work(
    store: &mut Store,
    config: &Config,
    row: &RunRow,
    stage: Stage,
    source: Option<&mut dyn MailSource>,
    progress: &dyn Progress,
    partial: &mut serde_json::Value,
) -> Result<Summary, Failure> {
    let run = row.id;
    Ok(match stage {
        Stage::Collect => {
            let mut own;
            let source = match source {
                Some(s) => s,
                None => {
                    own = collect::source_from_config(config)?;
                    own.as_mut()
                }
            };
            let key = source.key();
            match collect::collect(store, config, source, run, progress) {
                Ok(summary) => Summary::Collect(summary),
                Err(e) => {
                    *partial = collect::summarize(store, run, &key)
                        .ok()
                        .and_then(|s| serde_json::to_value(s).ok())
                        .unwrap_or_default();
                    return Err(e.into());
                }
            }
        }
        Stage::Apply => {
            let opts = crate::patch::apply::AmOptions {
                apply: crate::patch::hunks::ApplyOptions {
                    ignore_whitespace: config.apply.ignore_whitespace,
                    unidiff_zero: false,
                },
                three_way: config.apply.three_way,
                ..Default::default()
            };
            Summary::Apply(
                apply::apply_stage(store, config, run, &row.options.repos, None, opts, progress)
                    .map_err(|e| Failure::stage(e.to_string()))?,
            )
        }
        Stage::Build => Summary::Build(build::build_stage(store, config, run, progress).map_err(
            |e| {
                let exit = if e.is_infrastructure() {
                    Exit::Unreachable
                } else {
                    Exit::StageFailed
                };
                Failure::new(exit, e.to_string())
            },
        )?),
        Stage::Publish => Summary::Publish(
            publish::publish_stage(store, config, run)
                .map_err(|e| Failure::stage(e.to_string()))?,
        ),
        Stage::Test => Summary::Test(
            test::test_stage(store, config, run, progress)
                .map_err(|e| Failure::stage(e.to_string()))?,
        ),
        Stage::Report => {
            Summary::Report(report::report_stage(store, config, run).map_err(|e| {
                let exit = match e {
                    report::Error::Notify(crate::notify::Error::NotSent { .. }) => {
                        Exit::Unreachable
                    }
                    _ => Exit::StageFailed,
                };
                Failure::new(exit, e.to_string())
            })?)
        }
    })
}

/// Decides and records how `run` ended (see [`final_state`]).
pub fn finish(store: &mut Store, run: i64, stopped: bool) -> Result<RunState, store::Error> {
    let row = store.run(run)?;
    let state = final_state(&row, &store.stages(run)?, stopped);
    store.finish_run(run, state)?;
    Ok(state)
}

/// How `patchline run` ended.
pub struct Outcome {
    pub run: i64,
    pub state: RunState,
    /// The error that stopped the pipeline before its last stage, if any
    /// (a stage that ran to its end with problems is not one).
    pub stopped_by: Option<Failure>,
    /// The report stage's summary, when it ran.
    pub report: Option<ReportSummary>,
}

/// `patchline run`: a new run through every stage.
pub fn run(
    store: &mut Store,
    config: &Config,
    trigger: Trigger,
    options: RunOptions,
    progress: &dyn Progress,
) -> Result<Outcome, Failure> {
    let cause = match trigger {
        Trigger::Timer => "timer",
        _ => "patchline run",
    };
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty());
    let run = store.create_run(&NewRun {
        trigger,
        cause: Some(cause),
        started_by: user.as_deref(),
        jenkins_url: None,
        first_stage: Stage::Collect,
        options,
        via_api: false,
    })?;
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
            Some(r) if r.state != RunState::Ok => r.id,
            Some(r) => {
                return Err(Failure::usage(format!(
                    "no unfinished run to resume: run {} finished ok",
                    r.id
                )));
            }
            None => {
                return Err(Failure::usage(
                    "no unfinished run to resume: there is no run yet",
                ));
            }
        },
    };
    // A stage whose process died (killed mid-stage) counts as interrupted
    // (`admit`): it is simply started again.
    store.reopen_run(run)?;
    drive(store, config, run, progress)
}

/// Runs the stages of `run` from its first unfinished one; a stage stopped
/// by an error stops the pipeline; `report` always runs last.
fn drive(
    store: &mut Store,
    config: &Config,
    run: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Failure> {
    let _span = tracing::info_span!("run", run).entered();
    let row = store.run(run)?;
    let from = first_unfinished(&row, &store.stages(run)?).unwrap_or(Stage::Report);
    let mut stopped_by = None;
    for stage in Stage::ALL
        .iter()
        .copied()
        .filter(|s| *s >= from && *s != Stage::Report)
    {
        failpoint("before", stage);
        // A stage another live process runs is not this run's to drive:
        // refuse without reporting or finishing anything.
        admit_running(store, run, stage, Caller::Pipeline)?;
        let result = execute(store, config, run, stage, progress);
        failpoint("after", stage);
        if let Err(failure) = result {
            tracing::error!(stage = %stage, "{}", failure.message);
            stopped_by = Some(failure);
            break;
        }
    }
    failpoint("before", Stage::Report);
    admit_running(store, run, Stage::Report, Caller::Pipeline)?;
    let report = match execute(store, config, run, Stage::Report, progress) {
        Ok(Summary::Report(summary)) => Some(summary),
        Ok(_) => None,
        Err(failure) => {
            stopped_by.get_or_insert(failure);
            None
        }
    };
    // The report stage decided the end state without knowing the pipeline
    // was stopped; a stopped run is failed whatever its rows say.
    let state = finish(store, run, stopped_by.is_some())?;
    Ok(Outcome {
        run,
        state,
        stopped_by,
        report,
    })
}

/// The run with each stage's state and summary (`status --json`).
pub fn status(store: &Store, run: i64) -> Result<serde_json::Value, store::Error> {
    let row = store.run(run)?;
    let stages = store.stages(run)?;
    Ok(json!({ "run": row, "stages": stages }))
}

/// The text a caught panic carries (`panic!("...")` gives a `&str` or a
/// `String`), for the failure recorded in its place.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The decoded body of an archived mail (`relative` to the archive root,
/// checked as such by the archive): what the apply stage reads footers and
/// `git request-pull` text from. `Err` is a sentence naming the file.
pub(crate) fn archived_body(config: &Config, relative: &str) -> Result<String, String> {
    let raw = crate::mail::archive::Archive::new(config.intake.archive_dir.clone())
        .read_raw(relative)
        .map_err(|e| format!("cannot read the archived mail {relative}: {e}"))?;
    crate::mail::parse::parse_mail(&raw, &Default::default())
        .map(|m| m.body)
        .map_err(|e| format!("archived mail {relative}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_row(first_stage: Stage, finished_at: Option<i64>) -> RunRow {
        RunRow {
            id: 7,
            trigger: Trigger::Api,
            cause: None,
            started_by: None,
            jenkins_url: None,
            state: RunState::Running,
            created_at: 0,
            finished_at,
            first_stage,
            options: RunOptions::default(),
            via_api: true,
        }
    }

    /// Rows from `(stage, state, completed)`; an active row is run by
    /// process 1 (alive) unless its pid is given as 0 (gone).
    fn rows(states: &[(&str, &str, bool)]) -> Vec<StageRow> {
        states
            .iter()
            .map(|(stage, state, completed)| {
                let state = StageState::parse(state).unwrap();
                StageRow {
                    stage: Stage::parse(stage).unwrap(),
                    state,
                    started_at: None,
                    finished_at: None,
                    summary: None,
                    error: None,
                    completed: *completed,
                    pid: state.is_active().then_some(1),
                }
            })
            .collect()
    }

    fn alive(pid: u32) -> bool {
        pid == 1
    }

    #[test]
    fn a_run_resumes_at_its_first_stage_not_ok() {
        type Case<'a> = (&'a [(&'a str, &'a str, bool)], Option<Stage>);
        let cases: [Case; 6] = [
            (&[], Some(Stage::Collect)),
            (&[("collect", "running", false)], Some(Stage::Collect)),
            (
                &[("collect", "ok", true), ("apply", "ok", true)],
                Some(Stage::Build),
            ),
            (
                &[
                    ("collect", "ok", true),
                    ("apply", "failed", true),
                    ("build", "ok", true),
                    ("report", "ok", true),
                ],
                Some(Stage::Apply),
            ),
            (
                &[
                    ("collect", "ok", true),
                    ("apply", "ok", true),
                    ("build", "ok", true),
                    ("publish", "ok", true),
                    ("test", "ok", true),
                    ("report", "failed", false),
                ],
                None,
            ),
            (
                &[
                    ("collect", "ok", true),
                    ("apply", "ok", true),
                    ("build", "ok", true),
                    ("publish", "interrupted", false),
                ],
                Some(Stage::Publish),
            ),
        ];
        for (stages, want) in cases {
            let run = run_row(Stage::Collect, None);
            assert_eq!(first_unfinished(&run, &rows(stages)), want, "{stages:?}");
        }
        // A run made by `patchline apply` never goes back to collect.
        let run = run_row(Stage::Apply, None);
        assert_eq!(first_unfinished(&run, &[]), Some(Stage::Apply));
    }

    #[test]
    fn admission_follows_the_stage_order_and_lets_completed_failures_through() {
        let open = run_row(Stage::Collect, None);
        type Case<'a> = (&'a [(&'a str, &'a str, bool)], Stage, Result<(), &'a str>);
        let cases: &[Case] = &[
            (&[], Stage::Collect, Ok(())),
            (
                &[],
                Stage::Apply,
                Err("collect must finish ok first (it is not started)"),
            ),
            (&[], Stage::Report, Ok(())),
            (&[("collect", "ok", true)], Stage::Apply, Ok(())),
            // A series failed, another applied: build what applied.
            (
                &[("collect", "ok", true), ("apply", "failed", true)],
                Stage::Build,
                Ok(()),
            ),
            // Collect stopped by an error: nothing to apply.
            (
                &[("collect", "failed", false)],
                Stage::Apply,
                Err("collect must finish ok first (it is failed: stopped by an error)"),
            ),
            (&[("collect", "skipped", true)], Stage::Apply, Ok(())),
            (
                &[("collect", "interrupted", false)],
                Stage::Apply,
                Err("(it is interrupted)"),
            ),
            (
                &[("collect", "running", false)],
                Stage::Report,
                Err("stage collect of run 7 is running; a run runs one stage at a time"),
            ),
            // Re-running a stage that already ran is allowed (idempotent).
            (
                &[("collect", "ok", true), ("apply", "ok", true)],
                Stage::Apply,
                Ok(()),
            ),
        ];
        for (stages, stage, want) in cases {
            let got = admit(&open, &rows(stages), *stage, Caller::Pipeline, &alive)
                .map_err(|r| r.to_string());
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(text), Err(message)) if message.contains(text) => {}
                _ => panic!("{stages:?} {stage}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_stage_whose_process_is_gone_counts_as_interrupted() {
        let open = run_row(Stage::Collect, None);
        let mut stages = rows(&[("collect", "running", false)]);
        stages[0].pid = Some(0);
        let refused = admit(&open, &stages, Stage::Apply, Caller::Pipeline, &alive)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("(it is interrupted)"), "{refused}");
        assert_eq!(
            admit(&open, &stages, Stage::Collect, Caller::Pipeline, &alive),
            Ok(())
        );
        // A row from before processes were recorded names none.
        stages[0].pid = None;
        assert_eq!(
            admit(&open, &stages, Stage::Collect, Caller::Pipeline, &alive),
            Ok(())
        );
    }

    #[test]
    fn only_an_operator_reopens_a_finished_run() {
        let finished = run_row(Stage::Collect, Some(100));
        let done = rows(&[("collect", "ok", true), ("apply", "ok", true)]);
        let refused = admit(&finished, &done, Stage::Build, Caller::Pipeline, &alive);
        assert_eq!(refused, Err(Refusal::Finished { run: 7, at: 100 }));
        assert_eq!(
            admit(&finished, &done, Stage::Build, Caller::Operator, &alive),
            Ok(())
        );
        let later = run_row(Stage::Apply, None);
        let e = admit(&later, &[], Stage::Collect, Caller::Operator, &alive).unwrap_err();
        assert!(e.to_string().contains("the run began at apply"), "{e}");
    }

    #[test]
    fn a_run_ends_ok_only_when_every_stage_of_it_did() {
        let all_ok: Vec<(&str, &str, bool)> = Stage::ALL
            .iter()
            .map(|s| (s.as_str(), "ok", true))
            .collect();
        let run = run_row(Stage::Collect, None);
        assert_eq!(final_state(&run, &rows(&all_ok), false), RunState::Ok);
        assert_eq!(final_state(&run, &rows(&all_ok), true), RunState::Failed);
        // Report only: five stages never ran.
        assert_eq!(
            final_state(&run, &rows(&[("report", "ok", true)]), false),
            RunState::Failed
        );
        let mut dry = all_ok.clone();
        dry[3] = ("publish", "skipped", true);
        assert_eq!(final_state(&run, &rows(&dry), false), RunState::Ok);
        let mut partly = all_ok.clone();
        partly[1] = ("apply", "failed", true);
        assert_eq!(final_state(&run, &rows(&partly), false), RunState::Failed);
        // A run that began at apply is judged from apply on.
        let from_apply = run_row(Stage::Apply, None);
        assert_eq!(
            final_state(&from_apply, &rows(&all_ok[1..]), false),
            RunState::Ok
        );
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Some(*stage));
        }
        assert_eq!(Stage::parse("deploy"), None);
        assert_eq!(Stage::Apply.before(), Some(Stage::Collect));
        assert_eq!(Stage::Collect.before(), None);
    }
}
