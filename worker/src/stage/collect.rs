//! The `collect` stage: source -> archive -> parse/classify -> state, then
//! series assembly.
//!
//! Order matters for "nothing lost, nothing doubled": each mail is written to
//! the archive first; every `batch` mails the archive is fsynced and only
//! then are the mails, their source items and the source cursor committed in
//! one transaction. A crash before that commit makes the next run read the
//! same mails again (the archive write is idempotent and the Message-ID is
//! unique), a crash after it never re-reads them.

use crate::config::{Config, SourceKind};
use crate::mail::archive::{self, Archive};
use crate::mail::classify::classify;
use crate::mail::parse::{self, MailLimits, ParsedMail, parse_head, parse_mail_hashed};
use crate::mail::routing::RouteRule;
use crate::mail::series::{
    AssembledSeries, AssemblyConfig, History, PatchMail, SeriesState as AssemblyState,
    assemble_after, change_id,
};
use crate::mail::source::imap::{ImapSettings, ImapSource};
use crate::mail::source::maildir::MaildirSource;
use crate::mail::source::mbox::MboxSource;
use crate::mail::source::{self, Flow, MailSource, RawMail, Resume, head_of};
use crate::mail::subject::{SubjectFields, SubjectGrammar};
use crate::stage::progress::Unit;
use crate::store::{
    self, FiledPatch, NewMail, OpenPatchMail, SeriesRecord, SeriesState, Store, now,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Archive(#[from] archive::Error),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Only seen when the committer thread failed without an error, which
    /// cannot happen; kept rather than a panic.
    #[error("the thread committing mails to the state database stopped")]
    CommitterStopped,
}

impl Error {
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Error::Source(e) if e.is_infrastructure())
    }
}

/// A mail that could not be used, as the report names it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MailError {
    pub message_id: String,
    pub subject: String,
    /// `Name <address>` of the sender, when the mail named one.
    #[serde(default)]
    pub from: Option<String>,
    pub error: String,
}

fn sender(name: Option<String>, email: Option<String>) -> Option<String> {
    match (name.filter(|n| !n.is_empty()), email) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (None, Some(e)) => Some(e),
        (Some(n), None) => Some(n),
        (None, None) => None,
    }
}

/// One pending series as the summary shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SeriesLine {
    pub key: String,
    pub title: String,
    pub version: u32,
    pub total: u32,
    /// Patches present (cover letter not counted).
    pub received: u32,
    pub state: String,
    pub missing: Vec<u32>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub archive_dir: String,
}

impl SeriesLine {
    /// Whether the series is in `state` (the JSON keeps the column's
    /// string, so the field stays a `String`).
    pub fn is(&self, state: SeriesState) -> bool {
        self.state == state.as_str()
    }
}

/// The `collect --json` object. Counts are of this run, so re-running the
/// stage of a run after a crash reports the same numbers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct CollectSummary {
    pub run: i64,
    pub source: String,
    pub mails: u64,
    pub patches: u64,
    pub series_complete: u64,
    pub series_incomplete: u64,
    pub ignored: u64,
    pub duplicates: u64,
    pub errors: Vec<MailError>,
    pub warnings: Vec<String>,
    pub series: Vec<SeriesLine>,
}

/// The callbacks a collect tells its mails to (re-exported: the worker's
/// log progress names it here).
pub use crate::stage::progress::Progress;

/// How far through `source` a mail `raw` ends, in the unit of
/// [`step_of`]: bytes for an mbox (its item is the mail's offset), none
/// for the others (their step counts mails).
fn position(kind: SourceKind, raw: &RawMail) -> Option<u64> {
    match kind {
        SourceKind::Mbox => raw
            .item
            .parse::<u64>()
            .ok()
            .map(|at| at + raw.bytes.len() as u64),
        _ => None,
    }
}

