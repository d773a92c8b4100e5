//! The `report` stage: gathers what the stages of a run recorded, composes
//! the reports ([`compose`], pure), writes them to the run's directory and
//! sends them through the configured transport.
//!
//! Nothing is dropped: a composed report goes into the outbox (SQLite)
//! before the first send attempt; a send that fails is retried with backoff
//! and stays queued for the next report stage. A report is composed once
//! per run, so re-running the stage never mails the list twice.

pub mod compose;
pub mod outbox;

use crate::config::{Config, ReportTransport};
use crate::stage::build::BuildState;
use crate::store::OutboxState;
use crate::store::{self, NewReport, Store, StoredReport};
use compose::{Facts, LogTail, PatchLine, Report, Thread};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("report: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Notify(#[from] crate::notify::Error),
}

/// One report of the run, as `status --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub key: String,
    pub subject: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub message_id: Option<String>,
    /// `sent`, `queued` (in the outbox, to be retried) or `written` (no
    /// transport configured: only the files).
    pub state: OutboxState,
    pub attempts: u32,
    pub error: Option<String>,
    /// The `.eml` written to the run's directory.
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ReportSummary {
    pub run: i64,
    /// The plain text of every report of the run, one file.
    pub file: Option<String>,
    pub reports: Vec<ReportLine>,
    pub sent: u64,
    /// Reports of earlier runs that this stage finally sent.
    pub sent_from_earlier_runs: u64,
}

fn stage_summary<T: serde::de::DeserializeOwned>(
    facts_stages: &[store::StageRow],
    stage: store::Stage,
) -> Option<T> {
    facts_stages
        .iter()
        .find(|s| s.stage == stage)
        .and_then(|s| s.summary.clone())
        .and_then(|v| serde_json::from_value(v).ok())
}

/// What the stages of `run` recorded, plus the mail threads and log tails
/// the reports quote.
pub fn gather(store: &Store, config: &Config, run: i64) -> Result<Facts, Error> {
    let run_row = store.run(run)?;
    let stages: Vec<store::StageRow> = store
        .stages(run)?
        .into_iter()
        .filter(|s| s.stage != store::Stage::Report)
        .collect();
    let mut facts = Facts {
        run: Some(run_row),
        collect: stage_summary(&stages, store::Stage::Collect),
        apply: stage_summary(&stages, store::Stage::Apply),
        build: stage_summary(&stages, store::Stage::Build),
        publish: stage_summary(&stages, store::Stage::Publish),
        test: stage_summary(&stages, store::Stage::Test),
        stages,
        ..Facts::default()
    };
    for repo in &config.repos {
        facts
            .branches
            .insert(repo.name.clone(), repo.branches.clone());
        facts
            .replies
            .insert(repo.name.clone(), repo.replies.clone());
    }
    facts.incomplete_deadline = config.intake.incomplete_deadline_hours * 3600;
    let mut keys: Vec<String> = Vec::new();
    if let Some(apply) = &facts.apply {
        keys.extend(apply.series.iter().map(|s| s.key.clone()));
    }
    if let Some(collect) = &facts.collect {
        for line in &collect.series {
            let reply = if line.is(store::SeriesState::Incomplete) {
                format!("held:{}", line.key)
            } else if line.is(store::SeriesState::Superseded) {
                format!("superseded:{}", line.key)
            } else {
                continue;
            };
            // Composed by an earlier run (this run's own come back the
            // same from the outbox, so they do not count).
            if store.report_key_used(&reply)? && store.stored_report(run, &reply)?.is_none() {
                facts.replied.insert(reply);
            }
            keys.push(line.key.clone());
        }
    }
    for key in keys {
        if facts.threads.contains_key(&key) {
            continue;
        }
        if let Some(t) = thread(store, &key)? {
            facts.threads.insert(key.clone(), t);
        }
        if let Some(v) = store.version_facts(&key)? {
            facts.versions.insert(key, v);
        }
    }
    if let Some(build) = &facts.build {
        for b in build.builds.iter().filter(|b| b.state != BuildState::Ok) {
            let Some(log) = &b.log else { continue };
            // Only the end of a log that may be megabytes long: at most
            // 256 bytes a line.
            let max = 256 * config.report.log_tail_lines.max(1) as u64;
            let (text, _) = crate::checks::tail(std::path::Path::new(log), max);
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let skip = lines.len().saturating_sub(config.report.log_tail_lines);
            let link = publish_log(config, run, &b.repo, &b.branch, &b.target, log)
                .unwrap_or_else(|| log.clone());
            facts.build_logs.insert(
                format!("{}/{}/{}", b.repo, b.branch, b.target),
                LogTail {
                    lines: lines[skip..].to_vec(),
                    link,
                },
            );
        }
    }
    Ok(facts)
}

/// Copies a failed build's log next to the published repositories
/// (`<publish dir>/logs/run-N/`), so the report can link to it; its URL.
fn publish_log(
    config: &Config,
    run: i64,
    repo: &str,
    branch: &str,
    target: &str,
    log: &str,
) -> Option<String> {
    let name = format!("{repo}-{}-{target}-build.log", branch.replace('/', "_"));
    let dir = config.publish_dir().join("logs").join(format!("run-{run}"));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::copy(log, dir.join(&name)).ok()?;
    Some(format!(
        "{}/logs/run-{run}/{name}",
        config.publish_base_url()
    ))
}

