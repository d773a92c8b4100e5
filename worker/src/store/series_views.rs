//! Read-only views of series for the HTTP worker's `/series` endpoints:
//! pages of series by state, repository and age, and one series with its
//! patches, linked versions and the replies in its thread. Nothing here
//! writes, so all of it works on a reader from [`Store::open_reader`].

use super::series::SeriesState;
use super::{Error, Store};
use rusqlite::params;
use std::collections::HashSet;

/// Which series a page holds; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    pub state: Option<SeriesState>,
    pub repo: Option<String>,
    /// Only series first received at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Only series with an id below this one (the cursor of the next page).
    pub before: Option<i64>,
}

/// A series as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    pub id: i64,
    pub key: String,
    pub title: String,
    pub version: u32,
    pub author: String,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub state: SeriesState,
    pub total: u32,
    pub missing: Vec<u32>,
    /// Unix seconds.
    pub first_received: i64,
    /// The run whose apply stage last recorded an outcome for it.
    pub applied_run: Option<i64>,
    /// The key of the series that superseded it.
    pub superseded_by: Option<String>,
}

/// One mail filed for a series (index 0 is the cover letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPatch {
    pub idx: u32,
    pub message_id: String,
    pub subject: String,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    /// The filed `.patch`, relative to the archive directory.
    pub archive_path: String,
}

/// A reply in a series' thread (a review, an ack, a question).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadReply {
    pub mail_id: i64,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    pub subject: String,
    /// Its `Date:` (unix seconds), when it had a readable one.
    pub date: Option<i64>,
}

const SERIES_COLUMNS: &str = "id, key, title, version, author, repo, branch, state, total, missing,
    first_received, applied_run, superseded_by";

fn series_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SeriesRow> {
    let missing: String = r.get(9)?;
    Ok(SeriesRow {
        id: r.get(0)?,
        key: r.get(1)?,
        title: r.get(2)?,
        version: r.get(3)?,
        author: r.get(4)?,
        repo: r.get(5)?,
        branch: r.get(6)?,
        state: r.get(7)?,
        total: r.get(8)?,
        // Damaged JSON loses the list of missing patches, not the series.
        missing: serde_json::from_str(&missing).unwrap_or_default(),
        first_received: r.get(10)?,
        applied_run: r.get(11)?,
        superseded_by: r.get(12)?,
    })
}