/// The step a collect of the configured source is: an mbox's bytes (its
/// size known up front), else mails of a total not known before the fetch.
fn step_of(config: &Config) -> (Unit, Option<u64>) {
    match (&config.intake.source, &config.intake.path) {
        (SourceKind::Mbox, Some(path)) => {
            (Unit::Bytes, std::fs::metadata(path).ok().map(|m| m.len()))
        }
        _ => (Unit::Mails, None),
    }
}

/// Builds the configured mail source.
pub fn source_from_config(config: &Config) -> Result<Box<dyn MailSource>, crate::config::Error> {
    let intake = &config.intake;
    let path = || {
        intake.path.clone().ok_or_else(|| {
            config.invalid(
                "intake.path",
                "required for an mbox, maildir or public-inbox source",
            )
        })
    };
    Ok(match intake.source {
        SourceKind::Mbox => Box::new(MboxSource::new(
            path()?,
            intake.mbox_format,
            intake.max_mail_size,
        )),
        SourceKind::Maildir => Box::new(MaildirSource::new(path()?, intake.max_mail_size)),
        SourceKind::Imap => Box::new(ImapSource::new(imap_settings(config)?)),
        SourceKind::PublicInbox => Box::new(
            crate::mail::source::public_inbox::PublicInboxSource::new(
                path()?,
                intake.max_mail_size,
            )
            .with_url(intake.url.clone()),
        ),
    })
}

pub fn imap_settings(config: &Config) -> Result<ImapSettings, crate::config::Error> {
    let imap = config
        .intake
        .imap
        .as_ref()
        .ok_or_else(|| config.invalid("intake.imap", "section [intake.imap] is missing"))?;
    let password = imap.password.clone().ok_or_else(|| {
        config.invalid("intake.imap", "no password (password_env or password_file)")
    })?;
    use crate::mail::source::imap::ImapSecurity;
    Ok(ImapSettings {
        host: imap.host.clone(),
        port: imap.port.unwrap_or(match imap.security {
            ImapSecurity::Tls => 993,
            _ => 143,
        }),
        security: imap.security,
        user: imap.user.clone(),
        password,
        auth: imap.auth,
        mailbox: imap.mailbox.clone(),
        ca_file: imap.ca_file.clone(),
        timeout: std::time::Duration::from_secs(imap.timeout_secs),
        max_mail_size: config.intake.max_mail_size,
        batch: imap.batch,
    })
}

/// One mail read and archived, waiting for its batch to be committed.
struct Received {
    raw: RawMail,
    raw_path: String,
    content_hash: String,
    received_at: i64,
    parsed: Result<ParsedMail, parse::Error>,
    is_patch: bool,
    is_cover: bool,
    fields: Option<SubjectFields>,
    reason: Option<String>,
}

