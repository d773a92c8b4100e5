//! Command-line interface: argument parsing and the commands' I/O.
//!
//! Results go to stdout (one JSON document or JSON lines with `--json`),
//! human progress and diagnostics to stderr: a line when a stage begins
//! and when it ends, and on a terminal a live line with a bar for long
//! steps ([`TerminalProgress`]; `--quiet` for none). Every failure is a
//! `stage::Failure` carrying its `stage::Exit` (the exit codes, in one
//! place): 1 stage failed, 2 usage or config error, 3 infrastructure
//! unreachable. The commands never decide what may run: they call the
//! state machine (`crate::stage`).

use crate::config::Config;
use crate::mail::classify::classify;
use crate::mail::parse::{MailLimits, parse_mail};
use crate::mail::source::mbox::{MboxFormat, MboxSource};
use crate::mail::source::{Flow, MailSource, Resume};
use crate::stage::collect::{self, CollectSummary};
use crate::stage::{
    self, Caller, NewRun, Progress, RunOptions, RunState, Stage, StageEnded, StageState, Summary,
    Unit,
};
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "patchline",
    version,
    about = "Mailing list to RPM repository pipeline"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "PATCHLINE_CONFIG",
        default_value = "patchline.toml"
    )]
    pub config: PathBuf,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (repeat for more); stage lines stay,
    /// progress bars go.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Nothing on stderr but errors: no stage lines, progress bars,
    /// warnings or notes (results still go to stdout; `patchline test`
    /// prints its results on stderr all the same).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Trigger {
    /// Started by a person (a shell, Jenkins' "Build Now").
    Manual,
    /// Started by a timer (the nightly cron of Jenkins or systemd).
    Timer,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Timer => "timer",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline once: collect, apply, build, publish, test,
    /// report.
    Run {
        /// What started the run, as reports and `status` show it.
        #[arg(long, value_enum, default_value = "manual")]
        trigger: Trigger,
        /// Run every stage but publish (recorded as skipped), as the
        /// worker's `dry_run` and Jenkins' DRY_RUN do.
        #[arg(long)]
        dry_run: bool,
        /// Only this repository's series (repeat for more; default: every
        /// configured repository), as the worker's `repos`.
        #[arg(long = "repo", value_name = "NAME")]
        repos: Vec<String>,
        /// Continue a run that did not finish (default: the latest such run)
        /// at its first unfinished stage instead of starting a new one.
        #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "0")]
        resume: Option<i64>,
    },
    /// Read new mail, archive it, classify it and assemble series.
    Collect {
        /// Run the stage as part of this run (default: a new run).
        #[arg(long)]
        run: Option<i64>,
        /// Keep running: wait for new mail (IMAP IDLE, else polling) and
        /// collect again.
        #[arg(long)]
        watch: bool,
        /// Forget the source's stored position first (after its mailbox was
        /// replaced); already stored mails are still recognised by
        /// Message-ID.
        #[arg(long)]
        reset_source: bool,
    },
    /// Apply every complete series to its repository and branch.
    Apply {
        /// Run the stage as part of this run (default: a new run).
        #[arg(long)]
        run: Option<i64>,
    },
    /// Build RPMs of every branch the apply stage of the run moved.
    Build {
        /// The run whose applied branches are built (default: the latest).
        #[arg(long)]
        run: Option<i64>,
    },
    /// Publish the RPMs the run built into yum repositories.
    Publish {
        /// The run whose builds are published (default: the latest).
        #[arg(long)]
        run: Option<i64>,
    },
    /// Run the configured test commands against the RPMs the run built.
    Test {
        /// The run whose builds are tested (default: the latest).
        #[arg(long)]
        run: Option<i64>,
    },
    /// Compose, write and send the run's reports (and retry the outbox).
    Report {
        /// The run to report on (default: the latest).
        #[arg(long)]
        run: Option<i64>,
    },
    /// Run the HTTP worker (the API Jenkins drives; see docs/api.md).
    Serve {
        /// Address to listen on (overrides `server.bind`).
        #[arg(long)]
        bind: Option<String>,
        /// File holding the API token (overrides `server.token_file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Classify mail files and print their subject fields.
    Parse {
        /// Mail files (`.eml`, or mbox files such as `git format-patch` output).
        #[arg(required = true)]
        mails: Vec<PathBuf>,
    },
    /// Show what a run did (default: the latest run).
    Status {
        /// The run to show (default: the latest).
        run: Option<i64>,
    },
    /// Apply patch mails to a branch like `git am`, without a work tree.
    Am {
        /// The git repository (bare or not).
        #[arg(long)]
        repo: PathBuf,
        /// The branch to apply to; it moves only if every patch applies.
        #[arg(long)]
        branch: String,
        /// Context may differ in whitespace (`git am --ignore-whitespace`).
        #[arg(long)]
        ignore_whitespace: bool,
        /// Drop everything above a `-- >8 --` line (`git am --scissors`).
        #[arg(long)]
        scissors: bool,
        /// Keep `\r` at the end of lines (`git am --keep-cr`).
        #[arg(long)]
        keep_cr: bool,
        /// Fall back to a 3-way merge when a patch does not apply and the
        /// repository has the blobs its `index` lines name (`git am -3`).
        #[arg(long = "3way", short = '3')]
        three_way: bool,
        /// Apply the patches to this commit (a series' `base-commit:`) and
        /// merge each one's change onto the branch, as a cherry-pick does.
        #[arg(long, value_name = "COMMIT")]
        base: Option<String>,
        /// Mail files or mboxes (e.g. `git format-patch` output), in order.
        #[arg(required = true)]
        mbox: Vec<PathBuf>,
    },
}

