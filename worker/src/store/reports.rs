//! Reads of series, patches and mails for the stages after apply: which
//! branches a run moved (the build stage builds them) and the mails of a
//! series' thread (the report replies in it). Nothing here writes.

use super::{Error, Store};

/// One mail of a series' thread: its cover letter (index 0) or a patch.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadMail {
    pub idx: u32,
    /// Its row id (mails are numbered in the order they arrived).
    pub mail_id: i64,
    pub message_id: String,
    pub subject: String,
    /// Its `References`, oldest first.
    pub references: Vec<String>,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    /// The fields parsed from the subject (title, version, ...), as the
    /// collect stage stored them.
    pub fields: Option<serde_json::Value>,
    pub archive_path: String,
}

/// A mail that is no patch, in reply to some mail: a review, an ack, a
/// question (the trailers of a series come from these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMail {
    /// Its row id: mails are numbered in the order they arrived.
    pub mail_id: i64,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// Its `References`, oldest first.
    pub references: Vec<String>,
    pub from_name: Option<String>,
    pub from_email: Option<String>,
    /// The raw mail, relative to the archive directory.
    pub raw_path: String,
}

/// A mail of an applied series that collects late trailers, found by its
/// Message-ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedMail {
    pub series_id: i64,
    pub key: String,
    pub idx: u32,
    pub message_id: String,
    /// The series' `trailers_upto`: replies above it are late.
    pub upto: i64,
}

/// Mails that are neither patches nor covers and were parsed, as
/// [`ReplyMail`]s (the columns in this order).
const REPLY_COLUMNS: &str =
    "m.id, m.message_id, m.in_reply_to, m.refs, m.from_name, m.from_email, m.raw_path";

fn reply_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReplyMail> {
    let refs: String = r.get(3)?;
    Ok(ReplyMail {
        mail_id: r.get(0)?,
        message_id: r.get(1)?,
        in_reply_to: r.get(2)?,
        references: serde_json::from_str(&refs).unwrap_or_default(),
        from_name: r.get(4)?,
        from_email: r.get(5)?,
        raw_path: r.get(6)?,
    })
}