/// Runs the collect stage of `run` against `source`.
pub fn collect(
    store: &mut Store,
    config: &Config,
    source: &mut dyn MailSource,
    run: i64,
    progress: &dyn Progress,
) -> Result<CollectSummary, Error> {
    let grammar = config.subject_grammar()?;
    let rules = config.route_rules()?;
    let limits = MailLimits {
        max_size: usize::try_from(config.intake.max_mail_size).unwrap_or(usize::MAX),
        max_parts: config.intake.max_parts,
        ..MailLimits::default()
    };
    let key = source.key();
    let cursor = store.source_cursor(&key)?;
    let archive = Archive::new(config.intake.archive_dir.clone());
    // A collect killed mid-write left temporary files; this stage owns them
    // (looked for only when the last intake did not end).
    let removed = archive.begin_intake()?;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary archive files a killed collect left"
        );
    }
    reparse_oversized(store, &archive, &limits, &grammar, run)?;
    // `seen` reads through its own connection while the committer thread
    // writes through the main one (WAL allows both).
    let reader = Store::open_reader(store.path())?;
    // A source that had no item when the run began has seen only what
    // this run delivers, and a source delivers an item once per fetch:
    // no need to ask the database for every mail of a first intake.
    let fresh_source = !reader.source_has_items(&key)?;
    let batch_size = config.intake.batch.max(1);
    // Fewer WAL checkpoints while a large intake commits batch after
    // batch; the default comes back when the intake is done.
    let checkpoints = store.defer_checkpoints()?;
    let stats = std::thread::scope(|scope| -> Result<source::FetchStats, Error> {
        // A pipeline of three: batch N is made durable and committed while
        // the batches after it are archived and parsed (on all cores) and
        // read. The raw channel is a rendezvous, which bounds the raw bytes
        // held to two batches; parsed batches (without their bodies, a few
        // hundred bytes a mail) may queue up to `PARSED_BATCHES_QUEUED`,
        // so a slow `syncfs` does not stop the reading and parsing.
        let (to_committer, batches) =
            std::sync::mpsc::sync_channel::<Vec<Received>>(PARSED_BATCHES_QUEUED);
        let (to_receiver, raw_batches) = std::sync::mpsc::sync_channel::<Vec<RawMail>>(0);
        let committer_store = &mut *store;
        let committer_archive = &archive;
        let committer_key = key.as_str();
        let committer = scope.spawn(move || -> Result<(), Error> {
            for batch in batches {
                commit_batch(
                    committer_store,
                    committer_archive,
                    committer_key,
                    run,
                    &batch,
                )?;
            }
            Ok(())
        });
        let (archive, limits, grammar) = (&archive, &limits, &grammar);
        let receiver = scope
            .spawn(move || receive_batches(archive, limits, grammar, raw_batches, to_committer));
        let pending: RefCell<(Vec<RawMail>, usize)> = RefCell::new((Vec::new(), 0));
        let stored = std::cell::Cell::new(0u64);
        let (unit, total) = step_of(config);
        progress.step(unit, total);
        let kind = config.intake.source;
        let hand_over = |pending: &mut (Vec<RawMail>, usize)| -> Result<(), Error> {
            let raws = std::mem::take(&mut pending.0);
            pending.1 = 0;
            if raws.is_empty() {
                return Ok(());
            }
            // A closed channel means the receiver (or the committer behind
            // it) failed: that error is the one reported.
            to_receiver.send(raws).map_err(|_| Error::CommitterStopped)
        };
        let fetched = {
            let seen = |item: &str| {
                // A read error here means the database is gone; the commit
                // that follows reports it, so treating the item as new is
                // safe (the unique Message-ID still prevents a double).
                !fresh_source && reader.item_seen(&key, item).unwrap_or(false)
            };
            let resume = Resume {
                cursor: cursor.as_deref(),
                seen: &seen,
            };
            let mut sink =
                |raw: RawMail| -> Result<Flow, Box<dyn std::error::Error + Send + Sync>> {
                    stored.set(stored.get() + 1);
                    progress.mail(stored.get(), &raw.origin);
                    if let Some(at) = position(kind, &raw) {
                        progress.advance(at, "");
                    }
                    let mut pending = pending.borrow_mut();
                    pending.1 += raw.bytes.len();
                    pending.0.push(raw);
                    if pending.0.len() >= batch_size || pending.1 >= MAX_BATCH_BYTES {
                        hand_over(&mut pending)?;
                    }
                    Ok(Flow::Continue)
                };
            source.fetch(&resume, &mut sink)
        };
        // Whatever the source said, the mails it delivered were accepted:
        // store and commit them before reporting a source failure.
        let last = hand_over(&mut pending.borrow_mut());
        drop(to_receiver);
        let received = match receiver.join() {
            Ok(received) => received,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match committer.join() {
            Ok(committed) => committed?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        received?;
        last?;
        progress.done();
        Ok(fetched?)
    });
    store.restore_checkpoints(checkpoints)?;
    let stats = stats?;
    if let Some(cursor) = &stats.cursor {
        store.set_source_cursor(&key, cursor)?;
    }
    // The intake's WAL (its checkpoints were deferred) is copied into the
    // database file while the series are assembled, not after.
    let db_path = store.path().to_owned();
    std::thread::scope(|scope| {
        let checkpoint = scope.spawn(|| Store::checkpoint_wal(&db_path));
        let assembled = assemble_series(store, config, &archive, &rules, run);
        match checkpoint.join() {
            // Only the timing of a copy SQLite makes anyway depends on it.
            Ok(Err(e)) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
            Ok(Ok(())) => {}
            Err(panic) => std::panic::resume_unwind(panic),
        }
        assembled
    })?;
    let mut summary = summarize(store, run, &key)?;
    summary.warnings = stats.warnings;
    archive.end_intake()?;
    Ok(summary)
}

/// Raw bytes held in memory per batch at most (plus one mail): the batch
/// is cut early when its mails are large.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Parsed batches waiting for the committer at most. A flush makes every
/// file written before it durable, so the committer's `syncfs` for batch
/// N also covers the queued batches' files and theirs return quickly.
const PARSED_BATCHES_QUEUED: usize = 8;

/// Archives, parses and classifies each batch, spread over the cores, and
/// hands it on to the committer. Each mail is written to the archive
/// before it is parsed.
///
/// The workers live as long as the intake (not a batch): each keeps its
/// allocator's pages, where threads made per batch would start from fresh
/// memory (page faults, zeroing) every time.
fn receive_batches(
    archive: &Archive,
    limits: &MailLimits,
    grammar: &SubjectGrammar,
    raw_batches: std::sync::mpsc::Receiver<Vec<RawMail>>,
    to_committer: std::sync::mpsc::SyncSender<Vec<Received>>,
) -> Result<(), Error> {
    use std::sync::mpsc::sync_channel;
    type Part = (Vec<RawMail>, i64);
    type Done = Result<Vec<Received>, archive::Error>;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..workers)
            .map(|_| {
                let (to_worker, parts) = sync_channel::<Part>(1);
                let (to_lane, done) = sync_channel::<Done>(1);
                scope.spawn(move || {
                    for (part, received_at) in parts {
                        let received = part
                            .into_iter()
                            .map(|raw| receive(archive, raw, received_at, limits, grammar))
                            .collect();
                        if to_lane.send(received).is_err() {
                            break;
                        }
                    }
                });
                (to_worker, done)
            })
            .collect();
        for raws in raw_batches {
            let received_at = now();
            let chunk = raws.len().div_ceil(workers).max(1);
            let mut raws = raws.into_iter();
            let mut busy = 0;
            for (to_worker, _) in &lanes {
                let part: Vec<RawMail> = raws.by_ref().take(chunk).collect();
                if part.is_empty() {
                    break;
                }
                // A worker only stops by panicking, which the scope
                // reports when it ends.
                to_worker
                    .send((part, received_at))
                    .map_err(|_| Error::CommitterStopped)?;
                busy += 1;
            }
            // In order of the parts: the batch keeps the source's order,
            // and its first failing mail is the error.
            let mut batch = Vec::new();
            for (_, done) in lanes.iter().take(busy) {
                batch.extend(done.recv().map_err(|_| Error::CommitterStopped)??);
            }
            // A closed channel means the committer failed: its error is
            // the one reported, after the join in `collect`.
            to_committer
                .send(batch)
                .map_err(|_| Error::CommitterStopped)?;
        }
        // Dropping `lanes` ends the workers.
        Ok(())
    })
}