pub use crate::stage::{Exit, Failure};

impl From<Trigger> for crate::store::Trigger {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Manual => crate::store::Trigger::Manual,
            Trigger::Timer => crate::store::Trigger::Timer,
        }
    }
}

/// Config and state for a command that works on runs.
fn open(cli: &Cli) -> Result<(Config, Store), Failure> {
    let config = Config::load(&cli.config)?;
    let store = Store::open(&config.state.db)?;
    Ok((config, store))
}

/// Runs `stage` of the given run (default: a new run beginning at this
/// stage when `new_run`, else the latest run) as an operator's command,
/// through the state machine.
fn stage_command(
    cli: &Cli,
    stage: Stage,
    run: Option<i64>,
    new_run: bool,
) -> Result<(Store, Summary), Failure> {
    let (config, mut store) = open(cli)?;
    let run = match (run, new_run) {
        (Some(id), _) => store.run(id)?.id,
        (None, true) => new_stage_run(&mut store, stage)?,
        (None, false) => given_or_latest_run(&store, None)?,
    };
    let summary = stage::start(
        &mut store,
        &config,
        run,
        stage,
        Caller::Operator,
        &TerminalProgress::for_cli(cli),
    )?;
    Ok((store, summary))
}

/// A run made by a per-stage command: it begins at that stage.
fn new_stage_run(store: &mut Store, stage: Stage) -> Result<i64, Failure> {
    let cause = format!("patchline {stage}");
    let user = user();
    Ok(store.create_run(&NewRun {
        trigger: crate::store::Trigger::Manual,
        cause: Some(&cause),
        started_by: user.as_deref(),
        jenkins_url: None,
        first_stage: stage,
        options: RunOptions::default(),
        via_api: false,
    })?)
}

