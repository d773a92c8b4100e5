//! Series and their patches: what collect assembled and filed in the
//! archive, and what apply planned and did with it.
//!
//! The stages hand typed values in and get typed values out; the SQL of the
//! `series` and `patches` tables stays here. Collect's re-assembly is one
//! transaction ([`SeriesUpdate`]), so a series never loses its patches to a
//! kill between two statements.

use super::{Error, Store};
use crate::mail::series::{self as assembly, AssembledSeries, FinishedSeries};
use crate::mail::subject::SubjectFields;
use crate::vocabulary::vocabulary;
use rusqlite::{Transaction, params};

use std::collections::BTreeMap;
use std::path::Path;

vocabulary! {
    /// The `series.state` column: where a series is in its life, from
    /// collect (`incomplete` to `superseded`) to apply (`applying` to
    /// `failed`).
    ///
    /// Not [`crate::mail::series::SeriesState`], which is the assembler's
    /// verdict on one assembly and carries its data (the missing patches,
    /// the superseding series); that verdict maps onto the first four
    /// variants here (`From`), its data goes to the `missing` and
    /// `superseded_by` columns. Only this one has the states apply sets.
    pub enum SeriesState {
        /// Patches are missing; collect waits for them.
        Incomplete = "incomplete",
        /// Every patch is there: apply takes it.
        Complete = "complete",
        /// Incomplete for longer than the deadline: given up on.
        Expired = "expired",
        /// A later version of the series arrived.
        Superseded = "superseded",
        /// Apply wrote the planned branch move and has not confirmed it yet.
        Applying = "applying",
        Applied = "applied",
        /// Apply tried and did not move the branch.
        Failed = "failed",
    }
}

impl SeriesState {
    /// The states only apply sets: no later collect may change such a
    /// series, and its mails are not assembled again. (Superseded and
    /// expired are final too, but their mails are: collect keeps their
    /// state whatever the assembly says.)
    pub const SETTLED: [SeriesState; 3] = [
        SeriesState::Applied,
        SeriesState::Failed,
        SeriesState::Applying,
    ];

    pub fn is_settled(self) -> bool {
        Self::SETTLED.contains(&self)
    }
}

impl From<&assembly::SeriesState> for SeriesState {
    fn from(verdict: &assembly::SeriesState) -> Self {
        match verdict {
            assembly::SeriesState::Complete => SeriesState::Complete,
            assembly::SeriesState::Incomplete { .. } => SeriesState::Incomplete,
            assembly::SeriesState::Expired { .. } => SeriesState::Expired,
            assembly::SeriesState::Superseded { .. } => SeriesState::Superseded,
        }
    }
}

/// A series as collect finds it before re-assembling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSeries {
    pub id: i64,
    pub key: String,
    /// Chosen once, when the series was first stored.
    pub archive_dir: String,
    pub state: SeriesState,
    /// The key of the series that superseded it, when it is superseded.
    pub superseded_by: Option<String>,
}

/// One mail of a series as filed in the archive (index 0 is the cover
/// letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiledPatch {
    pub idx: u32,
    pub mail_id: i64,
    /// The `.patch` file, relative to the archive directory.
    pub archive_path: String,
}

/// A series as collect stores it: the assembly plus what collect decided
/// around it (its key after a settled namesake, route and directory).
#[derive(Debug, Clone, Copy)]
pub struct SeriesRecord<'a> {
    pub key: &'a str,
    pub series: &'a AssembledSeries,
    pub repo: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub archive_dir: &'a str,
    /// The run storing it: `created_run` of a new series, `updated_run`
    /// whenever its state or missing patches change.
    pub run: i64,
}

/// A series as the collect summary shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesOverview {
    pub key: String,
    pub title: String,
    pub version: u32,
    pub total: u32,
    /// Patches filed (cover letter not counted).
    pub received: u32,
    pub state: SeriesState,
    pub missing: Vec<u32>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub archive_dir: String,
}