impl Store {
    /// Runs `read` in one read transaction, so that every query in it sees
    /// the same state: a collect may re-file a series between two reads.
    pub fn snapshot<T, E: From<Error>>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let out = read(self);
        // Nothing was written: ending it either way is the same.
        drop(tx);
        out
    }

    /// At most `limit` series matching `filter`, newest (highest id) first.
    pub fn series_page(&self, filter: &SeriesFilter, limit: u32) -> Result<Vec<SeriesRow>, Error> {
        // NULL filters match everything: one cached statement for every
        // combination of filters.
        let sql = format!(
            "SELECT {SERIES_COLUMNS} FROM series
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR repo = ?2)
               AND (?3 IS NULL OR first_received >= ?3) AND id < ?4
             ORDER BY id DESC LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        stmt.query_map(
            params![
                filter.state,
                filter.repo,
                filter.since,
                filter.before.unwrap_or(i64::MAX),
                limit
            ],
            series_row,
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Series `id`, if there is one.
    pub fn series_by_id(&self, id: i64) -> Result<Option<SeriesRow>, Error> {
        self.series_where("id = ?1", id)
    }

    fn series_where(
        &self,
        condition: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<SeriesRow>, Error> {
        let sql = format!("SELECT {SERIES_COLUMNS} FROM series WHERE {condition}");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query_map([value], series_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok((!rows.is_empty()).then(|| rows.swap_remove(0)))
    }

    /// The series whose outcome the apply stage of `run` recorded last, by
    /// id (a run's page lists them).
    pub fn series_applied_in(&self, run: i64) -> Result<Vec<SeriesRow>, Error> {
        let sql = format!("SELECT {SERIES_COLUMNS} FROM series WHERE applied_run = ?1 ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        stmt.query_map([run], series_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The other versions of series `id` that collect linked to it: the
    /// chain of `superseded_by` both ways (what it superseded, and what
    /// superseded it), ordered by version then id; itself left out.
    pub fn series_versions(&self, id: i64) -> Result<Vec<SeriesRow>, Error> {
        let Some(start) = self.series_by_id(id)? else {
            return Ok(Vec::new());
        };
        let mut seen: HashSet<i64> = HashSet::from([start.id]);
        let mut todo = vec![start];
        let mut out = Vec::new();
        let earlier_sql =
            format!("SELECT {SERIES_COLUMNS} FROM series WHERE superseded_by = ?1 ORDER BY id");
        while let Some(s) = todo.pop() {
            let mut linked: Vec<SeriesRow> = self
                .conn
                .prepare_cached(&earlier_sql)
                .and_then(|mut stmt| stmt.query_map([&s.key], series_row)?.collect())
                .map_err(|e| self.err(e))?;
            if let Some(by) = &s.superseded_by {
                linked.extend(self.series_where("key = ?1", by)?);
            }
            // A damaged chain that loops ends where it started.
            for l in linked {
                if seen.insert(l.id) {
                    out.push(l.clone());
                    todo.push(l);
                }
            }
        }
        out.sort_by_key(|s| (s.version, s.id));
        Ok(out)
    }

    /// The mails filed for series `id`, by index (the cover letter first).
    pub fn series_patches(&self, id: i64) -> Result<Vec<SeriesPatch>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.idx, m.message_id, m.subject, m.from_name, m.from_email, p.archive_path
                 FROM patches p JOIN mails m ON m.id = p.mail_id WHERE p.series_id = ?1 ORDER BY p.idx",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([id], |r| {
            Ok(SeriesPatch {
                idx: r.get(0)?,
                message_id: r.get(1)?,
                subject: r.get(2)?,
                from_name: r.get(3)?,
                from_email: r.get(4)?,
                archive_path: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// The apply outcome JSON last recorded for series `id`, as stored.
    pub fn series_apply_result(&self, id: i64) -> Result<Option<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT apply_result FROM series WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let rows: Vec<Option<String>> = stmt
            .query_map([id], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().flatten().next())
    }

    /// Every reply in the thread of the mails `message_ids` (a series'
    /// patches and cover letter), replies to replies included, in arrival
    /// order.
    pub fn series_replies(&self, message_ids: &[String]) -> Result<Vec<ThreadReply>, Error> {
        let mut known: HashSet<String> = message_ids.iter().cloned().collect();
        let mut ask: Vec<String> = message_ids.to_vec();
        let mut mail_ids: Vec<i64> = Vec::new();
        // A thread is walked one level of replies at a time, with the
        // same query the apply stage uses to find trailers.
        while !ask.is_empty() {
            let found = self.thread_replies(&ask, 0)?;
            ask.clear();
            for reply in found {
                if known.insert(reply.message_id.clone()) {
                    mail_ids.push(reply.mail_id);
                    ask.push(reply.message_id);
                }
            }
        }
        mail_ids.sort_unstable();
        let ids = serde_json::to_string(&mail_ids).unwrap_or_else(|_| "[]".into());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, message_id, in_reply_to, from_name, from_email, subject, date FROM mails
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([ids], |r| {
            Ok(ThreadReply {
                mail_id: r.get(0)?,
                message_id: r.get(1)?,
                in_reply_to: r.get(2)?,
                from_name: r.get(3)?,
                from_email: r.get(4)?,
                subject: r.get(5)?,
                date: r.get(6)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Series `key` (version `version`, `state`, superseded by `by`)
    /// first received at `at`, with one patch mail `mail`.
    fn series(
        s: &Store,
        key: &str,
        version: u32,
        state: &str,
        by: Option<&str>,
        at: i64,
        mail: i64,
    ) -> i64 {
        s.conn
            .execute(
                "INSERT INTO mails (id, message_id, content_hash, source_key, item, origin, received_at, raw_path,
                    subject, from_name, from_email, is_patch)
                 VALUES (?1, ?2, 'h', 's', ?1, 'test', 0, '/r', ?3, 'Ada', 'ada@example.org', 1)",
                params![mail, format!("{mail}@example.org"), format!("[PATCH v{version}] {key}")],
            )
            .unwrap();
        s.conn
            .execute(
                "INSERT INTO series (key, version, total, title, author, branch, repo, state, missing,
                    superseded_by, archive_dir, first_received)
                 VALUES (?1, ?2, 1, 't', 'ada@example.org', 'master', ?3, ?4, '[2]', ?5, '/a', ?6)",
                params![key, version, if key.starts_with('w') { "world" } else { "hello" }, state, by, at],
            )
            .unwrap();
        let id = s.conn.last_insert_rowid();
        s.conn
            .execute(
                "INSERT INTO patches (series_id, idx, mail_id, archive_path) VALUES (?1, 1, ?2, 'a/1.patch')",
                params![id, mail],
            )
            .unwrap();
        id
    }

    fn reply(s: &Store, id: i64, in_reply_to: &str, date: Option<i64>) {
        s.conn
            .execute(
                "INSERT INTO mails (id, message_id, content_hash, source_key, item, origin, received_at, raw_path,
                    subject, from_name, from_email, in_reply_to, date)
                 VALUES (?1, ?2, 'h', 's', ?1, 'test', 0, '/r', 'Re: x', 'Bob', 'bob@example.org', ?3, ?4)",
                params![id, format!("r{id}@example.org"), in_reply_to, date],
            )
            .unwrap();
    }

    #[test]
    fn pages_filter_by_state_repo_and_age_newest_first() {
        let s = Store::open_in_memory().unwrap();
        let a = series(&s, "a", 1, "superseded", Some("b"), 100, 1);
        let b = series(&s, "b", 2, "superseded", Some("c"), 200, 2);
        let c = series(&s, "c", 3, "applied", None, 300, 3);
        let w = series(&s, "w", 1, "complete", None, 400, 4);
        let ids = |f: SeriesFilter, limit| {
            s.series_page(&f, limit)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(SeriesFilter::default(), 10), [w, c, b, a]);
        assert_eq!(ids(SeriesFilter::default(), 2), [w, c]);
        let before = SeriesFilter {
            before: Some(c),
            ..Default::default()
        };
        assert_eq!(ids(before, 10), [b, a]);
        let superseded = SeriesFilter {
            state: Some(SeriesState::Superseded),
            ..Default::default()
        };
        assert_eq!(ids(superseded, 10), [b, a]);
        let world = SeriesFilter {
            repo: Some("world".into()),
            ..Default::default()
        };
        assert_eq!(ids(world, 10), [w]);
        let recent = SeriesFilter {
            since: Some(200),
            repo: Some("hello".into()),
            ..Default::default()
        };
        assert_eq!(ids(recent, 10), [c, b]);

        let row = s.series_by_id(a).unwrap().unwrap();
        assert_eq!(
            (row.missing.as_slice(), row.superseded_by.as_deref()),
            (&[2][..], Some("b"))
        );
        assert_eq!(s.series_by_id(99).unwrap(), None);
        let versions = |id| {
            s.series_versions(id)
                .unwrap()
                .into_iter()
                .map(|r| r.version)
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(b), [1, 3], "both ways");
        assert_eq!(versions(a), [2, 3], "the whole chain");
        assert_eq!(versions(w), Vec::<u32>::new());
        assert!(s.series_versions(99).unwrap().is_empty());
        assert_eq!(s.series_apply_result(a).unwrap(), None);
        s.conn
            .execute(
                "INSERT INTO runs (id, trigger, created_at) VALUES (7, 'timer', 0)",
                [],
            )
            .unwrap();
        s.conn
            .execute(
                "UPDATE series SET applied_run = 7 WHERE id IN (?1, ?2)",
                params![c, a],
            )
            .unwrap();
        let applied: Vec<i64> = s
            .series_applied_in(7)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(applied, [a, c]);
        assert!(s.series_applied_in(8).unwrap().is_empty());
        let patches = s.series_patches(c).unwrap();
        assert_eq!(
            (patches[0].idx, patches[0].message_id.as_str()),
            (1, "3@example.org")
        );
    }

    #[test]
    fn a_snapshot_reads_one_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = Store::open(&path).unwrap();
        let reader = Store::open_reader(&path).unwrap();
        series(&writer, "a", 1, "complete", None, 0, 1);
        let counts = reader
            .snapshot(|r| {
                let before = r.series_page(&SeriesFilter::default(), 10)?.len();
                series(&writer, "b", 1, "complete", None, 0, 2);
                let after = r.series_page(&SeriesFilter::default(), 10)?.len();
                Ok::<_, Error>((before, after))
            })
            .unwrap();
        assert_eq!(counts, (1, 1));
        assert_eq!(
            reader
                .series_page(&SeriesFilter::default(), 10)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn replies_include_replies_to_replies() {
        let s = Store::open_in_memory().unwrap();
        series(&s, "a", 1, "applied", None, 0, 1);
        reply(&s, 10, "1@example.org", Some(1_700_000_000));
        reply(&s, 11, "r10@example.org", None);
        reply(&s, 12, "other@example.org", None);
        let replies = s.series_replies(&["1@example.org".into()]).unwrap();
        let ids: Vec<i64> = replies.iter().map(|r| r.mail_id).collect();
        assert_eq!(ids, [10, 11]);
        assert_eq!(
            (replies[0].subject.as_str(), replies[0].date),
            ("Re: x", Some(1_700_000_000))
        );
        assert_eq!(replies[1].in_reply_to.as_deref(), Some("r10@example.org"));
    }
}