fn failed(exit_when: bool, message: String) -> Result<(), Failure> {
    if exit_when {
        return Err(Failure::stage(message));
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run {
            trigger,
            resume,
            dry_run,
            repos,
        } => {
            let (config, mut store) = open(&cli)?;
            let progress = TerminalProgress::for_cli(&cli);
            if resume.is_some() && (*dry_run || !repos.is_empty()) {
                return Err(Failure::usage(
                    "--resume goes on with the options the run was made with; --dry-run and --repo are for a new run",
                ));
            }
            for name in repos {
                if !config.repos.iter().any(|r| &r.name == name) {
                    let known: Vec<&str> = config.repos.iter().map(|r| r.name.as_str()).collect();
                    return Err(Failure::usage(format!(
                        "--repo {name:?} is not a configured repository (configured: {})",
                        known.join(", ")
                    )));
                }
            }
            let options = RunOptions {
                repos: repos.clone(),
                dry_run: *dry_run,
            };
            let outcome = match resume {
                None => stage::run(&mut store, &config, (*trigger).into(), options, &progress)?,
                Some(0) => stage::resume(&mut store, &config, None, &progress)?,
                Some(id) => stage::resume(&mut store, &config, Some(*id), &progress)?,
            };
            let status = stage::status(&store, outcome.run)?;
            if cli.json {
                print_json(&status);
            } else {
                print_stage_details(&status);
                print_status(&status);
                print_run_result(&status, outcome.report.as_ref(), cli.quiet);
            }
            if let Some(failure) = outcome.stopped_by {
                return Err(failure);
            }
            failed(
                outcome.state == RunState::Failed,
                format!(
                    "run {} failed (see `patchline status {}`)",
                    outcome.run, outcome.run
                ),
            )
        }
        Command::Test { run } => {
            let (_, summary) = stage_command(&cli, Stage::Test, *run, false)?;
            let Summary::Test(summary) = summary else {
                return Ok(());
            };
            if cli.json {
                print_json(&summary);
            } else {
                for r in &summary.results {
                    eprintln!(
                        "{:<8} {} on {}/{} for {}{}",
                        r.state,
                        r.name,
                        r.repo,
                        r.branch,
                        r.target,
                        r.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                }
                eprintln!(
                    "tests: {} passed, {} failed, {} skipped; JUnit: {}",
                    summary.passed,
                    summary.failed,
                    summary.skipped,
                    summary.junit.as_deref().unwrap_or("-")
                );
            }
            failed(
                summary.failed > 0,
                format!("{} test(s) failed", summary.failed),
            )
        }
        Command::Report { run } => {
            let (_, summary) = stage_command(&cli, Stage::Report, *run, false)?;
            if let Summary::Report(summary) = summary {
                if cli.json {
                    print_json(&summary);
                } else if !cli.quiet {
                    print_report(&summary);
                }
            }
            Ok(())
        }
        Command::Collect {
            run,
            watch,
            reset_source,
        } => {
            let (config, mut store) = open(&cli)?;
            let mut source = collect::source_from_config(&config)?;
            if *reset_source && store.reset_source(&source.key())? {
                eprintln!("forgot the stored position of {}", source.key());
            }
            let run = match run {
                Some(id) => store.run(*id)?.id,
                None => new_stage_run(&mut store, Stage::Collect)?,
            };
            loop {
                let summary = stage::start_collect(
                    &mut store,
                    &config,
                    run,
                    source.as_mut(),
                    &TerminalProgress::for_cli(&cli),
                )?;
                if cli.json {
                    print_json(&summary);
                } else {
                    print_collect(&summary);
                }
                if !*watch {
                    return Ok(());
                }
                let wait = std::time::Duration::from_secs(match config.intake.source {
                    crate::config::SourceKind::Imap => {
                        config.intake.imap.as_ref().map_or(60, |i| i.idle_secs)
                    }
                    _ => config.intake.poll_secs,
                });
                source.wait_for_mail(wait).map_err(collect::Error::from)?;
            }
        }
        Command::Apply { run } => {
            let (_, summary) = stage_command(&cli, Stage::Apply, *run, true)?;
            let Summary::Apply(summary) = summary else {
                return Ok(());
            };
            if cli.json {
                print_json(&summary);
            } else {
                print_apply(&summary);
            }
            failed(
                summary.series_failed > 0 || summary.pulls_refused > 0,
                format!(
                    "{} series did not apply, {} pull requests refused",
                    summary.series_failed, summary.pulls_refused
                ),
            )
        }
        Command::Build { run } => {
            let (_, summary) = stage_command(&cli, Stage::Build, *run, false)?;
            let Summary::Build(summary) = summary else {
                return Ok(());
            };
            if cli.json {
                print_json(&summary);
            } else {
                print_build(&summary);
            }
            failed(
                summary.failed > 0,
                format!("{} target build(s) failed", summary.failed),
            )
        }
        Command::Publish { run } => {
            let (_, summary) = stage_command(&cli, Stage::Publish, *run, false)?;
            match summary {
                Summary::Publish(summary) if cli.json => print_json(&summary),
                Summary::Publish(summary) => print_publish(&summary),
                Summary::Skipped(why) if cli.json => print_json(&json!({ "skipped": why })),
                Summary::Skipped(why) => eprintln!("publish skipped: {why}"),
                _ => {}
            }
            Ok(())
        }
        Command::Serve { bind, token_file } => {
            crate::server::serve(&cli.config, bind.as_deref(), token_file.as_deref())
                .map_err(|e| Failure::new(e.exit(), e.to_string()))
        }
        Command::Parse { mails } => parse(&cli, mails),
        Command::Am {
            repo,
            branch,
            ignore_whitespace,
            scissors,
            keep_cr,
            three_way,
            base,
            mbox,
        } => am(
            cli.json,
            repo,
            branch,
            base.as_deref(),
            crate::patch::apply::AmOptions {
                apply: crate::patch::hunks::ApplyOptions {
                    ignore_whitespace: *ignore_whitespace,
                    unidiff_zero: false,
                },
                mailinfo: crate::patch::mailinfo::MailInfoOptions {
                    scissors: *scissors,
                    keep_cr: *keep_cr,
                },
                three_way: *three_way,
            },
            mbox,
        ),
        Command::Status { run } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.state.db)?;
            let id = match run {
                Some(id) => *id,
                None => match store.latest_run()? {
                    Some(r) => r.id,
                    None => {
                        return Err(Failure::usage(format!(
                            "no runs yet in {}",
                            config.state.db.display()
                        )));
                    }
                },
            };
            let status = stage::status(&store, id)?;
            if cli.json {
                print_json(&status);
            } else {
                print_status(&status);
            }
            Ok(())
        }
    }
}

/// The run a later stage works on: the one given, else the latest.
fn given_or_latest_run(store: &Store, run: Option<i64>) -> Result<i64, Failure> {
    match run {
        Some(id) => Ok(store.run(id)?.id),
        None => Ok(store
            .latest_run()?
            .ok_or_else(|| {
                Failure::usage("no runs yet: run `patchline run` or `patchline collect` first")
            })?
            .id),
    }
}

fn user() -> Option<String> {
    std::env::var("USER").ok().filter(|u| !u.is_empty())
}

fn print_json<T: serde::Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not worth a panic.
    let _ = serde_json::to_writer(&mut out, value);
    let _ = writeln!(out);
}