/// The thread of series `key`: its cover letter (or first patch), author
/// and patches.
fn thread(store: &Store, key: &str) -> Result<Option<Thread>, store::Error> {
    let mails = store.series_thread(key)?;
    let Some(first) = mails.first() else {
        return Ok(None);
    };
    // Only an address lettre accepts: a malformed sender in a mail must not
    // keep the report from the list.
    let author = first
        .from_email
        .as_deref()
        .and_then(|email| email.parse::<lettre::Address>().ok())
        .map(|address| {
            let name = first.from_name.clone().filter(|n| !n.trim().is_empty());
            lettre::message::Mailbox::new(name, address).to_string()
        })
        .unwrap_or_default();
    let mut t = Thread {
        root: first.message_id.clone(),
        references: first.references.clone(),
        author: (!author.is_empty()).then_some(author),
        subject: first.subject.clone(),
        patches: Default::default(),
    };
    for mail in mails.into_iter().filter(|m| m.idx != 0) {
        let title = mail
            .fields
            .as_ref()
            .and_then(|v| v.get("title").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or(mail.subject);
        t.patches.insert(
            mail.idx,
            PatchLine {
                title,
                message_id: mail.message_id,
                archive_path: mail.archive_path,
            },
        );
    }
    Ok(Some(t))
}

/// Runs the `report` stage of `run`.
pub fn report_stage(store: &mut Store, config: &Config, run: i64) -> Result<ReportSummary, Error> {
    let facts = gather(store, config, run)?;
    let reports = compose::compose(&facts, &config.report);
    let dir = crate::stage::build::work_dir(config, run);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let write = |path: &std::path::Path, bytes: &[u8]| -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| Error::Write {
                path: path.to_owned(),
                source,
            })
    };
    let mut summary = ReportSummary {
        run,
        ..ReportSummary::default()
    };
    let mut text = String::new();
    for (i, report) in reports.iter().enumerate() {
        text.push_str(&format!(
            "To: {}\n{}Subject: {}\n\n{}\n",
            report.to.join(", "),
            if report.cc.is_empty() {
                String::new()
            } else {
                format!("Cc: {}\n", report.cc.join(", "))
            },
            report.subject,
            report.text
        ));
        let stored = store_report(store, config, run, report)?;
        let file = dir.join(format!("report-{}.eml", i + 1));
        write(&file, &stored.raw)?;
        summary.reports.push(ReportLine {
            key: report.key.clone(),
            subject: report.subject.clone(),
            to: report.to.clone(),
            cc: report.cc.clone(),
            message_id: Some(stored.message_id),
            state: if config.report.transport == ReportTransport::None {
                OutboxState::Written
            } else {
                OutboxState::Queued
            },
            attempts: 0,
            error: None,
            file: file.display().to_string(),
        });
    }
    if reports.is_empty() {
        text.push_str("Nothing to report: no mail arrived and nothing failed.\n");
    }
    let file = dir.join("report.txt");
    write(&file, text.as_bytes())?;
    summary.file = Some(file.display().to_string());
    if config.report.transport == ReportTransport::None {
        return Ok(summary);
    }
    let transport = crate::notify::send::Transport::from_config(config)?;
    let outcome = outbox::flush_outbox(store, &transport, &config.report)?;
    summary.sent_from_earlier_runs =
        outcome.iter().filter(|o| o.run != run && o.sent).count() as u64;
    for line in &mut summary.reports {
        if let Some(o) = outcome.iter().find(|o| o.run == run && o.key == line.key) {
            line.state = if o.sent {
                OutboxState::Sent
            } else {
                OutboxState::Queued
            };
            line.attempts = o.attempts;
            line.error = o.error.clone();
        } else if let Some((state, attempts)) = store.outbox_state(run, &line.key)? {
            // Sent by an earlier attempt of this stage.
            line.state = state;
            line.attempts = attempts;
        }
    }
    summary.sent = summary
        .reports
        .iter()
        .filter(|l| l.state == OutboxState::Sent)
        .count() as u64;
    let queued: Vec<&ReportLine> = summary
        .reports
        .iter()
        .filter(|l| l.state == OutboxState::Queued)
        .collect();
    if let Some(first) = queued.first() {
        return Err(Error::Notify(crate::notify::Error::NotSent {
            queued: queued.len(),
            message: first.error.clone().unwrap_or_else(|| "not sent".into()),
            source: None,
        }));
    }
    Ok(summary)
}

/// The report as an RFC 5322 message, stored in the outbox the first time
/// (later calls return what was stored: the same Message-ID, the same
/// bytes).
fn store_report(
    store: &mut Store,
    config: &Config,
    run: i64,
    report: &Report,
) -> Result<StoredReport, Error> {
    if let Some(stored) = store.stored_report(run, &report.key)? {
        return Ok(stored);
    }
    let message = crate::notify::send::build_message(config, run, report)?;
    let raw = message.message.formatted();
    store.add_to_outbox(&NewReport {
        run,
        key: &report.key,
        message_id: &message.message_id,
        subject: &report.subject,
        sender: &message.sender,
        recipients: &message.recipients,
        raw: &raw,
        queued: config.report.transport != ReportTransport::None,
    })?;
    Ok(StoredReport {
        message_id: message.message_id,
        raw,
    })
}