fn receive(
    archive: &Archive,
    raw: RawMail,
    received_at: i64,
    limits: &MailLimits,
    grammar: &SubjectGrammar,
) -> Result<Received, archive::Error> {
    let (raw_path, content_hash, parsed) = match &raw.oversize {
        // Over the limit: streamed from the source into the archive,
        // named by its head, recorded as an error until the limit allows
        // it (`reparse_oversized`).
        Some(big) => {
            let (raw_path, content_hash) =
                archive.store_raw_streamed(received_at, &mut |out: &mut dyn std::io::Write| {
                    big.copy_to(&raw.bytes, out)
                        .map(|_| ())
                        .map_err(std::io::Error::other)
                })?;
            let oversize = parse::Oversize {
                size: big.size,
                limit: limits.max_size as u64,
            };
            let parsed = parse_head(head_of(&raw.bytes), &content_hash, oversize);
            (raw_path, content_hash, parsed)
        }
        None => {
            let content_hash = hex::encode(Sha256::digest(&raw.bytes));
            let raw_path = archive.store_raw(received_at, &content_hash, &raw.bytes)?;
            let parsed = parse_mail_hashed(&raw.bytes, &content_hash, limits);
            (raw_path, content_hash, parsed)
        }
    };
    let (is_patch, is_cover, fields, reason) = match &parsed {
        Ok(mail) if mail.oversize.is_some() => (false, false, None, None),
        Ok(mail) => {
            let v = classify(mail, grammar);
            (v.is_patch, v.is_cover, v.fields, v.reason)
        }
        Err(_) => (false, false, None, None),
    };
    // The body is not needed any more: drop it so a batch holds little.
    let parsed = parsed.map(|mut m| {
        m.body = String::new();
        m
    });
    Ok(Received {
        raw: RawMail {
            bytes: Vec::new(),
            ..raw
        },
        raw_path,
        content_hash,
        received_at,
        parsed,
        is_patch,
        is_cover,
        fields,
        reason,
    })
}