fn print_collect(s: &CollectSummary) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "run {}: {} mails from {}: {} patches, {} ignored, {} duplicates, {} errors",
        s.run,
        s.mails,
        s.source,
        s.patches,
        s.ignored,
        s.duplicates,
        s.errors.len()
    );
    let _ = writeln!(
        out,
        "series: {} complete, {} incomplete",
        s.series_complete, s.series_incomplete
    );
    for line in &s.series {
        let target = match (&line.repo, &line.branch) {
            (Some(r), Some(b)) => format!("{r}/{b}"),
            (Some(r), None) => r.clone(),
            _ => "no repository".into(),
        };
        let missing = if line.missing.is_empty() {
            String::new()
        } else {
            format!(
                " missing {}",
                line.missing
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let _ = writeln!(
            out,
            "  [{}] v{} {}/{} {} -> {}{}  ({})",
            line.state,
            line.version,
            line.total,
            line.total,
            line.title,
            target,
            missing,
            line.archive_dir
        );
    }
    for e in &s.errors {
        let _ = writeln!(
            out,
            "  error: <{}> {:?}: {}",
            e.message_id, e.subject, e.error
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
}

fn print_apply(s: &crate::stage::apply::ApplySummary) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "run {}: {} series applied ({} patches), {} failed",
        s.run, s.series_applied, s.patches_applied, s.series_failed
    );
    for series in &s.series {
        let target = format!(
            "{}/{}",
            series.repo.as_deref().unwrap_or("?"),
            series.branch.as_deref().unwrap_or("?")
        );
        match (&series.new_tip, &series.error) {
            (Some(tip), _) => {
                let _ = writeln!(out, "  [applied] {} -> {target} at {tip}", series.title);
                for patch in &series.trailers {
                    for t in &patch.trailers {
                        let _ = writeln!(out, "    patch {}: + {t}", patch.index);
                    }
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(
                    out,
                    "  [failed] {} -> {target}: {}",
                    series.title, e.message
                );
                if let Some(patch) = &series.failed_patch {
                    let _ = writeln!(out, "    patch: {patch}");
                }
            }
            (None, None) => match &series.waiting_for {
                Some(key) => {
                    let _ = writeln!(
                        out,
                        "  [waiting] {} -> {target}: for series {key}",
                        series.title
                    );
                }
                None => {
                    let _ = writeln!(out, "  [{}] {} -> {target}", series.state, series.title);
                }
            },
        }
        if let Some(base) = &series.applied_from {
            let _ = writeln!(out, "    applied from its base commit {base}");
        }
    }
    for pull in &s.pulls {
        let target = format!(
            "{}/{}",
            pull.repo.as_deref().unwrap_or("?"),
            pull.branch.as_deref().unwrap_or("?")
        );
        match &pull.error {
            None => {
                let _ = writeln!(
                    out,
                    "  [pull {}] {} -> {target} at {}",
                    pull.landed.as_deref().unwrap_or("landed"),
                    pull.subject,
                    pull.new_tip.as_deref().unwrap_or("?")
                );
            }
            Some(why) => {
                let _ = writeln!(out, "  [pull refused] {} -> {target}: {why}", pull.subject);
            }
        }
    }
    for late in &s.late_trailers {
        let patches: Vec<String> = late
            .patches
            .iter()
            .map(|i| format!("{i}/{}", late.total))
            .collect();
        let _ = writeln!(
            out,
            "  [late] {}: {} on {} (not added: the branch is not rewritten)",
            late.title,
            late.trailer,
            patches.join(", ")
        );
    }
}

fn print_build(s: &crate::stage::build::BuildSummary) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "run {}: {} target builds ok, {} failed",
        s.run, s.built, s.failed
    );
    for b in &s.builds {
        match &b.error {
            None => {
                let _ = writeln!(
                    out,
                    "  [ok] {}/{} {} {}: {}",
                    b.repo,
                    b.branch,
                    b.target,
                    b.nvr.as_deref().unwrap_or("?"),
                    b.rpms.join(" ")
                );
            }
            Some(e) => {
                let _ = writeln!(out, "  [failed] {}/{} {}: {e}", b.repo, b.branch, b.target);
            }
        }
    }
    for reason in &s.not_built {
        let _ = writeln!(out, "  [not built] {reason}");
    }
}

fn print_publish(s: &crate::stage::publish::PublishSummary) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "run {}: {} repositories published",
        s.run,
        s.repos.len()
    );
    for r in &s.repos {
        let _ = writeln!(
            out,
            "  {} {}{}: {} ({} packages)\n    repo file: {}",
            r.repo,
            r.branch
                .as_deref()
                .map(|b| format!("{b} "))
                .unwrap_or_default(),
            r.target,
            r.url,
            r.packages.len(),
            r.repo_file_url
        );
    }
    if let Some(note) = &s.layout_note {
        let _ = writeln!(out, "  note: {note}");
    }
}

fn print_report(summary: &crate::stage::report::ReportSummary) {
    for r in &summary.reports {
        eprintln!(
            "report {:<7} {} (to {})",
            r.state,
            r.subject,
            r.to.join(", ")
        );
    }
    if summary.sent_from_earlier_runs > 0 {
        eprintln!(
            "sent {} report(s) of earlier runs from the outbox",
            summary.sent_from_earlier_runs
        );
    }
    if let Some(file) = &summary.file {
        eprintln!("report written to {file}");
    }
}

/// What each stage of a run did, as the per-stage commands print it.
fn print_stage_details(status: &serde_json::Value) {
    fn summary<T: serde::de::DeserializeOwned>(
        status: &serde_json::Value,
        stage: &str,
    ) -> Option<T> {
        status["stages"]
            .as_array()?
            .iter()
            .find(|s| s["stage"] == stage)
            .and_then(|s| serde_json::from_value(s["summary"].clone()).ok())
    }
    if let Some(s) = summary(status, "collect") {
        print_collect(&s);
    }
    if let Some(s) = summary(status, "apply") {
        print_apply(&s);
    }
    if let Some(s) = summary(status, "build") {
        print_build(&s);
    }
    if let Some(s) = summary(status, "publish") {
        print_publish(&s);
    }
}