/// A series apply takes: complete, or interrupted while `applying` with
/// the planned branch move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesToApply {
    pub id: i64,
    pub key: String,
    pub title: String,
    pub version: u32,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub state: SeriesState,
    pub old_tip: Option<String>,
    pub new_tip: Option<String>,
}

/// The mail of one patch of a series, both as the archive files it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPaths {
    /// The filed `.patch`, relative to the archive directory.
    pub archive_path: String,
    /// The raw mail, relative to the archive directory.
    pub raw_path: String,
}

/// What apply records about a series it is done with.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRecord<'a> {
    pub state: SeriesState,
    pub old_tip: Option<&'a str>,
    pub new_tip: Option<&'a str>,
    /// The outcome as the JSON the report and `status` read back.
    pub result: &'a str,
}

/// One trailer of one patch, as apply records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchTrailer {
    /// The patch's index in its series (1-based).
    pub idx: u32,
    /// `Token: value`.
    pub trailer: String,
    pub source: TrailerSource,
    /// The reply it came from (`None` for the configured ones).
    pub reply_mail_id: Option<i64>,
}

vocabulary! {
    /// Where a trailer of a commit came from (`patch_trailers.source`).
    pub enum TrailerSource {
        /// A reply in the series' thread.
        Reply = "reply",
        /// The repository's `link` template.
        Link = "link",
        /// The repository's `sign_off`: the committer's.
        SignOff = "sign-off",
    }
}

vocabulary! {
    /// `patch_trailers.state`.
    pub enum TrailerState {
        /// In the commit.
        Added = "added",
        /// Arrived after the series was applied: reported, not added.
        Late = "late",
    }
}

/// A trailer recorded for a patch, with its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTrailer {
    pub series_key: String,
    pub series_title: String,
    pub series_version: u32,
    pub repo: Option<String>,
    pub branch: Option<String>,
    /// Patches in the series.
    pub total: u32,
    pub trailer: PatchTrailer,
}

/// The transaction in which collect replaces the stored assembly: series,
/// their patches and the duplicates. Dropped without [`commit`](Self::commit),
/// nothing of it is stored.
pub struct SeriesUpdate<'a> {
    pub(super) tx: Transaction<'a>,
    pub(super) path: &'a Path,
}