/// Parses, from the archive, the mails stored as over the size limit that
/// fit under it now (the limit was raised): they become mails of `run`.
fn reparse_oversized(
    store: &mut Store,
    archive: &Archive,
    limits: &MailLimits,
    grammar: &SubjectGrammar,
    run: i64,
) -> Result<(), Error> {
    for big in store.oversized_mails(limits.max_size as u64)? {
        let bytes = archive.read_raw(&big.raw_path)?;
        let parsed = parse_mail_hashed(&bytes, &big.content_hash, limits);
        let verdict = parsed.as_ref().ok().map(|mail| classify(mail, grammar));
        let unparsed = parsed.as_ref().err().map(ToString::to_string);
        tracing::info!(message_id = %big.message_id, size = big.size, "over-limit mail parsed from the archive");
        store.store_reparsed(
            big.mail_id,
            run,
            &NewMail {
                item: "",
                origin: "",
                content_hash: &big.content_hash,
                raw_path: &big.raw_path,
                received_at: 0,
                parsed: parsed
                    .as_ref()
                    .map_err(|_| unparsed.as_deref().unwrap_or_default()),
                source_warnings: &[],
                is_patch: verdict.as_ref().is_some_and(|v| v.is_patch),
                is_cover: verdict.as_ref().is_some_and(|v| v.is_cover),
                fields: verdict.as_ref().and_then(|v| v.fields.as_ref()),
                reason: verdict.as_ref().and_then(|v| v.reason.as_deref()),
            },
        )?;
    }
    Ok(())
}

fn commit_batch(
    store: &mut Store,
    archive: &Archive,
    source_key: &str,
    run: i64,
    pending: &[Received],
) -> Result<(), Error> {
    let Some(last) = pending.last() else {
        return Ok(());
    };
    archive.flush()?;
    let batch = store.mail_batch(source_key, run)?;
    for mail in pending {
        // The state keeps why a mail did not parse as text.
        let unparsed = mail.parsed.as_ref().err().map(ToString::to_string);
        batch.insert_mail(&NewMail {
            item: &mail.raw.item,
            origin: &mail.raw.origin,
            content_hash: &mail.content_hash,
            raw_path: &mail.raw_path,
            received_at: mail.received_at,
            parsed: mail
                .parsed
                .as_ref()
                .map_err(|_| unparsed.as_deref().unwrap_or_default()),
            source_warnings: &mail.raw.warnings,
            is_patch: mail.is_patch,
            is_cover: mail.is_cover,
            fields: mail.fields.as_ref(),
            reason: mail.reason.as_deref(),
        })?;
    }
    batch.set_source_cursor(&last.raw.cursor)?;
    batch.commit()?;
    Ok(())
}

