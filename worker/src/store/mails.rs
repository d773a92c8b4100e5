//! Mails: source cursors, every item a source delivered, the stored mails
//! and their duplicates.
//!
//! The SQL of the tables `sources`, `mails`, `source_items` and
//! `duplicates` stays here. A batch of mails is stored with its source
//! items and the source cursor in one transaction ([`MailBatch`]): a kill
//! before its commit makes the source deliver the batch again, a kill
//! after it never does.

use super::series::{SeriesState, SeriesUpdate};
use super::{Error, Store, now};
use crate::mail::parse::{ParsedMail, synthetic_message_id};
use crate::mail::series::PatchMail;
use crate::mail::subject::SubjectFields;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::borrow::Cow;
use std::path::Path;

/// WAL pages between checkpoints during an intake (64 MiB of 4 KiB pages;
/// SQLite's default is 1000).
const DEFERRED_CHECKPOINT_PAGES: i64 = 16384;

/// A mail as collect stores it, parsed or not: every delivered item is
/// kept, so the report can name what could not be used.
#[derive(Debug, Clone, Copy)]
pub struct NewMail<'a> {
    /// Unique within the source (see `RawMail::item`).
    pub item: &'a str,
    pub origin: &'a str,
    /// sha256 hex of the raw bytes.
    pub content_hash: &'a str,
    /// The raw mail, relative to the archive directory.
    pub raw_path: &'a str,
    pub received_at: i64,
    /// The parsed mail (its body is not stored), or why it did not parse.
    pub parsed: Result<&'a ParsedMail, &'a str>,
    /// What the source noticed while reading it, stored after the parser's
    /// warnings.
    pub source_warnings: &'a [String],
    pub is_patch: bool,
    pub is_cover: bool,
    pub fields: Option<&'a SubjectFields>,
    /// Why it is not a patch.
    pub reason: Option<&'a str>,
}

impl NewMail<'_> {
    /// The Message-ID it is stored under: synthesised from the content for
    /// a mail that did not parse, as the column is unique and required.
    pub fn message_id(&self) -> Cow<'_, str> {
        match self.parsed {
            Ok(p) => Cow::Borrowed(p.message_id.as_str()),
            Err(_) => Cow::Owned(synthetic_message_id(self.content_hash)),
        }
    }
}

/// What a delivered item was, as `source_items.kind` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A Message-ID not seen before: stored as a new mail.
    New,
    /// The same Message-ID with the same bytes or the same content
    /// fingerprint: the first one is used.
    Duplicate,
    /// The same Message-ID with other content: archived, not used.
    Conflict,
}

impl ItemKind {
    fn as_str(self) -> &'static str {
        match self {
            ItemKind::New => "new",
            ItemKind::Duplicate => "duplicate",
            ItemKind::Conflict => "conflict",
        }
    }
}

/// The transaction storing one batch of a source's mails. Dropped without
/// [`commit`](Self::commit), nothing of it is stored.
pub struct MailBatch<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
    source_key: &'a str,
    run: i64,
}

/// A patch mail that is not in a settled series, as the assembler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPatchMail {
    pub mail: PatchMail,
    /// The raw mail, relative to the archive directory.
    pub raw_path: String,
    pub list_id: Option<String>,
}

/// What one run's collect took in, counted from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntakeCounts {
    /// Items the source delivered.
    pub mails: u64,
    /// Patch mails stored (cover letters not counted).
    pub patches: u64,
    /// Mails that parsed but are not patches.
    pub ignored: u64,
    /// Items with the bytes of a stored mail, and patches the assembler
    /// found sent twice.
    pub duplicates: u64,
}

/// A stored mail that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnparsableMail {
    pub message_id: String,
    pub subject: String,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub error: String,
}

/// A delivered item whose Message-ID was already stored with other bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictingCopy {
    pub message_id: String,
    /// Subject and sender of the mail kept.
    pub subject: String,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    /// The mail kept, relative to the archive directory.
    pub kept_path: String,
    /// This copy, relative to the archive directory.
    pub copy_path: String,
}