impl Store {
    /// Every stored series, settled or not, in no particular order.
    pub fn known_series(&self) -> Result<Vec<KnownSeries>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, key, archive_dir, state, superseded_by FROM series")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(KnownSeries {
                id: r.get(0)?,
                key: r.get(1)?,
                archive_dir: r.get(2)?,
                state: r.get(3)?,
                superseded_by: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Every series apply took ([settled](SeriesState::SETTLED)), as the
    /// assembler checks new mails against it (its own mails are not
    /// assembled again).
    pub fn finished_series(&self) -> Result<Vec<FinishedSeries>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.id, s.key, s.version, s.author, s.title, p.idx, m.message_id, m.fields, m.patch_hash
                 FROM series s JOIN patches p ON p.series_id = s.id JOIN mails m ON m.id = p.mail_id
                 WHERE s.state IN (?1, ?2, ?3) ORDER BY s.id, p.idx",
            )
            .map_err(|e| self.err(e))?;
        let [a, b, c] = SeriesState::SETTLED;
        let rows = stmt
            .query_map(params![a, b, c], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    FinishedSeries {
                        key: r.get(1)?,
                        version: r.get(2)?,
                        author: r.get(3)?,
                        title: r.get(4)?,
                        ..FinishedSeries::default()
                    },
                    r.get::<_, u32>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(i64, FinishedSeries)> = Vec::new();
        for (id, series, idx, message_id, fields, hash) in rows {
            if out.last().is_none_or(|l| l.0 != id) {
                out.push((id, series));
            }
            let Some((_, f)) = out.last_mut() else {
                continue;
            };
            f.message_ids.push(message_id);
            if idx > 0 {
                let fields: SubjectFields = fields
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default();
                f.patch_titles.push(fields.title);
                f.patch_hashes.extend(hash);
            }
        }
        Ok(out.into_iter().map(|(_, f)| f).collect())
    }

    /// The mails filed for series `id`, by index.
    pub fn filed_patches(&self, series: i64) -> Result<BTreeMap<u32, FiledPatch>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx, mail_id, archive_path FROM patches WHERE series_id = ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_map([series], |r| {
            let patch = FiledPatch {
                idx: r.get(0)?,
                mail_id: r.get(1)?,
                archive_path: r.get(2)?,
            };
            Ok((patch.idx, patch))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Opens the transaction that replaces the stored assembly.
    pub fn series_update(&mut self) -> Result<SeriesUpdate<'_>, Error> {
        let tx = self.conn.transaction().map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })?;
        Ok(SeriesUpdate {
            tx,
            path: &self.path,
        })
    }

    /// The series a collect summary lists: every complete or incomplete
    /// one, and every one `run` changed, in order of arrival.
    pub fn open_or_updated_series(&self, run: i64) -> Result<Vec<SeriesOverview>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, title, version, total, state, missing, repo, branch, archive_dir,
                        (SELECT COUNT(*) FROM patches p WHERE p.series_id = series.id AND p.idx > 0) FROM series
                 WHERE state IN (?2, ?3) OR updated_run = ?1 ORDER BY first_received, id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(
            params![run, SeriesState::Complete, SeriesState::Incomplete],
            |r| {
                let missing: String = r.get(5)?;
                Ok(SeriesOverview {
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
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The series apply takes, in its order: interrupted ones first (their
    /// branch move is pending), then complete ones by their first mail.
    pub fn series_to_apply(&self) -> Result<Vec<SeriesToApply>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, key, title, version, repo, branch, state, apply_old_tip, apply_new_tip FROM series
                 WHERE state IN (?1, ?2)
                 ORDER BY state = ?2, (SELECT MIN(mail_id) FROM patches WHERE series_id = series.id), id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![SeriesState::Applying, SeriesState::Complete], |r| {
            Ok(SeriesToApply {
                id: r.get(0)?,
                key: r.get(1)?,
                title: r.get(2)?,
                version: r.get(3)?,
                repo: r.get(4)?,
                branch: r.get(5)?,
                state: r.get(6)?,
                old_tip: r.get(7)?,
                new_tip: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The outcome JSONs of the series an earlier attempt of `run` finished
    /// (applied or failed), in apply's order: a stage resumed after a kill
    /// must report them too, as they are no longer among `series_to_apply`.
    pub fn finished_in_run(&self, run: i64) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT apply_result FROM series
                 WHERE applied_run = ?1 AND state IN (?2, ?3) AND apply_result IS NOT NULL
                 ORDER BY (SELECT MIN(mail_id) FROM patches WHERE series_id = series.id), id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(
            params![run, SeriesState::Applied, SeriesState::Failed],
            |r| r.get(0),
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The mails of the series' patches (cover letter excluded), in order.
    pub fn patch_paths(&self, series: &SeriesToApply) -> Result<Vec<PatchPaths>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.archive_path, m.raw_path FROM patches p JOIN mails m ON m.id = p.mail_id
                 WHERE p.series_id = ?1 AND p.idx > 0 ORDER BY p.idx",
            )
            .map_err(|e| self.series_err(series, e))?;
        stmt.query_map([series.id], |r| {
            Ok(PatchPaths {
                archive_path: r.get(0)?,
                raw_path: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.series_err(series, e))
    }

    /// The outcome JSON apply recorded last for the series, if any.
    pub fn apply_result(&self, series: &SeriesToApply) -> Result<Option<String>, Error> {
        self.conn
            .query_row(
                "SELECT apply_result FROM series WHERE id = ?1",
                [series.id],
                |r| r.get(0),
            )
            .map_err(|e| self.series_err(series, e))
    }

    /// Write-ahead of a branch move: the series is `applying` from `old_tip`
    /// to `new_tip`, so a run killed before the move is confirmed knows
    /// what to check. `result` is the outcome JSON planned so far.
    pub fn record_apply_plan(
        &mut self,
        series: &SeriesToApply,
        run: i64,
        old_tip: &str,
        new_tip: &str,
        result: &str,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE series SET state = ?6, apply_old_tip = ?2, apply_new_tip = ?3, applied_run = ?4,
                    apply_result = ?5 WHERE id = ?1",
                params![
                    series.id,
                    old_tip,
                    new_tip,
                    run,
                    result,
                    SeriesState::Applying
                ],
            )
            .map_err(|e| self.series_err(series, e))?;
        Ok(())
    }

    /// The series is done for `run`: applied or failed, with its outcome.
    pub fn record_apply_result(
        &mut self,
        series: &SeriesToApply,
        run: i64,
        record: &ApplyRecord<'_>,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE series SET state = ?2, apply_result = ?3, applied_run = ?4, apply_old_tip = ?5,
                    apply_new_tip = ?6, updated_run = ?4 WHERE id = ?1",
                params![
                    series.id,
                    record.state,
                    record.result,
                    run,
                    record.old_tip,
                    record.new_tip
                ],
            )
            .map_err(|e| self.series_err(series, e))?;
        Ok(())
    }

    /// The trailers apply put into the commits of `series` (replacing any
    /// a crashed attempt recorded), and that its replies were read up to
    /// mail `upto`: later replies are late (`None`: late replies are not
    /// looked for). One transaction.
    pub fn record_added_trailers(
        &mut self,
        series: &SeriesToApply,
        run: i64,
        trailers: &[PatchTrailer],
        upto: Option<i64>,
    ) -> Result<(), Error> {
        let err = |source| Error::Series {
            path: self.path.clone(),
            key: series.key.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM patch_trailers WHERE series_id = ?1 AND state = ?2",
            params![series.id, TrailerState::Added],
        )
        .map_err(err)?;
        insert_trailers(&tx, series.id, run, TrailerState::Added, trailers).map_err(err)?;
        tx.execute(
            "UPDATE series SET trailers_upto = ?2 WHERE id = ?1",
            params![series.id, upto],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Records late trailers (found by `run`; one already recorded is
    /// left as it is) and moves the `trailers_upto` of the series `read`
    /// to `upto`: their replies up to there have been read. One
    /// transaction.
    pub fn record_late_trailers(
        &mut self,
        run: i64,
        late: &[(i64, PatchTrailer)],
        read: &[i64],
        upto: i64,
    ) -> Result<(), Error> {
        let path = self.path.clone();
        let err = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for (series, trailer) in late {
            insert_trailers(
                &tx,
                *series,
                run,
                TrailerState::Late,
                std::slice::from_ref(trailer),
            )
            .map_err(err)?;
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE series SET trailers_upto = ?2 WHERE id = ?1 AND trailers_upto < ?2",
                )
                .map_err(err)?;
            for id in read {
                stmt.execute(params![id, upto]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The trailers recorded for the series `series_id` (both states), by
    /// patch, in the order recorded.
    pub fn series_trailers(
        &self,
        series_id: i64,
    ) -> Result<Vec<(TrailerState, PatchTrailer)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT state, idx, trailer, source, reply_mail_id FROM patch_trailers
                 WHERE series_id = ?1 ORDER BY idx, id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([series_id], |r| {
            Ok((
                r.get(0)?,
                PatchTrailer {
                    idx: r.get(1)?,
                    trailer: r.get(2)?,
                    source: r.get(3)?,
                    reply_mail_id: r.get(4)?,
                },
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The late trailers `run` found, in the order found.
    pub fn late_trailers(&self, run: i64) -> Result<Vec<RecordedTrailer>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.key, s.title, s.version, s.repo, s.branch, s.total, t.idx, t.trailer, t.source,
                        t.reply_mail_id
                 FROM patch_trailers t JOIN series s ON s.id = t.series_id
                 WHERE t.run_id = ?1 AND t.state = ?2 ORDER BY t.id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![run, TrailerState::Late], |r| {
            Ok(RecordedTrailer {
                series_key: r.get(0)?,
                series_title: r.get(1)?,
                series_version: r.get(2)?,
                repo: r.get(3)?,
                branch: r.get(4)?,
                total: r.get(5)?,
                trailer: PatchTrailer {
                    idx: r.get(6)?,
                    trailer: r.get(7)?,
                    source: r.get(8)?,
                    reply_mail_id: r.get(9)?,
                },
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    fn series_err(&self, series: &SeriesToApply, source: rusqlite::Error) -> Error {
        Error::Series {
            path: self.path.clone(),
            key: series.key.clone(),
            source,
        }
    }
}

fn insert_trailers(
    tx: &Transaction<'_>,
    series: i64,
    run: i64,
    state: TrailerState,
    trailers: &[PatchTrailer],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO patch_trailers (series_id, idx, trailer, source, reply_mail_id, state, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for t in trailers {
        stmt.execute(params![
            series,
            t.idx,
            t.trailer,
            t.source,
            t.reply_mail_id,
            state,
            run
        ])?;
    }
    Ok(())
}

impl SeriesUpdate<'_> {
    /// Deletes a series no assembly produces any more, with its filings.
    pub fn delete_series(&self, id: i64) -> Result<(), Error> {
        self.clear_patches(id)?;
        self.tx
            .prepare_cached("DELETE FROM series WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Inserts the series, or updates the one of the same key; returns its
    /// id. The archive directory is chosen once, at insert; `updated_run`
    /// moves only when the state or the missing patches really changed.
    pub fn upsert_series(&self, record: &SeriesRecord<'_>) -> Result<i64, Error> {
        let s = record.series;
        let superseded_by = match &s.state {
            assembly::SeriesState::Superseded { by } => Some(by.as_str()),
            _ => None,
        };
        let missing = serde_json::to_string(&s.missing).unwrap_or_else(|_| "[]".into());
        self.tx
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
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        record.key,
                        s.version,
                        s.total,
                        s.title,
                        s.author,
                        record.branch,
                        record.repo,
                        s.cover,
                        SeriesState::from(&s.state),
                        missing,
                        superseded_by,
                        record.archive_dir,
                        s.first_received,
                        record.run
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(|source| Error::Series {
                path: self.path.to_owned(),
                key: record.key.to_owned(),
                source,
            })
    }

    /// Forgets what was filed for series `id` (before filing it anew).
    pub fn clear_patches(&self, series: i64) -> Result<(), Error> {
        self.tx
            .prepare_cached("DELETE FROM patches WHERE series_id = ?1")
            .and_then(|mut stmt| stmt.execute([series]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn file_patch(&self, series: i64, patch: &FiledPatch) -> Result<(), Error> {
        self.tx
            .prepare_cached(
                "INSERT INTO patches (series_id, idx, mail_id, archive_path) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    series,
                    patch.idx,
                    patch.mail_id,
                    patch.archive_path
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn commit(self) -> Result<(), Error> {
        let path = self.path;
        self.tx.commit().map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::{MailLimits, parse_mail};
    use crate::store::NewMail;
    use crate::store::{NewRun, Trigger};

    #[test]
    fn states_read_and_write_the_column_strings() {
        let strings: Vec<&str> = SeriesState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            strings,
            [
                "incomplete",
                "complete",
                "expired",
                "superseded",
                "applying",
                "applied",
                "failed"
            ]
        );
        for &state in SeriesState::ALL {
            assert_eq!(state.as_str().parse::<SeriesState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
            assert_eq!(
                serde_json::from_str::<SeriesState>(&format!("\"{state}\"")).unwrap(),
                state
            );
        }
        assert_eq!(
            "done".parse::<SeriesState>(),
            Err(crate::vocabulary::UnknownWord {
                kind: "SeriesState",
                text: "done".into()
            })
        );
        let settled: Vec<SeriesState> = SeriesState::ALL
            .iter()
            .copied()
            .filter(|s| s.is_settled())
            .collect();
        assert_eq!(
            settled,
            [
                SeriesState::Applying,
                SeriesState::Applied,
                SeriesState::Failed
            ]
        );
    }

    /// A store holding one patch mail of run 1, whose row id it returns.
    fn store_with_patch_mail() -> (Store, i64) {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let raw = "Message-ID: <p1@example.org>\nFrom: Ann <ann@example.org>\nSubject: [PATCH] net: tidy\n\n---\n a | 1 +\n";
        let limits = MailLimits {
            max_size: 1 << 20,
            max_parts: 16,
            ..MailLimits::default()
        };
        let parsed = parse_mail(raw.as_bytes(), &limits).unwrap();
        let batch = s.mail_batch("src", run).unwrap();
        batch
            .insert_mail(&NewMail {
                item: "1",
                origin: "test",
                content_hash: &parsed.content_hash,
                raw_path: "raw/1.eml",
                received_at: 10,
                parsed: Ok(&parsed),
                source_warnings: &[],
                is_patch: true,
                is_cover: false,
                fields: None,
                reason: None,
            })
            .unwrap();
        batch.commit().unwrap();
        let mails = s.open_patch_mails().unwrap();
        assert_eq!(mails.len(), 1);
        (s, mails[0].mail.mail_id)
    }

    fn assembled(mail_id: i64, state: assembly::SeriesState) -> AssembledSeries {
        AssembledSeries {
            key: "p1@example.org".into(),
            version: 1,
            total: 1,
            title: "net: tidy".into(),
            author: "ann@example.org".into(),
            branch: None,
            repo: Some("linux".into()),
            cover: None,
            patches: vec![(1, mail_id)],
            missing: match &state {
                assembly::SeriesState::Incomplete { missing }
                | assembly::SeriesState::Expired { missing } => missing.clone(),
                _ => Vec::new(),
            },
            state,
            first_received: 10,
        }
    }

    fn store_series(s: &mut Store, series: &AssembledSeries, run: i64, commit: bool) {
        let update = s.series_update().unwrap();
        let id = update
            .upsert_series(&SeriesRecord {
                key: &series.key,
                series,
                repo: series.repo.as_deref(),
                branch: Some("main"),
                archive_dir: "2024-01-01/net-tidy",
                run,
            })
            .unwrap();
        update.clear_patches(id).unwrap();
        update
            .file_patch(
                id,
                &FiledPatch {
                    idx: 1,
                    mail_id: series.patches[0].1,
                    archive_path: "2024-01-01/net-tidy/0001-net-tidy.patch".into(),
                },
            )
            .unwrap();
        if commit {
            update.commit().unwrap();
        }
    }

    #[test]
    fn a_series_goes_from_assembly_through_apply() {
        let (mut s, mail) = store_with_patch_mail();
        let incomplete = assembled(mail, assembly::SeriesState::Incomplete { missing: vec![2] });
        store_series(&mut s, &incomplete, 1, false);
        assert_eq!(s.known_series().unwrap(), [], "not committed, not stored");

        store_series(&mut s, &incomplete, 1, true);
        let overview = s.open_or_updated_series(1).unwrap();
        assert_eq!(overview[0].state, SeriesState::Incomplete);
        assert_eq!(
            (overview[0].missing.as_slice(), overview[0].received),
            (&[2][..], 1)
        );
        assert_eq!(s.series_to_apply().unwrap(), []);

        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        store_series(
            &mut s,
            &assembled(mail, assembly::SeriesState::Complete),
            run,
            true,
        );
        let known = s.known_series().unwrap();
        assert_eq!(known.len(), 1, "the same key is updated, not added");
        assert_eq!(s.filed_patches(known[0].id).unwrap()[&1].mail_id, mail);
        let todo = s.series_to_apply().unwrap();
        assert_eq!(todo.len(), 1);
        assert_eq!(
            (todo[0].state, todo[0].branch.as_deref()),
            (SeriesState::Complete, Some("main"))
        );
        let paths = s.patch_paths(&todo[0]).unwrap();
        assert_eq!(paths[0].raw_path, "raw/1.eml");

        s.record_apply_plan(&todo[0], run, "old", "new", "{\"commits\":[\"c1\"]}")
            .unwrap();
        assert!(
            s.open_patch_mails().unwrap().is_empty(),
            "an applying series keeps its mails"
        );
        let resumed = s.series_to_apply().unwrap();
        assert_eq!(resumed[0].state, SeriesState::Applying);
        assert_eq!(
            (resumed[0].old_tip.as_deref(), resumed[0].new_tip.as_deref()),
            (Some("old"), Some("new"))
        );
        assert_eq!(
            s.apply_result(&resumed[0]).unwrap().as_deref(),
            Some("{\"commits\":[\"c1\"]}")
        );

        s.record_apply_result(
            &resumed[0],
            run,
            &ApplyRecord {
                state: SeriesState::Applied,
                old_tip: Some("old"),
                new_tip: Some("new"),
                result: "{}",
            },
        )
        .unwrap();
        assert_eq!(s.series_to_apply().unwrap(), []);
        assert_eq!(
            s.open_or_updated_series(run).unwrap()[0].state,
            SeriesState::Applied
        );
        assert!(s.open_or_updated_series(run + 1).unwrap().is_empty());
    }

    #[test]
    fn trailers_added_then_late_ones_with_the_watermark() {
        let (mut s, mail) = store_with_patch_mail();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        store_series(
            &mut s,
            &assembled(mail, assembly::SeriesState::Complete),
            run,
            true,
        );
        let todo = s.series_to_apply().unwrap().remove(0);
        let trailer = |t: &str, source, reply| PatchTrailer {
            idx: 1,
            trailer: t.into(),
            source,
            reply_mail_id: reply,
        };
        let rb = trailer("Reviewed-by: A <a@x>", TrailerSource::Reply, Some(7));
        let link = trailer("Link: https://x/p1", TrailerSource::Link, None);
        // A crashed attempt recorded something else: replaced.
        s.record_added_trailers(&todo, run, std::slice::from_ref(&link), Some(3))
            .unwrap();
        s.record_added_trailers(&todo, run, &[rb.clone(), link.clone()], Some(5))
            .unwrap();
        assert!(s.watched_series().unwrap().is_empty(), "not applied yet");
        s.record_apply_result(
            &todo,
            run,
            &ApplyRecord {
                state: SeriesState::Applied,
                old_tip: Some("old"),
                new_tip: Some("new"),
                result: "{}",
            },
        )
        .unwrap();
        assert_eq!(
            s.watched_series().unwrap(),
            [(todo.id, Some("linux".to_owned()), 5)]
        );
        assert_eq!(
            s.series_trailers(todo.id).unwrap(),
            [
                (TrailerState::Added, rb.clone()),
                (TrailerState::Added, link)
            ]
        );

        let late_run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let tb = trailer("Tested-by: T <t@x>", TrailerSource::Reply, Some(9));
        for _ in 0..2 {
            // Twice (a stage run again): recorded once.
            s.record_late_trailers(late_run, &[(todo.id, tb.clone())], &[todo.id], 9)
                .unwrap();
        }
        let late = s.late_trailers(late_run).unwrap();
        assert_eq!(late.len(), 1);
        assert_eq!(
            (late[0].series_key.as_str(), late[0].total, &late[0].trailer),
            ("p1@example.org", 1, &tb)
        );
        assert!(s.late_trailers(run).unwrap().is_empty());
        assert_eq!(s.watched_series().unwrap()[0].2, 9, "read up to 9");
        s.record_late_trailers(late_run, &[], &[todo.id], 8)
            .unwrap();
        assert_eq!(s.watched_series().unwrap()[0].2, 9, "never back");
        // Without trailers a series is not watched.
        s.record_added_trailers(&todo, run, &[], None).unwrap();
        assert!(s.watched_series().unwrap().is_empty());
    }
}