/// The b4 change-ids of the open cover letters and single patches (the
/// mails b4 writes them in), read from their raw archive files. A file
/// that cannot be read has none: the series is still linked by thread,
/// author and subjects.
fn change_ids(config: &Config, rows: &[OpenPatchMail]) -> BTreeMap<String, String> {
    rows.iter()
        .filter(|r| r.mail.is_cover || r.mail.fields.total.is_none())
        .filter_map(|r| {
            let relative = archive::check_relative(&r.raw_path).ok()?;
            let raw = std::fs::read(config.intake.archive_dir.join(relative)).ok()?;
            Some((r.mail.message_id.clone(), change_id(&raw)?))
        })
        .collect()
}

/// Re-assembles every open series from all patch mails not in a finished
/// series, and stores the result (and the archive filings) in one
/// transaction.
fn assemble_series(
    store: &mut Store,
    config: &Config,
    archive: &Archive,
    rules: &[RouteRule],
    run: i64,
) -> Result<(), Error> {
    let finished = store.finished_series()?;
    let rows = store.open_patch_mails()?;
    let by_id: HashMap<i64, &OpenPatchMail> = rows.iter().map(|r| (r.mail.mail_id, r)).collect();
    let mails: Vec<PatchMail> = rows.iter().map(|r| r.mail.clone()).collect();
    let cfg = AssemblyConfig {
        thread_window: config.intake.thread_window_secs,
        incomplete_deadline: config.intake.incomplete_deadline_hours * 3600,
    };
    let change_ids = change_ids(config, &rows);
    let history = History {
        finished: &finished,
        change_ids: Some(&change_ids),
    };
    let assembly = assemble_after(&mails, &history, now(), &cfg);

    struct Existing {
        id: i64,
        archive_dir: String,
        patches: BTreeMap<u32, FiledPatch>,
        state: SeriesState,
        superseded_by: Option<String>,
    }
    let mut existing: HashMap<String, Existing> = HashMap::new();
    let mut settled_keys: HashMap<String, i64> = HashMap::new();
    let mut used_dirs: HashSet<String> = HashSet::new();
    for known in store.known_series()? {
        used_dirs.insert(known.archive_dir.clone());
        if known.state.is_settled() {
            settled_keys.insert(known.key, known.id);
            continue;
        }
        let patches = store.filed_patches(known.id)?;
        existing.insert(
            known.key,
            Existing {
                id: known.id,
                archive_dir: known.archive_dir,
                patches,
                state: known.state,
                superseded_by: known.superseded_by,
            },
        );
    }

    // Plan every change first (archive writes included), then commit.
    struct Plan {
        key: String,
        series: AssembledSeries,
        existing_id: Option<i64>,
        archive_dir: String,
        patches: Vec<FiledPatch>,
        repo: Option<String>,
        branch: Option<String>,
    }
    let mut plans = Vec::new();
    let mut filings: Vec<Filing<'_>> = Vec::new();
    let mut unfiled: Vec<String> = Vec::new();
    let mut kept_keys = HashSet::new();
    let mut next_suffix: HashMap<String, u32> = HashMap::new();
    for series in &assembly.series {
        let mut key = series.key.clone();
        // A late mail in the thread of a finished series: a series of its
        // own (the assembler said whether it is superseded by it), never
        // a change to the finished one, which may itself have had late
        // mails before.
        while let Some(id) = settled_keys.get(&key) {
            key = format!("{key}#after-{id}");
        }
        kept_keys.insert(key.clone());
        let prior = existing.get(&key);
        // Superseded and expired are final too: late mails join such a
        // series (its gaps shrink) but never bring it back. Without this,
        // a superseded v1 whose v2 was applied (v2's mails leave the
        // input) would be complete again, and applied on top of v2.
        let mut series = series.clone();
        match prior.map(|e| (e.state, &e.superseded_by)) {
            Some((SeriesState::Superseded, by))
                if !matches!(series.state, AssemblyState::Superseded { .. }) =>
            {
                series.state = AssemblyState::Superseded {
                    by: by.clone().unwrap_or_default(),
                };
            }
            Some((SeriesState::Expired, _)) => {
                series.state = AssemblyState::Expired {
                    missing: series.missing.clone(),
                };
            }
            _ => {}
        }
        let series = &series;
        let archive_dir = match prior {
            Some(e) => e.archive_dir.clone(),
            None => {
                let base = if series.version > 1 {
                    format!("v{}-{}", series.version, archive::slug(&series.title, 52))
                } else {
                    archive::slug(&series.title, 52)
                };
                let plain = format!("{}/{base}", archive::day(series.first_received));
                // Many series can share a title: remember the next free
                // suffix per name instead of probing from 2 every time.
                let next = next_suffix.entry(plain.clone()).or_insert(2u32);
                let mut dir = plain.clone();
                while used_dirs.contains(&dir) {
                    dir = format!("{plain}-{next}");
                    *next += 1;
                }
                used_dirs.insert(dir.clone());
                dir
            }
        };
        let lead = series
            .cover
            .or_else(|| series.patches.first().map(|p| p.1))
            .and_then(|id| by_id.get(&id));
        let (repo, branch) = config.resolve_route(
            rules,
            series.repo.as_deref(),
            series.branch.as_deref(),
            lead.and_then(|r| r.list_id.as_deref()),
            lead.map(|r| r.mail.fields.tags.as_slice()).unwrap_or(&[]),
        );
        let mut members: Vec<(u32, i64)> = series.patches.clone();
        if let Some(cover) = series.cover {
            members.insert(0, (0, cover));
        }
        let mut patches = Vec::new();
        for (idx, mail_id) in members {
            let Some(row) = by_id.get(&mail_id) else {
                continue;
            };
            let reuse = prior
                .and_then(|e| e.patches.get(&idx))
                .filter(|p| p.mail_id == mail_id)
                .map(|p| p.archive_path.clone());
            let archive_path = match reuse {
                Some(p) => p,
                None => {
                    // Filed below, on all cores, while the rows are
                    // written (the name is known before).
                    filings.push(Filing {
                        series_dir: archive_dir.clone(),
                        index: idx,
                        title: &row.mail.fields.title,
                        raw_path: &row.raw_path,
                    });
                    archive::patch_path(&archive_dir, idx, &row.mail.fields.title)
                }
            };
            patches.push(FiledPatch {
                idx,
                mail_id,
                archive_path,
            });
        }
        if let Some(e) = prior {
            for old in e.patches.values() {
                if !patches
                    .iter()
                    .any(|p| p.idx == old.idx && p.mail_id == old.mail_id)
                {
                    unfiled.push(old.archive_path.clone());
                }
            }
        }
        plans.push(Plan {
            key,
            series: series.clone(),
            existing_id: prior.map(|e| e.id),
            archive_dir,
            patches,
            repo,
            branch,
        });
    }
    let vanished: Vec<(i64, Vec<String>)> = existing
        .iter()
        .filter(|(k, _)| !kept_keys.contains(*k))
        .map(|(_, e)| {
            let paths = e.patches.values().map(|p| p.archive_path.clone());
            (e.id, paths.collect())
        })
        .collect();
    let update = store.series_update()?;
    let write_rows = || -> Result<(), store::Error> {
        for (id, _) in &vanished {
            update.delete_series(*id)?;
        }
        for plan in &plans {
            let id = update.upsert_series(&SeriesRecord {
                key: &plan.key,
                series: &plan.series,
                repo: plan.repo.as_deref(),
                branch: plan.branch.as_deref(),
                archive_dir: &plan.archive_dir,
                run,
            })?;
            if plan.existing_id.is_some() {
                update.clear_patches(id)?;
            }
            for patch in &plan.patches {
                update.file_patch(id, patch)?;
            }
        }
        // Every open mail is assembled anew: its old duplicate verdict goes.
        for id in by_id.keys() {
            update.forget_duplicate(*id)?;
        }
        for (dup, kept) in &assembly.duplicates {
            update.record_duplicate(*dup, *kept)?;
        }
        Ok(())
    };
    // The filings are made (and flushed) while the rows are written; the
    // rows are committed only after both, so the state never names a
    // file that is not on disk.
    let (written, filed) = std::thread::scope(|scope| {
        let filer = scope.spawn(|| file_patches(archive, &filings));
        let written = write_rows();
        match filer.join() {
            Ok(filed) => (written, filed),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    filed?;
    written?;
    archive.flush()?;
    update.commit()?;
    // Only after the commit: stale filings of mails that moved to another
    // series (the raw mails stay).
    for path in unfiled
        .iter()
        .chain(vanished.iter().flat_map(|(_, paths)| paths.iter()))
    {
        let still_used = plans
            .iter()
            .any(|p| p.patches.iter().any(|q| &q.archive_path == path));
        if !still_used {
            archive.unfile_patch(path)?;
        }
    }
    archive.flush()?;
    Ok(())
}

/// A patch mail to file into its series directory.
struct Filing<'a> {
    series_dir: String,
    index: u32,
    title: &'a str,
    raw_path: &'a str,
}

/// Files the patch mails (two hard links each), spread over the cores:
/// the links go to different series directories, which the kernel locks
/// one by one. The first failure in the order of `filings` is the error.
fn file_patches(archive: &Archive, filings: &[Filing<'_>]) -> Result<(), archive::Error> {
    let file = |f: &Filing<'_>| {
        archive
            .file_patch(&f.series_dir, f.index, f.title, f.raw_path)
            .map(drop)
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    // Below a few hundred links a thread costs more than it saves.
    if workers <= 1 || filings.len() < 256 {
        return filings.iter().try_for_each(file);
    }
    let chunk = filings.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = filings
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(file)))
            .collect();
        let mut first = Ok(());
        for handle in handles {
            match handle.join() {
                Ok(part) => first = first.and(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first
    })
}

/// Counts of one run's collect, read back from the state.
pub fn summarize(
    store: &Store,
    run: i64,
    source_key: &str,
) -> Result<CollectSummary, store::Error> {
    let counts = store.intake_counts(run)?;
    let mut errors: Vec<MailError> = store
        .unparsable_mails(run)?
        .into_iter()
        .map(|m| MailError {
            message_id: m.message_id,
            subject: m.subject,
            from: sender(m.from_name, m.from_email),
            error: m.error,
        })
        .collect();
    errors.extend(store.conflicting_copies(run)?.into_iter().map(|c| {
        let error = format!(
            "Message-ID <{}> was already received with different content (kept {}); this copy is archived as {} and not used",
            c.message_id, c.kept_path, c.copy_path
        );
        MailError {
            message_id: c.message_id,
            subject: c.subject,
            from: sender(c.from_name, c.from_email),
            error,
        }
    }));
    let overview = store.open_or_updated_series(run)?;
    let in_state = |state: SeriesState| overview.iter().filter(|s| s.state == state).count() as u64;
    let series_complete = in_state(SeriesState::Complete);
    let series_incomplete = in_state(SeriesState::Incomplete);
    let series = overview
        .into_iter()
        .map(|s| SeriesLine {
            key: s.key,
            title: s.title,
            version: s.version,
            total: s.total,
            received: s.received,
            state: s.state.as_str().to_owned(),
            missing: s.missing,
            repo: s.repo,
            branch: s.branch,
            archive_dir: s.archive_dir,
        })
        .collect();
    Ok(CollectSummary {
        run,
        source: source_key.to_owned(),
        mails: counts.mails,
        patches: counts.patches,
        series_complete,
        series_incomplete,
        ignored: counts.ignored,
        duplicates: counts.duplicates,
        errors,
        warnings: Vec::new(),
        series,
    })
}