impl Store {
    /// The replies into a thread of `message_ids`: mails that are no patch
    /// answering one of them (`In-Reply-To`, or any `References`), with a
    /// row id above `after`, in arrival order. Replies to those replies
    /// are found by asking again with their ids.
    pub fn thread_replies(
        &self,
        message_ids: &[String],
        after: i64,
    ) -> Result<Vec<ReplyMail>, Error> {
        let ids = serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into());
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS} FROM mails m
                 WHERE m.id > ?2 AND m.is_patch = 0 AND m.is_cover = 0 AND m.error IS NULL
                   AND (m.in_reply_to IN (SELECT value FROM json_each(?1))
                        OR (json_valid(m.refs) AND EXISTS (SELECT 1 FROM json_each(m.refs) r
                            WHERE r.value IN (SELECT value FROM json_each(?1)))))
                 ORDER BY m.id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(rusqlite::params![ids, after], reply_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Every reply (no patch, no cover, parsed) with a row id above
    /// `after`, in arrival order.
    pub fn replies_after(&self, after: i64) -> Result<Vec<ReplyMail>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS} FROM mails m
                 WHERE m.id > ?1 AND m.is_patch = 0 AND m.is_cover = 0 AND m.error IS NULL
                   AND (m.in_reply_to IS NOT NULL OR m.refs != '[]')
                 ORDER BY m.id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([after], reply_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The highest mail row id (0 without mails): what a series' replies
    /// are read up to.
    pub fn last_mail_id(&self) -> Result<i64, Error> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM mails", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The applied series that collect late trailers, as `(id, repo,
    /// trailers_upto)`.
    pub fn watched_series(&self) -> Result<Vec<(i64, Option<String>, i64)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, repo, trailers_upto FROM series WHERE state = 'applied' AND trailers_upto IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The mails among `message_ids` that some series filed (a patch or a
    /// cover letter, of any series in any state).
    pub fn filed_message_ids(&self, message_ids: &[String]) -> Result<Vec<String>, Error> {
        let ids = serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT m.message_id FROM mails m JOIN patches p ON p.mail_id = m.id
                 WHERE m.message_id IN (SELECT value FROM json_each(?1))",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([ids], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The repository of series `id`.
    pub fn series_repo(&self, id: i64) -> Result<Option<String>, Error> {
        self.conn
            .query_row("SELECT repo FROM series WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The mails among `message_ids` that belong to an applied series
    /// collecting late trailers.
    pub fn watched_mails(&self, message_ids: &[String]) -> Result<Vec<WatchedMail>, Error> {
        let ids = serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.id, s.key, p.idx, m.message_id, s.trailers_upto
                 FROM mails m JOIN patches p ON p.mail_id = m.id JOIN series s ON s.id = p.series_id
                 WHERE m.message_id IN (SELECT value FROM json_each(?1))
                   AND s.state = 'applied' AND s.trailers_upto IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([ids], |r| {
            Ok(WatchedMail {
                series_id: r.get(0)?,
                key: r.get(1)?,
                idx: r.get(2)?,
                message_id: r.get(3)?,
                upto: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Branches the apply stage of `run` moved, as `(repo, branch, new
    /// tip)`: one per branch, with its last tip, in the order the series
    /// arrived.
    pub fn moved_branches(&self, run: i64) -> Result<Vec<(String, String, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT repo, branch, apply_new_tip FROM series WHERE applied_run = ?1 AND state = 'applied'
                 ORDER BY (SELECT MIN(mail_id) FROM patches WHERE series_id = series.id), id",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = stmt
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(String, String, String)> = Vec::new();
        // Pull requests land after the run's series: their tips are last.
        let pulls = self.pull_moved_branches(run)?;
        let pulls = pulls
            .into_iter()
            .map(|(r, b, t)| (Some(r), Some(b), Some(t)));
        for row in rows.into_iter().chain(pulls) {
            if let (Some(repo), Some(branch), Some(tip)) = row {
                out.retain(|(r, b, _)| !(r == &repo && b == &branch));
                out.push((repo, branch, tip));
            }
        }
        Ok(out)
    }

    /// The mails of series `key`, by index (the cover letter first); empty
    /// when there is no such series.
    pub fn series_thread(&self, key: &str) -> Result<Vec<ThreadMail>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT p.idx, m.message_id, m.subject, m.refs, m.from_name, m.from_email, m.fields, p.archive_path,
                        m.id
                 FROM series s JOIN patches p ON p.series_id = s.id JOIN mails m ON m.id = p.mail_id
                 WHERE s.key = ?1 ORDER BY p.idx",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([key], |r| {
            let refs: String = r.get(3)?;
            let fields: Option<String> = r.get(6)?;
            Ok(ThreadMail {
                idx: r.get(0)?,
                message_id: r.get(1)?,
                subject: r.get(2)?,
                // Damaged JSON loses the threading of a reply, never the
                // reply itself.
                references: serde_json::from_str(&refs).unwrap_or_default(),
                from_name: r.get(4)?,
                from_email: r.get(5)?,
                fields: fields.and_then(|f| serde_json::from_str(&f).ok()),
                archive_path: r.get(7)?,
                mail_id: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }
}

/// What the reply to a series says about its other versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionFacts {
    /// The newest version patchline has seen of this series.
    pub newest: u32,
    /// An older version already applied: its version, branch and tip.
    pub applied_earlier: Option<(u32, Option<String>, Option<String>)>,
    /// When its first mail arrived (unix seconds).
    pub first_received: i64,
}

impl Store {
    /// The versions of series `key` patchline has: those sharing its
    /// thread root (`<root>#vN`), those its supersession chain links, and
    /// those of the same author and title.
    pub fn version_facts(&self, key: &str) -> Result<Option<VersionFacts>, Error> {
        use rusqlite::OptionalExtension;
        let me: Option<(u32, String, String, i64)> = self
            .conn
            .query_row(
                "SELECT version, author, title, first_received FROM series WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((version, author, title, first_received)) = me else {
            return Ok(None);
        };
        let root = key.split('#').next().unwrap_or(key);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT version, state, branch, apply_new_tip FROM series
                 WHERE key = ?1 OR key LIKE ?2 ESCAPE '\\' OR superseded_by = ?3
                    OR key = (SELECT superseded_by FROM series WHERE key = ?3)
                    OR (author = ?4 AND lower(title) = lower(?5))",
            )
            .map_err(|e| self.err(e))?;
        let like = format!(
            "{}#%",
            root.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows: Vec<(u32, String, Option<String>, Option<String>)> = stmt
            .query_map(rusqlite::params![root, like, key, author, title], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        let newest = rows
            .iter()
            .map(|r| r.0)
            .max()
            .unwrap_or(version)
            .max(version);
        let applied_earlier = rows
            .iter()
            .filter(|r| r.0 < version && r.1 == "applied")
            .max_by_key(|r| r.0)
            .map(|r| (r.0, r.2.clone(), r.3.clone()));
        Ok(Some(VersionFacts {
            newest,
            applied_earlier,
            first_received,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Trigger};

    /// A series `key` on `repo`/`branch` with one patch mail per index;
    /// the collect and apply stages write these rows in real runs.
    fn series(s: &Store, key: &str, branch: &str, state: &str, run: i64, tip: &str, mails: &[i64]) {
        s.conn
            .execute(
                "INSERT INTO series (key, version, total, title, author, branch, repo, state, archive_dir,
                    first_received, applied_run, apply_new_tip)
                 VALUES (?1, 1, ?2, 't', 'a', ?3, 'hello', ?4, '/a', 0, ?5, ?6)",
                rusqlite::params![key, mails.len() as i64, branch, state, run, tip],
            )
            .unwrap();
        let id = s.conn.last_insert_rowid();
        for (idx, mail) in mails.iter().enumerate() {
            s.conn
                .execute(
                    "INSERT INTO mails (id, message_id, content_hash, source_key, item, origin, received_at, raw_path,
                        subject, from_name, from_email, refs, fields)
                     VALUES (?1, ?2, 'h', 's', ?1, 'test', 0, '/r', ?3, 'Ada', 'ada@example.org', ?4, ?5)",
                    rusqlite::params![
                        mail,
                        format!("{mail}@example.org"),
                        format!("[PATCH {idx}] {key}"),
                        if idx == 0 { r#"["root@example.org"]"# } else { "not json" },
                        (idx > 0).then(|| format!(r#"{{"title":"change {idx}"}}"#)),
                    ],
                )
                .unwrap();
            s.conn
                .execute(
                    "INSERT INTO patches (series_id, idx, mail_id, archive_path) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![id, idx as i64, mail, format!("/a/{idx}.patch")],
                )
                .unwrap();
        }
    }

    #[test]
    fn moved_branches_keep_the_last_tip_in_arrival_order() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        let other = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        series(&s, "late", "master", "applied", run, "c3", &[30]);
        series(&s, "early", "master", "applied", run, "c1", &[10]);
        series(&s, "stable", "stable", "applied", run, "c2", &[20]);
        series(&s, "broken", "next", "failed", run, "c4", &[5]);
        series(&s, "elsewhere", "old", "applied", other, "c5", &[1]);
        assert_eq!(
            s.moved_branches(run).unwrap(),
            [
                ("hello".to_owned(), "stable".to_owned(), "c2".to_owned()),
                ("hello".to_owned(), "master".to_owned(), "c3".to_owned()),
            ]
        );
    }

    /// A mail `id` that is no patch, answering `in_reply_to` with `refs`.
    fn reply(s: &Store, id: i64, in_reply_to: Option<&str>, refs: &str, is_patch: bool) {
        s.conn
            .execute(
                "INSERT INTO mails (id, message_id, content_hash, source_key, item, origin, received_at, raw_path,
                    from_name, from_email, in_reply_to, refs, is_patch)
                 VALUES (?1, ?2, 'h', 's', ?1, 'test', 0, ?3, 'Bob', 'bob@example.org', ?4, ?5, ?6)",
                rusqlite::params![id, format!("r{id}@example.org"), format!("raw/{id}.eml"), in_reply_to, refs, is_patch],
            )
            .unwrap();
    }

    #[test]
    fn replies_into_a_thread_by_in_reply_to_or_references() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        series(&s, "k", "master", "applied", run, "c", &[1, 2]);
        reply(&s, 10, Some("2@example.org"), "[]", false);
        reply(
            &s,
            11,
            Some("elsewhere@example.org"),
            r#"["1@example.org","elsewhere@example.org"]"#,
            false,
        );
        reply(&s, 12, Some("r10@example.org"), "[]", false);
        reply(&s, 13, Some("2@example.org"), "not json", true);
        reply(&s, 14, Some("other@example.org"), "not json", false);
        let ids = vec!["1@example.org".to_owned(), "2@example.org".to_owned()];
        let found: Vec<i64> = s
            .thread_replies(&ids, 0)
            .unwrap()
            .iter()
            .map(|r| r.mail_id)
            .collect();
        assert_eq!(
            found,
            [10, 11],
            "patches and other threads are no replies; 12 answers a reply"
        );
        let r = &s.thread_replies(&ids, 10).unwrap()[0];
        assert_eq!(
            (r.mail_id, r.message_id.as_str(), r.raw_path.as_str()),
            (11, "r11@example.org", "raw/11.eml")
        );
        assert_eq!(r.references, ["1@example.org", "elsewhere@example.org"]);
        assert_eq!(r.from_email.as_deref(), Some("bob@example.org"));
        assert_eq!(
            s.filed_message_ids(&["2@example.org".into(), "r10@example.org".into()])
                .unwrap(),
            ["2@example.org"]
        );
        let after: Vec<i64> = s
            .replies_after(10)
            .unwrap()
            .iter()
            .map(|r| r.mail_id)
            .collect();
        assert_eq!(after, [11, 12, 14]);
        assert_eq!(s.last_mail_id().unwrap(), 14);
        assert!(
            s.watched_series().unwrap().is_empty(),
            "nothing recorded yet"
        );
    }

    #[test]
    fn a_thread_lists_its_mails_by_index() {
        let mut s = Store::open_in_memory().unwrap();
        let run = s.create_run(&NewRun::for_test(Trigger::Manual)).unwrap();
        series(&s, "k", "master", "applied", run, "c", &[3, 1, 2]);
        let mails = s.series_thread("k").unwrap();
        let ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["3@example.org", "1@example.org", "2@example.org"]);
        assert_eq!(mails[0].references, ["root@example.org"]);
        assert!(mails[1].references.is_empty(), "damaged refs are dropped");
        assert_eq!(mails[0].fields, None);
        assert_eq!(mails[2].fields.as_ref().unwrap()["title"], "change 2");
        assert_eq!(mails[2].archive_path, "/a/2.patch");
        assert!(s.series_thread("none").unwrap().is_empty());
    }
}