/// The end of `patchline run`: where the repositories are, and the report.
fn print_run_result(
    status: &serde_json::Value,
    report: Option<&crate::stage::report::ReportSummary>,
    quiet: bool,
) {
    let publish = status["stages"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["stage"] == "publish"))
        .map(|s| &s["summary"]);
    if let Some(repos) = publish.and_then(|p| p["repos"].as_array())
        && !repos.is_empty()
        && !quiet
    {
        eprintln!("\nrepositories:");
        for r in repos {
            eprintln!(
                "  {} {}({}): {}  [{}]",
                r["repo"].as_str().unwrap_or(""),
                r["branch"]
                    .as_str()
                    .map(|b| format!("{b} "))
                    .unwrap_or_default(),
                r["target"].as_str().unwrap_or(""),
                r["url"].as_str().unwrap_or(""),
                r["repo_file"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(report) = report {
        if !quiet {
            print_report(report);
        }
        if let Some(text) = report
            .file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
        {
            println!("{text}");
        }
    }
}

fn print_status(status: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let run = &status["run"];
    let _ = writeln!(
        out,
        "run {} ({}) {}",
        run["id"],
        run["trigger"].as_str().unwrap_or("?"),
        run["state"].as_str().unwrap_or("?")
    );
    if let Some(stages) = status["stages"].as_array() {
        for s in stages {
            let counts = match s["summary"].as_object() {
                Some(summary) => summary
                    .iter()
                    .filter(|(_, v)| v.is_u64())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<8} {:<8} {} {}",
                s["stage"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?"),
                counts,
                s["error"].as_str().unwrap_or("")
            );
        }
    }
}

/// Whether stderr may carry colour: a terminal, and `NO_COLOR` unset or
/// empty (no-color.org). Never in a pipe, a log file or Jenkins' console.
pub fn stderr_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// What stderr shows of a command's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    /// `--quiet`, or `--json` (a program reads the result).
    Nothing,
    /// A pipe, a file, or `-v` (log lines would tear a bar): a plain line
    /// when a stage begins and one when it ends.
    Lines,
    /// A terminal: a live line per stage (spinner, elapsed time, a bar
    /// for long steps), replaced by the stage's end line when it ends.
    Live,
}

/// The live line on the terminal, if one is drawn: log lines
/// ([`LogWriter`]) are written above it, not through it.
static LIVE: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

fn live_line() -> Option<indicatif::ProgressBar> {
    LIVE.lock().ok().and_then(|live| live.clone())
}

fn replace_live_line(bar: Option<indicatif::ProgressBar>) -> Option<indicatif::ProgressBar> {
    match LIVE.lock() {
        Ok(mut live) => std::mem::replace(&mut *live, bar),
        Err(_) => None,
    }
}

/// stderr for log lines (the `tracing` layer of `main`): a live line is
/// taken away while a log line is written, and drawn again below it.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match live_line() {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The operator's view of the stages on stderr (see [`Show`]). Colour
/// only where [`stderr_colours`] allows it; without it the live line
/// still moves the cursor (`\r`, erase line), which is not colour.
pub struct TerminalProgress {
    show: Show,
    colour: bool,
    unit: std::cell::Cell<Unit>,
}

impl TerminalProgress {
    pub fn for_cli(cli: &Cli) -> Self {
        let show = if cli.quiet || cli.json {
            Show::Nothing
        } else if cli.verbose > 0 || !std::io::stderr().is_terminal() {
            Show::Lines
        } else {
            Show::Live
        };
        Self {
            show,
            colour: stderr_colours(),
            unit: std::cell::Cell::new(Unit::Mails),
        }
    }

    fn style(&self, template: &str) -> indicatif::ProgressStyle {
        // The colour tags are left out without colour: no SGR is written.
        let template = if self.colour {
            template
                .replace("{spinner}", "{spinner:.cyan}")
                .replace("{bar:30}", "{bar:30.cyan/blue}")
        } else {
            template.to_owned()
        };
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
            .progress_chars("=> ")
    }

    /// The live line between steps: the stage's name and time.
    fn spinner(&self) -> indicatif::ProgressStyle {
        self.style("{spinner} {prefix:<8} {elapsed:>3} {wide_msg}")
    }

    fn with_live(&self, f: impl FnOnce(&indicatif::ProgressBar)) {
        if self.show == Show::Live
            && let Some(bar) = live_line()
        {
            f(&bar);
        }
    }
}

impl Progress for TerminalProgress {
    fn stage_begins(&self, run: i64, stage: Stage) {
        match self.show {
            Show::Nothing => {}
            Show::Lines => eprintln!("{stage:<8} started (run {run})"),
            Show::Live => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(self.spinner());
                bar.set_prefix(stage.as_str());
                bar.enable_steady_tick(std::time::Duration::from_millis(100));
                bar.tick();
                if let Some(old) = replace_live_line(Some(bar)) {
                    old.finish_and_clear();
                }
            }
        }
    }

    fn stage_ends(&self, end: &StageEnded<'_>) {
        let line = stage_line(end, self.colour);
        match self.show {
            Show::Nothing => {}
            Show::Lines => eprintln!("{line}"),
            Show::Live => {
                if let Some(bar) = replace_live_line(None) {
                    bar.finish_and_clear();
                }
                eprintln!("{line}");
            }
        }
    }

    fn step(&self, unit: Unit, total: Option<u64>) {
        self.unit.set(unit);
        self.with_live(|bar| {
            let style = match (unit, total) {
                (Unit::Bytes, Some(_)) => self.style(
                    "{spinner} {prefix:<8} {elapsed:>3} [{bar:30}] {bytes}/{total_bytes} {wide_msg}",
                ),
                (_, Some(_)) => self.style(&format!(
                    "{{spinner}} {{prefix:<8}} {{elapsed:>3}} [{{bar:30}}] {{pos}}/{{len}} {} {{wide_msg}}",
                    unit.as_str()
                )),
                (_, None) => self.style(&format!(
                    "{{spinner}} {{prefix:<8}} {{elapsed:>3}} {{pos}} {} ({{per_sec}}) {{wide_msg}}",
                    unit.as_str()
                )),
            };
            bar.set_length(total.unwrap_or(0));
            bar.set_position(0);
            bar.set_message("");
            bar.set_style(style);
        });
    }

    fn advance(&self, at: u64, current: &str) {
        self.with_live(|bar| {
            bar.set_position(at);
            if !current.is_empty() {
                bar.set_message(current.to_owned());
            }
        });
    }

    fn mail(&self, stored: u64, origin: &str) {
        self.with_live(|bar| {
            if self.unit.get() == Unit::Mails {
                bar.set_position(stored);
            }
            // A new message is a string: not for every mail.
            if stored % 64 == 1 {
                bar.set_message(format!("mail {stored}: {origin}"));
            }
        });
    }

    fn done(&self) {
        self.with_live(|bar| {
            bar.set_style(self.spinner());
            bar.set_message("");
        });
    }
}

impl Drop for TerminalProgress {
    /// A command that stops on an error leaves no half-drawn line.
    fn drop(&mut self) {
        if self.show == Show::Live
            && let Some(bar) = replace_live_line(None)
        {
            bar.finish_and_clear();
        }
    }
}

/// A stage's end line: `collect  ok      412 mails, ... (3.2 s)`; the
/// state in colour when `colour`.
fn stage_line(end: &StageEnded<'_>, colour: bool) -> String {
    let state = format!("{:<7}", end.state.as_str());
    let state = match (colour, end.state) {
        (true, StageState::Ok) => format!("\x1b[32m{state}\x1b[0m"),
        (true, StageState::Failed) => format!("\x1b[31m{state}\x1b[0m"),
        (true, StageState::Skipped) => format!("\x1b[33m{state}\x1b[0m"),
        _ => state,
    };
    format!(
        "{:<8} {state} {} ({})",
        end.stage.as_str(),
        stage_account(end.outcome),
        elapsed(end.elapsed)
    )
}

/// What a stage did, in a few words (its summary's counts, or the error
/// that stopped it).
fn stage_account(outcome: &Result<Summary, Failure>) -> String {
    /// `1 mail`, `2 mails`.
    fn count(n: u64, one: &str, many: &str) -> String {
        format!("{n} {}", if n == 1 { one } else { many })
    }
    /// A count said only when it is not zero.
    fn and(parts: &mut Vec<String>, n: u64, one: &str, many: &str) {
        if n > 0 {
            parts.push(count(n, one, many));
        }
    }
    let summary = match outcome {
        Err(failure) => {
            let first = failure.message.lines().next().unwrap_or_default();
            return format!("stopped: {first}");
        }
        Ok(summary) => summary,
    };
    let mut parts = Vec::new();
    match summary {
        Summary::Collect(s) => {
            parts.push(count(s.mails, "mail", "mails"));
            parts.push(count(s.patches, "patch", "patches"));
            parts.push(format!("{} series complete", s.series_complete));
            and(&mut parts, s.series_incomplete, "incomplete", "incomplete");
            and(&mut parts, s.errors.len() as u64, "error", "errors");
        }
        Summary::Apply(s) => {
            parts.push(format!(
                "{} series applied ({})",
                s.series_applied,
                count(s.patches_applied, "patch", "patches")
            ));
            and(&mut parts, s.series_failed, "failed", "failed");
            and(&mut parts, s.series_waiting, "waiting", "waiting");
            let landed = ("pull request landed", "pull requests landed");
            and(&mut parts, s.pulls_landed, landed.0, landed.1);
            let refused = ("pull request refused", "pull requests refused");
            and(&mut parts, s.pulls_refused, refused.0, refused.1);
        }
        Summary::Build(s) => {
            parts.push(count(s.built, "target built", "targets built"));
            and(&mut parts, s.failed, "failed", "failed");
            let not_built = ("branch not built", "branches not built");
            and(
                &mut parts,
                s.not_built.len() as u64,
                not_built.0,
                not_built.1,
            );
        }
        Summary::Publish(s) => parts.push(count(
            s.repos.len() as u64,
            "repository published",
            "repositories published",
        )),
        Summary::Test(s) => parts.push(format!(
            "{} passed, {} failed, {} skipped",
            s.passed, s.failed, s.skipped
        )),
        Summary::Report(s) => {
            parts.push(format!(
                "{}, {} sent",
                count(s.reports.len() as u64, "report", "reports"),
                s.sent
            ));
            let earlier = ("sent from the outbox", "sent from the outbox");
            and(&mut parts, s.sent_from_earlier_runs, earlier.0, earlier.1);
        }
        Summary::Skipped(why) => parts.push(why.clone()),
    }
    parts.join(", ")
}

/// `0.4 s`, `12 s`, `3 min 05 s`.
fn elapsed(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 60.0 {
        format!("{secs:.0} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// `patchline parse`: one result per mail; files that begin with an mbox
/// `From ` line are split like an mbox (`file:N` names the Nth mail).
fn parse(cli: &Cli, files: &[PathBuf]) -> Result<(), Failure> {
    let config = if cli.config.exists() {
        Config::load(&cli.config)?
    } else if cli.config != Path::new("patchline.toml") {
        return Err(Failure::usage(format!(
            "config {}: cannot read: no such file",
            cli.config.display()
        )));
    } else {
        Config::builtin()
    };
    let grammar = config.subject_grammar()?;
    let limits = MailLimits {
        max_size: usize::try_from(config.intake.max_mail_size).unwrap_or(usize::MAX),
        max_parts: config.intake.max_parts,
        ..MailLimits::default()
    };
    let mut unreadable = 0;
    for file in files {
        let name = file.display().to_string();
        let mails = match read_mail_file(file, MboxFormat::Mboxrd, config.intake.max_mail_size) {
            Ok(mails) => mails,
            Err(e) => {
                unreadable += 1;
                emit_parse(cli.json, &name, None, Some(e));
                continue;
            }
        };
        for (label, bytes) in mails {
            match parse_mail(&bytes, &limits) {
                Ok(mail) => {
                    let verdict = classify(&mail, &grammar);
                    emit_parse(cli.json, &label, Some((&mail, &verdict)), None);
                }
                Err(e) => emit_parse(cli.json, &label, None, Some(format!("{label}: {e}"))),
            }
        }
    }
    if unreadable > 0 {
        return Err(Failure::usage(format!(
            "{unreadable} file(s) could not be read"
        )));
    }
    Ok(())
}

/// The mails of one file: the file itself, or each mail when it begins
/// with an mbox `From ` line (named `file:N`).
fn read_mail_file(
    file: &Path,
    format: MboxFormat,
    max_mail_size: u64,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let name = file.display().to_string();
    let unreadable = |e: std::io::Error| format!("cannot read {name}: {e}");
    let bytes = std::fs::read(file).map_err(unreadable)?;
    if !bytes.starts_with(b"From ") {
        return Ok(vec![(name, bytes)]);
    }
    // One `git format-patch` file: a single mail after its `From ` line.
    // Without quoting to undo, it is the rest of the file, as the mbox
    // reader would give it.
    if format == MboxFormat::None
        && (bytes.len() as u64) <= max_mail_size
        && let Some(eol) = memchr::memchr(b'\n', &bytes)
        && memchr::memmem::find(&bytes[eol..], b"\nFrom ").is_none()
    {
        return Ok(vec![(name, bytes[eol + 1..].to_vec())]);
    }
    let mut mails = Vec::new();
    let mut mbox = MboxSource::new(file.to_path_buf(), format, max_mail_size);
    let never = |_: &str| false;
    let resume = Resume {
        cursor: None,
        seen: &never,
    };
    mbox.fetch(&resume, &mut |raw| {
        // An over-limit mail comes as its head: read it whole (this file
        // is in memory already), so the parser names it too large.
        let bytes = match &raw.oversize {
            Some(big) => {
                let mut whole = Vec::new();
                big.copy_to(&raw.bytes, &mut whole)?;
                whole
            }
            None => raw.bytes,
        };
        mails.push((format!("{name}:{}", mails.len() + 1), bytes));
        Ok(Flow::Continue)
    })
    .map_err(|e| e.to_string())?;
    // A one-mail file (a `git format-patch` .patch) is named plainly.
    if let [(label, _)] = mails.as_mut_slice() {
        *label = name;
    }
    Ok(mails)
}

/// `patchline am`: every mail of every file, in order, as one series.
fn am(
    json_out: bool,
    repo: &Path,
    branch: &str,
    base: Option<&str>,
    opts: crate::patch::apply::AmOptions,
    files: &[PathBuf],
) -> Result<(), Failure> {
    use crate::patch::apply;
    let committer =
        apply::committer_from_env_or_config(repo).map_err(|e| Failure::usage(e.to_string()))?;
    // Read as the series is applied; a file that cannot be read stops it
    // before anything is written. As `git am`: format-patch output does not
    // quote `From ` lines.
    let mails =
        files.iter().flat_map(
            |file| match read_mail_file(file, MboxFormat::None, u64::MAX) {
                Ok(mails) => mails.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            },
        );
    let result =
        apply::apply_series(repo, branch, base, mails, &committer, opts).map_err(|e| match e {
            apply::Error::BranchMoved { .. } => Failure::stage(e.to_string()),
            _ => Failure::usage(e.to_string()),
        })?;
    let mut out = std::io::stdout().lock();
    for p in &result.patches {
        if json_out {
            let value = json!({
                "file": p.file, "subject": p.subject, "ok": p.ok, "commit": p.commit,
                "tree": p.tree, "error": p.error,
            });
            let _ = writeln!(out, "{value}");
        } else {
            // A mail that failed before its subject was read is named by
            // its file, so the line never reads a bare "Applying:".
            let what = if p.subject.is_empty() {
                format!("{} (no subject)", p.file)
            } else {
                p.subject.clone()
            };
            let _ = writeln!(out, "Applying: {what}");
            if let Some(e) = p.error.as_ref().filter(|_| !p.ok) {
                // The file is named once: most messages name it already.
                let file = match &e.path {
                    Some(f) if !e.message.contains(f.as_str()) => format!("{f}: "),
                    _ => String::new(),
                };
                let _ = writeln!(out, "error: {file}{}", e.message);
            }
        }
    }
    if json_out {
        let value = json!({
            "branch": result.branch, "old_tip": result.old_tip, "new_tip": result.new_tip,
            "applied": result.applied,
        });
        let _ = writeln!(out, "{value}");
    }
    match &result.new_tip {
        Some(tip) => {
            eprintln!(
                "{branch}: {} -> {tip} ({} patches)",
                result.old_tip, result.applied
            );
            Ok(())
        }
        None if result.patches.iter().all(|p| p.ok) => Ok(()),
        None => Err(Failure::stage(format!(
            "{branch} left at {}: the series did not apply (nothing was changed)",
            result.old_tip
        ))),
    }
}

fn emit_parse(
    json_out: bool,
    file: &str,
    parsed: Option<(
        &crate::mail::parse::ParsedMail,
        &crate::mail::classify::Verdict,
    )>,
    error: Option<String>,
) {
    let fields = parsed.and_then(|(_, v)| v.fields.as_ref());
    let value = json!({
        "file": file,
        "message_id": parsed.map(|(m, _)| m.message_id.clone()),
        "is_patch": parsed.is_some_and(|(_, v)| v.is_patch),
        "branch": fields.and_then(|f| f.branch.clone()),
        "repo": fields.and_then(|f| f.repo.clone()),
        "version": fields.map(|f| f.version),
        "revision": fields.map(|f| f.revision).filter(|r| *r > 0),
        "index": fields.and_then(|f| f.index),
        "total": fields.and_then(|f| f.total),
        "title": fields.map(|f| f.title.clone()),
        "kind": parsed.map(|(_, v)| v.kind.as_str()),
        "tags": fields.map(|f| f.tags.clone()).unwrap_or_default(),
        "prefixes": parsed.map(|(_, v)| v.prefixes.clone()).unwrap_or_default(),
        "reason": match (&error, parsed) {
            (Some(e), _) => Some(e.clone()),
            (None, Some((_, v))) if !v.is_patch => v.reason.clone(),
            _ => None,
        },
    });
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(out, "{value}");
        return;
    }
    let verdict = if value["is_patch"] == true {
        "patch"
    } else if value["kind"] == "pull" {
        "pull request"
    } else {
        "not a patch"
    };
    let mut line = format!("{file}: {verdict}");
    for key in [
        "branch", "repo", "version", "revision", "index", "total", "title", "reason",
    ] {
        if !value[key].is_null() {
            line.push_str(&format!(" {key}={}", value[key]));
        }
    }
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and every command of the CLI, nested ones
    /// included, has help text: `--help` never shows a bare name.
    #[test]
    fn every_argument_and_command_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: argument {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{name}: the command"));
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "patchline", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        // The walk sees nested commands and the global flags in them.
        let run = cmd.find_subcommand("run").unwrap();
        assert!(run.get_arguments().any(|a| a.get_id() == "quiet"));
    }

    #[test]
    fn stage_lines_say_what_the_stage_did() {
        use std::time::Duration;
        let collect = Ok(Summary::Collect(CollectSummary {
            mails: 412,
            patches: 380,
            series_complete: 37,
            series_incomplete: 2,
            ..CollectSummary::default()
        }));
        let build = Ok(Summary::Build(crate::stage::build::BuildSummary {
            built: 3,
            failed: 1,
            ..Default::default()
        }));
        let one = Ok(Summary::Collect(CollectSummary {
            mails: 1,
            patches: 1,
            series_complete: 1,
            ..CollectSummary::default()
        }));
        let stopped = Err(Failure::stage("mbox list.mbox: cannot read\nsecond line"));
        let skipped = Ok(Summary::Skipped("dry run: nothing is published".into()));
        let cases = [
            (
                Stage::Collect,
                StageState::Ok,
                &collect,
                3200,
                "collect  ok      412 mails, 380 patches, 37 series complete, 2 incomplete (3.2 s)",
            ),
            (
                Stage::Collect,
                StageState::Ok,
                &one,
                90,
                "collect  ok      1 mail, 1 patch, 1 series complete (0.1 s)",
            ),
            (
                Stage::Build,
                StageState::Failed,
                &build,
                125_000,
                "build    failed  3 targets built, 1 failed (2 min 05 s)",
            ),
            (
                Stage::Collect,
                StageState::Failed,
                &stopped,
                40,
                "collect  failed  stopped: mbox list.mbox: cannot read (0.0 s)",
            ),
            (
                Stage::Publish,
                StageState::Skipped,
                &skipped,
                12_400,
                "publish  skipped dry run: nothing is published (12 s)",
            ),
        ];
        for (stage, state, outcome, ms, want) in cases {
            let end = StageEnded {
                run: 7,
                stage,
                state,
                outcome,
                elapsed: Duration::from_millis(ms),
            };
            assert_eq!(stage_line(&end, false), want);
            let coloured = stage_line(&end, true);
            assert!(coloured.contains("\x1b["), "{coloured}");
            assert_eq!(
                coloured
                    .replace("\x1b[32m", "")
                    .replace("\x1b[31m", "")
                    .replace("\x1b[33m", "")
                    .replace("\x1b[0m", ""),
                want
            );
        }
    }
}