impl Store {
    pub fn source_cursor(&self, key: &str) -> Result<Option<String>, Error> {
        self.conn
            .query_row("SELECT cursor FROM sources WHERE key = ?1", [key], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    pub fn set_source_cursor(&mut self, key: &str, cursor: &str) -> Result<(), Error> {
        upsert_cursor(&self.conn, key, cursor).map_err(|e| self.err(e))
    }

    /// Forgets a source's position (after its mailbox was replaced). Items
    /// already stored stay de-duplicated by Message-ID.
    pub fn reset_source(&mut self, key: &str) -> Result<bool, Error> {
        let n = self
            .conn
            .execute("DELETE FROM sources WHERE key = ?1", [key])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Whether any item of `source_key` was ever stored.
    pub fn source_has_items(&self, source_key: &str) -> Result<bool, Error> {
        self.conn
            .query_row(
                "SELECT 1 FROM source_items WHERE source_key = ?1 LIMIT 1",
                [source_key],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// Raises the WAL auto-checkpoint threshold for a large intake (each
    /// checkpoint writes the hot index pages into the database again, and
    /// syncs it); returns the threshold to give back to
    /// [`restore_checkpoints`](Self::restore_checkpoints). Commits stay as
    /// durable: the WAL is synced the same way.
    pub fn defer_checkpoints(&mut self) -> Result<i64, Error> {
        let before: i64 = self
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", DEFERRED_CHECKPOINT_PAGES)
            .map_err(|e| self.err(e))?;
        Ok(before)
    }

    pub fn restore_checkpoints(&mut self, pages: i64) -> Result<(), Error> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(|e| self.err(e))
    }

    /// Copies what the WAL holds into the database file through a
    /// connection of its own (`PRAGMA wal_checkpoint(PASSIVE)`: it waits
    /// for no reader or writer), so another thread can do it while this
    /// store goes on. The copy is what SQLite would do at the next
    /// auto-checkpoint or at close anyway; commits are as durable without
    /// it.
    pub fn checkpoint_wal(path: &Path) -> Result<(), Error> {
        let wrap = |source| Error::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(wrap)
    }

    pub fn item_seen(&self, source_key: &str, item: &str) -> Result<bool, Error> {
        self.conn
            .query_row(
                "SELECT 1 FROM source_items WHERE source_key = ?1 AND item = ?2",
                [source_key, item],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// Opens the transaction that stores a batch of `source_key`'s mails
    /// for `run`.
    pub fn mail_batch<'a>(
        &'a mut self,
        source_key: &'a str,
        run: i64,
    ) -> Result<MailBatch<'a>, Error> {
        let tx = self.conn.transaction().map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })?;
        Ok(MailBatch {
            tx,
            path: &self.path,
            source_key,
            run,
        })
    }

    /// Every patch mail (cover letters included) that parsed and is not in
    /// a settled series, in order of arrival: the input of re-assembly.
    pub fn open_patch_mails(&self) -> Result<Vec<OpenPatchMail>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.id, m.message_id, m.in_reply_to, m.refs, m.from_email, m.date, m.received_at, m.fields,
                        m.patch_hash, m.is_cover, m.raw_path, m.list_id
                 FROM mails m
                 WHERE m.is_patch = 1 AND m.error IS NULL
                   AND NOT EXISTS (SELECT 1 FROM patches p JOIN series s ON s.id = p.series_id
                                   WHERE p.mail_id = m.id AND s.state IN (?1, ?2, ?3))
                 ORDER BY m.received_at, m.id",
            )
            .map_err(|e| self.err(e))?;
        let [a, b, c] = SeriesState::SETTLED;
        stmt.query_map(params![a, b, c], |r| {
            let refs: String = r.get(3)?;
            let fields: Option<String> = r.get(7)?;
            let received: i64 = r.get(6)?;
            Ok(OpenPatchMail {
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
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The counts of `run`'s collect. Read back from the state rather than
    /// counted while collecting, so a stage re-run after a crash reports
    /// the same numbers.
    pub fn intake_counts(&self, run: i64) -> Result<IntakeCounts, Error> {
        let count = |sql: &str| -> Result<u64, Error> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut stmt| stmt.query_row([run], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(|e| self.err(e))
        };
        Ok(IntakeCounts {
            mails: count("SELECT COUNT(*) FROM source_items WHERE run_id = ?1")?,
            patches: count(
                "SELECT COUNT(*) FROM mails WHERE run_id = ?1 AND is_patch = 1 AND is_cover = 0",
            )?,
            ignored: count(
                "SELECT COUNT(*) FROM mails WHERE run_id = ?1 AND is_patch = 0 AND error IS NULL",
            )?,
            duplicates: count(
                "SELECT (SELECT COUNT(*) FROM source_items WHERE run_id = ?1 AND kind = 'duplicate')
                      + (SELECT COUNT(*) FROM duplicates d JOIN mails m ON m.id = d.mail_id WHERE m.run_id = ?1)",
            )?,
        })
    }

    /// The mails of `run` that did not parse, in order of storing.
    pub fn unparsable_mails(&self, run: i64) -> Result<Vec<UnparsableMail>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT message_id, subject, error, from_name, from_email FROM mails
                 WHERE run_id = ?1 AND error IS NOT NULL ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([run], |r| {
            Ok(UnparsableMail {
                message_id: r.get(0)?,
                subject: r.get(1)?,
                error: r.get(2)?,
                from_name: r.get(3)?,
                from_email: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The items of `run` that reused a stored Message-ID with other bytes,
    /// in order of arrival.
    pub fn conflicting_copies(&self, run: i64) -> Result<Vec<ConflictingCopy>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.message_id, m.subject, i.raw_path, m.raw_path, m.from_name, m.from_email
                 FROM source_items i JOIN mails m ON m.id = i.mail_id
                 WHERE i.run_id = ?1 AND i.kind = 'conflict' ORDER BY i.received_at, i.item",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([run], |r| {
            Ok(ConflictingCopy {
                message_id: r.get(0)?,
                subject: r.get(1)?,
                copy_path: r.get(2)?,
                kept_path: r.get(3)?,
                from_name: r.get(4)?,
                from_email: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }
}

/// A stored mail that was over the size limit when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedMail {
    pub mail_id: i64,
    pub message_id: String,
    pub content_hash: String,
    /// Relative to the archive directory.
    pub raw_path: String,
    pub size: u64,
}

impl Store {
    /// The mails stored unparsed for being over the size limit that fit
    /// under `limit` now.
    pub fn oversized_mails(&self, limit: u64) -> Result<Vec<OversizedMail>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, message_id, content_hash, raw_path, oversize FROM mails
                 WHERE oversize IS NOT NULL AND oversize <= ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(OversizedMail {
                mail_id: r.get(0)?,
                message_id: r.get(1)?,
                content_hash: r.get(2)?,
                raw_path: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Replaces what was stored of an over-limit mail by its parse from
    /// the archive (its Message-ID stays, so its items stay linked), as a
    /// mail of `run`.
    pub fn store_reparsed(
        &mut self,
        mail_id: i64,
        run: i64,
        mail: &NewMail<'_>,
    ) -> Result<(), Error> {
        let json_list =
            |items: &[String]| serde_json::to_string(items).unwrap_or_else(|_| "[]".into());
        let (p, error) = match mail.parsed {
            Ok(p) => (Some(p), p.oversize.map(|o| o.error())),
            Err(e) => (None, Some(e.to_owned())),
        };
        self.conn
            .prepare_cached(
                "UPDATE mails SET run_id = ?2, subject = ?3, from_name = ?4, from_email = ?5, date = ?6,
                    in_reply_to = ?7, refs = ?8, list_id = ?9, is_patch = ?10, is_cover = ?11, fields = ?12,
                    reason = ?13, patch_hash = ?14, warnings = ?15, error = ?16, fingerprint = ?17,
                    oversize = ?18
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    mail_id,
                    run,
                    p.map_or("", |p| p.subject.as_str()),
                    p.and_then(|p| p.from.as_ref()).and_then(|a| a.name.as_deref()),
                    p.and_then(|p| p.from.as_ref()).map(|a| a.email.as_str()),
                    p.and_then(|p| p.date),
                    p.and_then(|p| p.in_reply_to.as_deref()),
                    json_list(p.map_or(&[][..], |p| &p.references)),
                    p.and_then(|p| p.list_id.as_deref()),
                    mail.is_patch,
                    mail.is_cover,
                    mail.fields.and_then(|f| serde_json::to_string(f).ok()),
                    mail.reason,
                    p.and_then(|p| p.patch_hash.as_deref()),
                    json_list(p.map_or(&[][..], |p| &p.warnings)),
                    error,
                    p.map(|p| p.fingerprint.as_str()),
                    p.and_then(|p| p.oversize).map(|o| o.size as i64),
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

fn upsert_cursor(conn: &Connection, key: &str, cursor: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO sources (key, cursor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
    )?
    .execute(params![key, cursor, now()])?;
    Ok(())
}

impl MailBatch<'_> {
    /// Stores the mail (unless its Message-ID is stored already) and the
    /// source item that delivered it; says which of the two it was.
    pub fn insert_mail(&self, mail: &NewMail<'_>) -> Result<ItemKind, Error> {
        let message_id = mail.message_id();
        self.try_insert_mail(mail, &message_id)
            .map_err(|source| Error::Mail {
                path: self.path.to_owned(),
                message_id: message_id.into_owned(),
                source,
            })
    }

    fn try_insert_mail(&self, mail: &NewMail<'_>, message_id: &str) -> rusqlite::Result<ItemKind> {
        let tx = &self.tx;
        let existing: Option<(i64, String, Option<String>)> = tx
            .prepare_cached(
                "SELECT id, content_hash, fingerprint FROM mails WHERE message_id = ?1",
            )?
            .query_row([message_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        // The same bytes, or the same content delivered another way (other
        // Received/List-* headers, recipients, a list footer): a duplicate.
        let fingerprint = mail.parsed.ok().map(|p| p.fingerprint.as_str());
        let (mail_id, kind) = match existing {
            Some((id, hash, _)) if hash == mail.content_hash => (id, ItemKind::Duplicate),
            Some((id, _, Some(stored))) if Some(stored.as_str()) == fingerprint => {
                (id, ItemKind::Duplicate)
            }
            Some((id, _, _)) => (id, ItemKind::Conflict),
            None => (self.try_store_mail(mail, message_id)?, ItemKind::New),
        };
        // OR IGNORE: the same item delivered twice (a source re-read after a
        // crash before its cursor was committed cannot happen inside one
        // transaction, but a Maildir listing may name a file twice).
        tx.prepare_cached(
            "INSERT OR IGNORE INTO source_items (source_key, item, mail_id, run_id, kind, raw_path, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            self.source_key,
            mail.item,
            mail_id,
            self.run,
            kind.as_str(),
            mail.raw_path,
            mail.received_at
        ])?;
        Ok(kind)
    }

    fn try_store_mail(&self, mail: &NewMail<'_>, message_id: &str) -> rusqlite::Result<i64> {
        // JSON columns: a list that cannot be encoded (it cannot happen with
        // strings) is stored empty rather than losing the mail.
        let json_list =
            |items: &[String]| serde_json::to_string(items).unwrap_or_else(|_| "[]".into());
        // A mail over the size limit: named by its head, stored as an error.
        let oversize = mail.parsed.ok().and_then(|p| p.oversize);
        let oversize_error = oversize.map(|o| o.error());
        let (subject, from, date, in_reply_to, references, list_id, patch_hash, warnings, error) =
            match mail.parsed {
                Ok(p) => {
                    let warnings: Vec<String> = p
                        .warnings
                        .iter()
                        .chain(mail.source_warnings)
                        .cloned()
                        .collect();
                    (
                        p.subject.as_str(),
                        p.from.as_ref(),
                        p.date,
                        p.in_reply_to.as_deref(),
                        json_list(&p.references),
                        p.list_id.as_deref(),
                        p.patch_hash.as_deref(),
                        json_list(&warnings),
                        oversize_error.as_deref(),
                    )
                }
                Err(e) => (
                    "",
                    None,
                    None,
                    None,
                    "[]".to_owned(),
                    None,
                    None,
                    json_list(mail.source_warnings),
                    Some(e),
                ),
            };
        self.tx
            .prepare_cached(
                "INSERT INTO mails (message_id, content_hash, source_key, item, origin, run_id, received_at, raw_path,
                    subject, from_name, from_email, date, in_reply_to, refs, list_id, is_patch, is_cover, fields, reason,
                    patch_hash, warnings, error, fingerprint, oversize)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
            )?
            .execute(params![
                message_id,
                mail.content_hash,
                self.source_key,
                mail.item,
                mail.origin,
                self.run,
                mail.received_at,
                mail.raw_path,
                subject,
                from.and_then(|a| a.name.as_deref()),
                from.map(|a| a.email.as_str()),
                date,
                in_reply_to,
                references,
                list_id,
                mail.is_patch,
                mail.is_cover,
                mail.fields.and_then(|f| serde_json::to_string(f).ok()),
                mail.reason,
                patch_hash,
                warnings,
                error,
                mail.parsed.ok().map(|p| p.fingerprint.as_str()),
                oversize.map(|o| o.size as i64),
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Moves the source's cursor past this batch (with it, in the same
    /// commit).
    pub fn set_source_cursor(&self, cursor: &str) -> Result<(), Error> {
        upsert_cursor(&self.tx, self.source_key, cursor).map_err(|source| Error::Sqlite {
            path: self.path.to_owned(),
            source,
        })
    }

    pub fn commit(self) -> Result<(), Error> {
        let path = self.path;
        self.tx.commit().map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })
    }
}

impl SeriesUpdate<'_> {
    /// Forgets that mail `mail_id` duplicates another (it is assembled
    /// anew).
    pub fn forget_duplicate(&self, mail_id: i64) -> Result<(), Error> {
        self.tx
            .prepare_cached("DELETE FROM duplicates WHERE mail_id = ?1")
            .and_then(|mut stmt| stmt.execute([mail_id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records that mail `mail_id` is the same patch as `kept_id`, which
    /// the series uses.
    pub fn record_duplicate(&self, mail_id: i64, kept_id: i64) -> Result<(), Error> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO duplicates (mail_id, kept_id) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![mail_id, kept_id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::{MailLimits, parse_mail};
    use crate::store::{NewRun, Trigger};

    fn parsed(message_id: &str, body: &str) -> ParsedMail {
        let raw = format!(
            "Message-ID: <{message_id}>\nFrom: Ann <ann@example.org>\nSubject: hello\n\n{body}\n"
        );
        let limits = MailLimits {
            max_size: 1 << 20,
            max_parts: 16,
            ..MailLimits::default()
        };
        parse_mail(raw.as_bytes(), &limits).unwrap()
    }

    fn new_mail<'a>(item: &'a str, parsed: Result<&'a ParsedMail, &'a str>) -> NewMail<'a> {
        NewMail {
            item,
            origin: item,
            content_hash: parsed.map_or("0123456789abcdef0123456789abcdef", |p| {
                p.content_hash.as_str()
            }),
            raw_path: item,
            received_at: 1,
            parsed,
            source_warnings: &[],
            is_patch: false,
            is_cover: false,
            fields: None,
            reason: Some("not a patch"),
        }
    }

    #[test]
    fn a_batch_stores_nothing_until_committed() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let first = parsed("a@example.org", "one");
        {
            let batch = s.mail_batch("src", run).unwrap();
            batch.insert_mail(&new_mail("1", Ok(&first))).unwrap();
            batch.set_source_cursor("1").unwrap();
        }
        assert_eq!(s.source_cursor("src").unwrap(), None);
        assert!(!s.item_seen("src", "1").unwrap());
        assert_eq!(s.intake_counts(run).unwrap(), IntakeCounts::default());

        let other_bytes = parsed("a@example.org", "two");
        let batch = s.mail_batch("src", run).unwrap();
        let kinds: Vec<ItemKind> = [("1", &first), ("2", &first), ("3", &other_bytes)]
            .into_iter()
            .map(|(item, p)| batch.insert_mail(&new_mail(item, Ok(p))).unwrap())
            .collect();
        batch
            .insert_mail(&new_mail("4", Err("not a mail: no headers")))
            .unwrap();
        batch.set_source_cursor("4").unwrap();
        batch.commit().unwrap();

        assert_eq!(
            kinds,
            [ItemKind::New, ItemKind::Duplicate, ItemKind::Conflict]
        );
        assert_eq!(s.source_cursor("src").unwrap().as_deref(), Some("4"));
        assert!(s.item_seen("src", "3").unwrap());
        assert_eq!(
            s.intake_counts(run).unwrap(),
            IntakeCounts {
                mails: 4,
                patches: 0,
                ignored: 1,
                duplicates: 1,
            }
        );
        let conflicts = s.conflicting_copies(run).unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].message_id, "a@example.org");
        assert_eq!(
            (
                conflicts[0].kept_path.as_str(),
                conflicts[0].copy_path.as_str()
            ),
            ("1", "3")
        );
        let unparsable = s.unparsable_mails(run).unwrap();
        assert_eq!(unparsable.len(), 1);
        assert_eq!(
            unparsable[0].message_id,
            synthetic_message_id("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(unparsable[0].error, "not a mail: no headers");
    }

    #[test]
    fn a_mail_that_cannot_be_stored_names_its_message_id() {
        let mut s = Store::open_in_memory().unwrap();
        let mail = parsed("b@example.org", "body");
        // Run 4242 does not exist: the foreign key refuses the mail.
        let batch = s.mail_batch("src", 4242).unwrap();
        let e = batch.insert_mail(&new_mail("1", Ok(&mail))).unwrap_err();
        assert!(
            matches!(&e, Error::Mail { message_id, .. } if message_id == "b@example.org"),
            "{e}"
        );
        assert!(e.to_string().contains("<b@example.org>"), "{e}");
    }

    #[test]
    fn same_content_other_transport_is_a_duplicate_not_a_conflict() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let limits = MailLimits::default();
        let mail =
            "Message-ID: <c@example.org>\nFrom: Ann <ann@example.org>\nSubject: hello\n\nbody\n";
        let sent = parse_mail(mail.as_bytes(), &limits).unwrap();
        let via_list =
            format!("Received: from list\nList-Id: <l.example.org>\nTo: l@example.org\n{mail}");
        let via_list = parse_mail(via_list.as_bytes(), &limits).unwrap();
        assert_ne!(sent.content_hash, via_list.content_hash);
        let reworded = parse_mail(mail.replace("body", "other body").as_bytes(), &limits).unwrap();
        let batch = s.mail_batch("src", run).unwrap();
        let kinds: Vec<ItemKind> = [("1", &sent), ("2", &via_list), ("3", &reworded)]
            .into_iter()
            .map(|(item, p)| batch.insert_mail(&new_mail(item, Ok(p))).unwrap())
            .collect();
        batch.commit().unwrap();
        assert_eq!(
            kinds,
            [ItemKind::New, ItemKind::Duplicate, ItemKind::Conflict]
        );
    }
}
