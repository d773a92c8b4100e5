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
use crate::mail::parse::{MailLimits, ParsedMail, parse_mail_hashed};
use crate::mail::routing::{RouteRule, route};
use crate::mail::series::{AssembledSeries, AssemblyConfig, PatchMail, SeriesState, assemble};
use crate::mail::source::imap::{ImapSettings, ImapSource};
use crate::mail::source::maildir::MaildirSource;
use crate::mail::source::mbox::MboxSource;
use crate::mail::source::{self, Flow, MailSource, RawMail, Resume};
use crate::mail::subject::{SubjectFields, SubjectGrammar};
use crate::store::{self, Store, now};
use rusqlite::{OptionalExtension, Transaction, params};
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

/// Progress callbacks (a terminal progress bar, or nothing).
pub trait Progress {
    fn mail(&self, _stored: u64, _origin: &str) {}
    fn done(&self) {}
}

/// Builds the configured mail source.
pub fn source_from_config(config: &Config) -> Result<Box<dyn MailSource>, crate::config::Error> {
    let intake = &config.intake;
    let path = || {
        intake
            .path
            .clone()
            .ok_or_else(|| config.invalid("intake.path", "required for an mbox or maildir source"))
    };
    Ok(match intake.source {
        SourceKind::Mbox => Box::new(MboxSource::new(
            path()?,
            intake.mbox_format,
            intake.max_mail_size,
        )),
        SourceKind::Maildir => Box::new(MaildirSource::new(path()?, intake.max_mail_size)),
        SourceKind::Imap => Box::new(ImapSource::new(imap_settings(config)?)),
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
    parsed: Result<ParsedMail, String>,
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
    };
    let key = source.key();
    let cursor = store.source_cursor(&key)?;
    let archive = Archive::new(config.intake.archive_dir.clone());
    // `seen` reads through its own connection while the committer thread
    // writes through the main one (WAL allows both).
    let reader = Store::open_reader(store.path())?;
    let batch_size = config.intake.batch.max(1);
    let stats = std::thread::scope(|scope| -> Result<source::FetchStats, Error> {
        // Batch N is made durable and committed while batch N+1 is read,
        // archived and parsed; capacity 1 bounds memory to two batches.
        let (to_committer, batches) = std::sync::mpsc::sync_channel::<Vec<Received>>(1);
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
        let pending: RefCell<(Vec<RawMail>, usize)> = RefCell::new((Vec::new(), 0));
        let stored = std::cell::Cell::new(0u64);
        let hand_over = |pending: &mut (Vec<RawMail>, usize)| -> Result<(), Error> {
            let raws = std::mem::take(&mut pending.0);
            pending.1 = 0;
            if raws.is_empty() {
                return Ok(());
            }
            let received = receive_batch(&archive, raws, &limits, &grammar)?;
            // A closed channel means the committer failed: its error is
            // the one reported, after the join below.
            to_committer
                .send(received)
                .map_err(|_| Error::CommitterStopped)
        };
        let fetched = {
            let seen = |item: &str| {
                // A read error here means the database is gone; the commit
                // that follows reports it, so treating the item as new is
                // safe (the unique Message-ID still prevents a double).
                reader.item_seen(&key, item).unwrap_or(false)
            };
            let resume = Resume {
                cursor: cursor.as_deref(),
                seen: &seen,
            };
            let mut sink =
                |raw: RawMail| -> Result<Flow, Box<dyn std::error::Error + Send + Sync>> {
                    stored.set(stored.get() + 1);
                    progress.mail(stored.get(), &raw.origin);
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
        drop(to_committer);
        match committer.join() {
            Ok(committed) => committed?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        last?;
        progress.done();
        Ok(fetched?)
    })?;
    if let Some(cursor) = &stats.cursor {
        store.set_source_cursor(&key, cursor)?;
    }
    assemble_series(store, config, &archive, &rules, run)?;
    let mut summary = summarize(store, run, &key)?;
    summary.warnings = stats.warnings;
    Ok(summary)
}

/// Raw bytes held in memory per batch at most (plus one mail): the batch
/// is cut early when its mails are large.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Archives, parses and classifies a batch, spread over the cores. Each
/// mail is written to the archive before it is parsed.
fn receive_batch(
    archive: &Archive,
    raws: Vec<RawMail>,
    limits: &MailLimits,
    grammar: &SubjectGrammar,
) -> Result<Vec<Received>, archive::Error> {
    let received_at = now();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(raws.len().max(1));
    if workers <= 1 {
        return raws
            .into_iter()
            .map(|raw| receive(archive, raw, received_at, limits, grammar))
            .collect();
    }
    let chunk = raws.len().div_ceil(workers);
    let mut chunks: Vec<Vec<RawMail>> = Vec::with_capacity(workers);
    let mut iter = raws.into_iter();
    loop {
        let part: Vec<RawMail> = iter.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    part.into_iter()
                        .map(|raw| receive(archive, raw, received_at, limits, grammar))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

fn receive(
    archive: &Archive,
    raw: RawMail,
    received_at: i64,
    limits: &MailLimits,
    grammar: &SubjectGrammar,
) -> Result<Received, archive::Error> {
    let content_hash = hex::encode(Sha256::digest(&raw.bytes));
    let raw_path = archive.store_raw(received_at, &content_hash, &raw.bytes)?;
    let parsed = parse_mail_hashed(&raw.bytes, &content_hash, limits).map_err(|e| e.to_string());
    let (is_patch, is_cover, fields, reason) = match &parsed {
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

fn commit_batch(
    store: &mut Store,
    archive: &Archive,
    source_key: &str,
    run: i64,
    pending: &[Received],
) -> Result<(), Error> {
    if pending.is_empty() {
        return Ok(());
    }
    archive.flush()?;
    let tx = store.transaction()?;
    let result = (|| -> rusqlite::Result<()> {
        for mail in pending {
            insert_mail(&tx, source_key, run, mail)?;
        }
        if let Some(last) = pending.last() {
            tx.prepare_cached(
                "INSERT INTO sources (key, cursor, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            )?
            .execute(params![source_key, last.raw.cursor, now()])?;
        }
        Ok(())
    })();
    result
        .and_then(|()| tx.commit())
        .map_err(|e| store.err(e))?;
    Ok(())
}

fn insert_mail(
    tx: &Transaction<'_>,
    source_key: &str,
    run: i64,
    mail: &Received,
) -> rusqlite::Result<()> {
    let message_id = match &mail.parsed {
        Ok(p) => p.message_id.clone(),
        Err(_) => crate::mail::parse::synthetic_message_id(&mail.content_hash),
    };
    let existing: Option<(i64, String)> = tx
        .prepare_cached("SELECT id, content_hash FROM mails WHERE message_id = ?1")?
        .query_row([&message_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (mail_id, kind) = match existing {
        Some((id, hash)) if hash == mail.content_hash => (id, "duplicate"),
        Some((id, _)) => (id, "conflict"),
        None => {
            let (
                subject,
                from_name,
                from_email,
                date,
                irt,
                refs,
                list_id,
                patch_hash,
                warnings,
                error,
            ) = match &mail.parsed {
                Ok(p) => (
                    p.subject.clone(),
                    p.from.as_ref().and_then(|a| a.name.clone()),
                    p.from.as_ref().map(|a| a.email.clone()),
                    p.date,
                    p.in_reply_to.clone(),
                    serde_json::to_string(&p.references).unwrap_or_else(|_| "[]".into()),
                    p.list_id.clone(),
                    p.patch_hash.clone(),
                    serde_json::to_string(&merged_warnings(&p.warnings, &mail.raw.warnings))
                        .unwrap_or_else(|_| "[]".into()),
                    None,
                ),
                Err(e) => (
                    String::new(),
                    None,
                    None,
                    None,
                    None,
                    "[]".to_owned(),
                    None,
                    None,
                    serde_json::to_string(&mail.raw.warnings).unwrap_or_else(|_| "[]".into()),
                    Some(e.clone()),
                ),
            };
            tx.prepare_cached(
                "INSERT INTO mails (message_id, content_hash, source_key, item, origin, run_id, received_at, raw_path,
                    subject, from_name, from_email, date, in_reply_to, refs, list_id, is_patch, is_cover, fields, reason,
                    patch_hash, warnings, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )?
            .execute(params![
                    message_id,
                    mail.content_hash,
                    source_key,
                    mail.raw.item,
                    mail.raw.origin,
                    run,
                    mail.received_at,
                    mail.raw_path,
                    subject,
                    from_name,
                    from_email,
                    date,
                    irt,
                    refs,
                    list_id,
                    mail.is_patch,
                    mail.is_cover,
                    mail.fields.as_ref().and_then(|f| serde_json::to_string(f).ok()),
                    mail.reason,
                    patch_hash,
                    warnings,
                    error,
                ],
            )?;
            (tx.last_insert_rowid(), "new")
        }
    };
    // OR IGNORE: the same item delivered twice (a source re-read after a
    // crash before its cursor was committed cannot happen inside one
    // transaction, but a Maildir listing may name a file twice).
    tx.prepare_cached(
        "INSERT OR IGNORE INTO source_items (source_key, item, mail_id, run_id, kind, raw_path, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
            source_key,
            mail.raw.item,
            mail_id,
            run,
            kind,
            mail.raw_path,
            mail.received_at
        ],
    )?;
    Ok(())
}

fn merged_warnings(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().chain(b).cloned().collect()
}

/// Series states that no later collect may change (set by `apply`).
const TERMINAL: [&str; 3] = ["applied", "failed", "applying"];

/// `TERMINAL` as an SQL list: `('applied', 'failed', 'applying')`.
fn terminal_sql() -> String {
    let quoted: Vec<String> = TERMINAL.iter().map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(", "))
}

struct PatchRow {
    mail: PatchMail,
    raw_path: String,
    list_id: Option<String>,
}

fn load_open_patch_mails(store: &Store) -> Result<Vec<PatchRow>, store::Error> {
    let terminal = terminal_sql();
    let sql = format!(
        "SELECT m.id, m.message_id, m.in_reply_to, m.refs, m.from_email, m.date, m.received_at, m.fields,
                m.patch_hash, m.is_cover, m.raw_path, m.list_id
         FROM mails m
         WHERE m.is_patch = 1 AND m.error IS NULL
           AND NOT EXISTS (SELECT 1 FROM patches p JOIN series s ON s.id = p.series_id
                           WHERE p.mail_id = m.id AND s.state IN {terminal})
         ORDER BY m.received_at, m.id"
    );
    let conn = store.conn();
    let mut stmt = conn.prepare(&sql).map_err(|e| store.err(e))?;
    let rows = stmt
        .query_map([], |r| {
            let refs: String = r.get(3)?;
            let fields: Option<String> = r.get(7)?;
            let received: i64 = r.get(6)?;
            Ok(PatchRow {
                mail: PatchMail {
                    mail_id: r.get(0)?,
                    message_id: r.get(1)?,
                    in_reply_to: r.get(2)?,
                    references: serde_json::from_str(&refs).unwrap_or_default(),
                    author: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    date: r.get::<_, Option<i64>>(5)?.unwrap_or(received),
                    received,
                    fields: fields
                        .and_then(|f| serde_json::from_str(&f).ok())
                        .unwrap_or_default(),
                    patch_hash: r.get(8)?,
                    is_cover: r.get(9)?,
                },
                raw_path: r.get(10)?,
                list_id: r.get(11)?,
            })
        })
        .map_err(|e| store.err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| store.err(e))?;
    Ok(rows)
}

fn state_parts(state: &SeriesState) -> (&'static str, Vec<u32>, Option<String>) {
    match state {
        SeriesState::Complete => ("complete", Vec::new(), None),
        SeriesState::Incomplete { missing } => ("incomplete", missing.clone(), None),
        SeriesState::Expired { missing } => ("expired", missing.clone(), None),
        SeriesState::Superseded { by } => ("superseded", Vec::new(), Some(by.clone())),
    }
}

/// Where a series goes: the subject's repo/branch, else the first routing
/// rule that matches, else the only configured repository.
fn resolve_route(
    config: &Config,
    rules: &[RouteRule],
    series: &AssembledSeries,
    list_id: Option<&str>,
    tags: &[String],
) -> (Option<String>, Option<String>) {
    let default_branch = |repo: &str| {
        config.repos.iter().find(|r| r.name == repo).and_then(|r| {
            r.default_branch
                .clone()
                .or_else(|| r.branches.first().cloned())
        })
    };
    if let Some(repo) = &series.repo {
        let branch = series.branch.clone().or_else(|| default_branch(repo));
        return (Some(repo.clone()), branch);
    }
    if let Some(r) = route(rules, list_id, tags) {
        let branch = series
            .branch
            .clone()
            .or(r.branch)
            .or_else(|| default_branch(&r.repo));
        return (Some(r.repo), branch);
    }
    if let [only] = config.repos.as_slice() {
        let branch = series.branch.clone().or_else(|| default_branch(&only.name));
        return (Some(only.name.clone()), branch);
    }
    (None, series.branch.clone())
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
    let rows = load_open_patch_mails(store)?;
    let by_id: HashMap<i64, &PatchRow> = rows.iter().map(|r| (r.mail.mail_id, r)).collect();
    let mails: Vec<PatchMail> = rows.iter().map(|r| r.mail.clone()).collect();
    let cfg = AssemblyConfig {
        thread_window: config.intake.thread_window_secs,
        incomplete_deadline: config.intake.incomplete_deadline_hours * 3600,
    };
    let assembly = assemble(&mails, now(), &cfg);

    struct Existing {
        id: i64,
        archive_dir: String,
        patches: BTreeMap<u32, (i64, String)>,
    }
    let mut existing: HashMap<String, Existing> = HashMap::new();
    let mut terminal_keys: HashMap<String, i64> = HashMap::new();
    let mut used_dirs: HashSet<String> = HashSet::new();
    {
        let conn = store.conn();
        let mut stmt = conn
            .prepare("SELECT id, key, archive_dir, state FROM series")
            .map_err(|e| store.err(e))?;
        let series_rows: Vec<(i64, String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| store.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| store.err(e))?;
        let mut pstmt = conn
            .prepare("SELECT idx, mail_id, archive_path FROM patches WHERE series_id = ?1")
            .map_err(|e| store.err(e))?;
        for (id, key, dir, state) in series_rows {
            used_dirs.insert(dir.clone());
            if TERMINAL.contains(&state.as_str()) {
                terminal_keys.insert(key, id);
                continue;
            }
            let patches = pstmt
                .query_map([id], |r| Ok((r.get::<_, u32>(0)?, (r.get(1)?, r.get(2)?))))
                .map_err(|e| store.err(e))?
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map_err(|e| store.err(e))?;
            existing.insert(
                key,
                Existing {
                    id,
                    archive_dir: dir,
                    patches,
                },
            );
        }
    }

    // Plan every change first (archive writes included), then commit.
    struct Plan {
        key: String,
        series: AssembledSeries,
        existing_id: Option<i64>,
        archive_dir: String,
        patches: Vec<(u32, i64, String)>,
        repo: Option<String>,
        branch: Option<String>,
    }
    let mut plans = Vec::new();
    let mut unfiled: Vec<String> = Vec::new();
    let mut kept_keys = HashSet::new();
    let mut next_suffix: HashMap<String, u32> = HashMap::new();
    for series in &assembly.series {
        let mut key = series.key.clone();
        if let Some(id) = terminal_keys.get(&key) {
            // A late mail in the thread of a finished series: a new series.
            key = format!("{key}#after-{id}");
        }
        kept_keys.insert(key.clone());
        let prior = existing.get(&key);
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
        let (repo, branch) = resolve_route(
            config,
            rules,
            series,
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
                .filter(|(m, _)| *m == mail_id)
                .map(|(_, path)| path.clone());
            let path = match reuse {
                Some(p) => p,
                None => {
                    archive.file_patch(&archive_dir, idx, &row.mail.fields.title, &row.raw_path)?
                }
            };
            patches.push((idx, mail_id, path));
        }
        if let Some(e) = prior {
            for (idx, (mail_id, path)) in &e.patches {
                if !patches.iter().any(|(i, m, _)| i == idx && m == mail_id) {
                    unfiled.push(path.clone());
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
        .map(|(_, e)| (e.id, e.patches.values().map(|(_, p)| p.clone()).collect()))
        .collect();
    archive.flush()?;

    let tx = store.transaction()?;
    let result = (|| -> rusqlite::Result<()> {
        for (id, _) in &vanished {
            tx.execute("DELETE FROM patches WHERE series_id = ?1", [id])?;
            tx.execute("DELETE FROM series WHERE id = ?1", [id])?;
        }
        for plan in &plans {
            let s = &plan.series;
            let (state, missing, superseded_by) = state_parts(&s.state);
            let missing = serde_json::to_string(&missing).unwrap_or_else(|_| "[]".into());
            // One upsert: the archive directory is chosen once, at insert;
            // `updated_run` moves only when the state really changed.
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO series (key, version, total, title, author, branch, repo, cover_mail_id, state,
                        missing, superseded_by, archive_dir, first_received, created_run, updated_run)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
                     ON CONFLICT (key) DO UPDATE SET version = excluded.version, total = excluded.total,
                        title = excluded.title, author = excluded.author, branch = excluded.branch,
                        repo = excluded.repo, cover_mail_id = excluded.cover_mail_id, state = excluded.state,
                        missing = excluded.missing, superseded_by = excluded.superseded_by,
                        first_received = excluded.first_received,
                        updated_run = CASE WHEN series.state IS excluded.state AND series.missing IS excluded.missing
                                           THEN series.updated_run ELSE excluded.updated_run END
                     RETURNING id",
                )?
                .query_row(
                    params![
                        plan.key,
                        s.version,
                        s.total,
                        s.title,
                        s.author,
                        plan.branch,
                        plan.repo,
                        s.cover,
                        state,
                        missing,
                        superseded_by,
                        plan.archive_dir,
                        s.first_received,
                        run
                    ],
                    |r| r.get(0),
                )?;
            if plan.existing_id.is_some() {
                tx.prepare_cached("DELETE FROM patches WHERE series_id = ?1")?
                    .execute([id])?;
            }
            for (idx, mail_id, path) in &plan.patches {
                tx.prepare_cached(
                    "INSERT INTO patches (series_id, idx, mail_id, archive_path) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, idx, mail_id, path])?;
            }
        }
        let open_ids: Vec<i64> = by_id.keys().copied().collect();
        for id in &open_ids {
            tx.prepare_cached("DELETE FROM duplicates WHERE mail_id = ?1")?
                .execute([id])?;
        }
        for (dup, kept) in &assembly.duplicates {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO duplicates (mail_id, kept_id) VALUES (?1, ?2)",
            )?
            .execute(params![dup, kept])?;
        }
        Ok(())
    })();
    result
        .and_then(|()| tx.commit())
        .map_err(|e| store.err(e))?;
    // Only after the commit: stale filings of mails that moved to another
    // series (the raw mails stay).
    for path in unfiled
        .iter()
        .chain(vanished.iter().flat_map(|(_, paths)| paths.iter()))
    {
        let still_used = plans
            .iter()
            .any(|p| p.patches.iter().any(|(_, _, q)| q == path));
        if !still_used {
            archive.unfile_patch(path)?;
        }
    }
    archive.flush()?;
    Ok(())
}

/// Counts of one run's collect, read back from the state.
pub fn summarize(
    store: &Store,
    run: i64,
    source_key: &str,
) -> Result<CollectSummary, store::Error> {
    let conn = store.conn();
    let count = |sql: &str| -> Result<u64, store::Error> {
        conn.query_row(sql, [run], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| store.err(e))
    };
    let mails = count("SELECT COUNT(*) FROM source_items WHERE run_id = ?1")?;
    let patches =
        count("SELECT COUNT(*) FROM mails WHERE run_id = ?1 AND is_patch = 1 AND is_cover = 0")?;
    let ignored =
        count("SELECT COUNT(*) FROM mails WHERE run_id = ?1 AND is_patch = 0 AND error IS NULL")?;
    let duplicates = count(
        "SELECT (SELECT COUNT(*) FROM source_items WHERE run_id = ?1 AND kind = 'duplicate')
              + (SELECT COUNT(*) FROM duplicates d JOIN mails m ON m.id = d.mail_id WHERE m.run_id = ?1)",
    )?;
    let mut errors = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT message_id, subject, error, from_name, from_email FROM mails WHERE run_id = ?1 AND error IS NOT NULL ORDER BY id",
            )
            .map_err(|e| store.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                Ok(MailError {
                    message_id: r.get(0)?,
                    subject: r.get(1)?,
                    from: sender(r.get(3)?, r.get(4)?),
                    error: r.get(2)?,
                })
            })
            .map_err(|e| store.err(e))?;
        for row in rows {
            errors.push(row.map_err(|e| store.err(e))?);
        }
        let mut stmt = conn
            .prepare(
                "SELECT m.message_id, m.subject, i.raw_path, m.raw_path, m.from_name, m.from_email FROM source_items i JOIN mails m ON m.id = i.mail_id
                 WHERE i.run_id = ?1 AND i.kind = 'conflict' ORDER BY i.received_at, i.item",
            )
            .map_err(|e| store.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                let message_id: String = r.get(0)?;
                let copy: String = r.get(2)?;
                let first: String = r.get(3)?;
                Ok(MailError {
                    message_id: message_id.clone(),
                    subject: r.get(1)?,
                    from: sender(r.get(4)?, r.get(5)?),
                    error: format!(
                        "Message-ID <{message_id}> was already received with different content (kept {first}); this copy is archived as {copy} and not used"
                    ),
                })
            })
            .map_err(|e| store.err(e))?;
        for row in rows {
            errors.push(row.map_err(|e| store.err(e))?);
        }
    }
    let mut series = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT key, title, version, total, state, missing, repo, branch, archive_dir,
                        (SELECT COUNT(*) FROM patches p WHERE p.series_id = series.id AND p.idx > 0) FROM series
                 WHERE state IN ('complete', 'incomplete') OR updated_run = ?1 ORDER BY first_received, id",
            )
            .map_err(|e| store.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                let missing: String = r.get(5)?;
                Ok(SeriesLine {
                    key: r.get(0)?,
                    title: r.get(1)?,
                    version: r.get(2)?,
                    total: r.get(3)?,
                    state: r.get(4)?,
                    missing: serde_json::from_str(&missing).unwrap_or_default(),
                    repo: r.get(6)?,
                    branch: r.get(7)?,
                    archive_dir: r.get(8)?,
                    received: r.get(9)?,
                })
            })
            .map_err(|e| store.err(e))?;
        for row in rows {
            series.push(row.map_err(|e| store.err(e))?);
        }
    }
    let series_complete = series.iter().filter(|s| s.state == "complete").count() as u64;
    let series_incomplete = series.iter().filter(|s| s.state == "incomplete").count() as u64;
    Ok(CollectSummary {
        run,
        source: source_key.to_owned(),
        mails,
        patches,
        series_complete,
        series_incomplete,
        ignored,
        duplicates,
        errors,
        warnings: Vec::new(),
        series,
    })
}
