//! A public-inbox archive as a mail source: the format lore-style list
//! archives publish (public-inbox v2). An inbox is a directory whose
//! `git/0.git`, `git/1.git`, ... are its *epochs*: bare git repositories
//! whose every commit on `refs/heads/master` adds one mail as the blob `m`
//! (a commit holding `d` instead records a mail removed from the archive,
//! one with an empty `m` a mail purged from it).
//!
//! Read-only, with gitoxide. The cursor is the last commit taken per epoch
//! (`0=<id>,1=<id>`), so a collect reads only the commits after it; a new
//! epoch is picked up when it appears. An epoch whose history was rewritten
//! (public-inbox-purge/-edit rewrite it) no longer contains its cursor
//! commit: it is read again from its first commit, and every mail already
//! taken is recognised by its item key (the blob id of the mail, the same
//! before and after a rewrite), so nothing is taken twice and nothing the
//! rewrite kept is lost.
//!
//! With a `url` (the inbox's public address, as public-inbox-httpd and lore
//! serve it), every collect first mirrors the remote's epochs into
//! `path/git/N.git` with gitoxide (`crate::gitfetch`), as grokmirror or
//! `lei` users keep a local copy, then reads as above. The epochs are the
//! ones the inbox's grokmirror manifest (`URL/manifest.js.gz`) lists, or,
//! without a manifest, `URL/0`, `URL/1`, ... up to the first one missing
//! (for `git://` and `file://` URLs, `URL/git/N.git`, the inbox's own
//! layout). A failed fetch is an infrastructure error naming the URL.

use super::{Error, FetchStats, Flow, MailSource, Oversize, RawMail, Reread, Resume, Sink};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct PublicInboxSource {
    path: PathBuf,
    /// The inbox's public URL, mirrored into `path` before each read.
    url: Option<String>,
    max_mail_size: u64,
}

/// A manifest larger than this is not an inbox's manifest.
const MANIFEST_LIMIT: u64 = 16 * 1024 * 1024;

/// A ureq failure in words that never quote the URL.
fn describe_ureq(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(t) => format!("TLS: {t}"),
        _ => "the request failed".into(),
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Where epoch `n` of the inbox at `base` is served: public-inbox-httpd
/// (and lore) serve `URL/N`; a `git://` or `file://` URL names the inbox
/// directory itself, whose epochs are `git/N.git`.
fn epoch_url(base: &str, n: u32) -> String {
    if is_http(base) {
        format!("{base}/{n}")
    } else {
        format!("{base}/git/{n}.git")
    }
}

/// The epochs a grokmirror manifest (JSON, keys such as
/// `/lkml/git/0.git`) lists for the inbox named `inbox` (the last segment
/// of its URL); all epochs listed when no key names that inbox (a manifest
/// behind a proxy that renames the path). Sorted, without duplicates.
fn manifest_epochs(json: &[u8], inbox: &str) -> Result<Vec<u32>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("not a JSON object of repositories")?;
    let epochs: Vec<(&str, u32)> = object
        .keys()
        .filter_map(|key| {
            let (prefix, file) = key.rsplit_once("/git/")?;
            let n = file.strip_suffix(".git")?.parse::<u32>().ok()?;
            Some((prefix.rsplit('/').next().unwrap_or(prefix), n))
        })
        .collect();
    let named: Vec<u32> = epochs
        .iter()
        .filter(|(name, _)| *name == inbox)
        .map(|(_, n)| *n)
        .collect();
    let mut out = if named.is_empty() {
        epochs.iter().map(|(_, n)| *n).collect()
    } else {
        named
    };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The last commit taken per epoch.
type Cursor = BTreeMap<u32, String>;

fn parse_cursor(key: &str, text: &str) -> Result<Cursor, Error> {
    let mut out = Cursor::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let parsed = part
            .split_once('=')
            .and_then(|(e, id)| Some((e.parse::<u32>().ok()?, id)))
            .filter(|(_, id)| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some((epoch, id)) = parsed else {
            return Err(Error::BadCursor {
                source_key: key.to_owned(),
                cursor: text.to_owned(),
                reason: format!("{part:?} is not EPOCH=COMMIT"),
            });
        };
        out.insert(epoch, id.to_owned());
    }
    Ok(out)
}

fn format_cursor(cursor: &Cursor) -> String {
    cursor
        .iter()
        .map(|(e, id)| format!("{e}={id}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl PublicInboxSource {
    pub fn new(path: PathBuf, max_mail_size: u64) -> Self {
        Self {
            path,
            url: None,
            max_mail_size,
        }
    }

    /// Mirrors the inbox at `url` into the directory before each read.
    pub fn with_url(mut self, url: Option<String>) -> Self {
        self.url = url;
        self
    }

    /// A failed fetch of the inbox at `base`; `source` names what exactly
    /// (the manifest, an epoch) failed.
    fn fetch_error(base: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::ArchiveFetch {
            url: crate::gitfetch::redacted(base),
            source: Box::new(source),
        }
    }

    /// The epochs the manifest at `base/manifest.js.gz` lists; `None` when
    /// the server has no manifest.
    fn manifest(&self, base: &str) -> Result<Option<Vec<u32>>, Error> {
        use std::io::Read;
        let url = format!("{base}/manifest.js.gz");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .user_agent("patchline (public-inbox)")
            .build()
            .into();
        let shown = crate::gitfetch::redacted(&url);
        let failed = |reason: String| {
            Self::fetch_error(
                base,
                std::io::Error::other(format!("reading {shown}: {reason}")),
            )
        };
        // ureq's own messages may quote the URL (and its password): the
        // error is told from its kind alone.
        let response = agent
            .get(&url)
            .call()
            .map_err(|e| failed(describe_ureq(&e)))?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            status => return Err(failed(format!("the server answered HTTP {status}"))),
        }
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(response.into_body().into_reader().take(MANIFEST_LIMIT))
            .take(MANIFEST_LIMIT)
            .read_to_end(&mut json)
            .map_err(|e| failed(e.to_string()))?;
        let inbox = base.rsplit('/').next().unwrap_or_default();
        manifest_epochs(&json, inbox).map(Some).map_err(failed)
    }

    /// Mirrors epoch `n` into `path/git/N.git`. An epoch that was not
    /// there before and fails leaves nothing behind.
    fn mirror_epoch(&self, base: &str, n: u32) -> Result<(), Error> {
        let url = epoch_url(base, n);
        let dest = self.path.join("git").join(format!("{n}.git"));
        let known = dest.exists();
        let result = crate::gitfetch::mirror(&url, &dest);
        if result.is_err() && !known {
            let _ = std::fs::remove_dir_all(&dest);
        }
        match result {
            Ok(outcome) => {
                tracing::debug!(url = %crate::gitfetch::redacted(&url), updated = outcome.updated.len(), "public-inbox epoch fetched");
                Ok(())
            }
            Err(e) if e.is_remote() => Err(Self::fetch_error(base, e)),
            Err(e) => Err(Error::Io {
                path: dest.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Brings `path` up to date with the inbox at `url`.
    fn update_from(&self, url: &str) -> Result<(), Error> {
        let base = url.trim_end_matches('/');
        let git = self.path.join("git");
        std::fs::create_dir_all(&git).map_err(|source| Error::Io {
            path: git.display().to_string(),
            source,
        })?;
        let listed = if is_http(base) {
            self.manifest(base)?
        } else {
            None
        };
        if let Some(epochs) = listed {
            for n in epochs {
                self.mirror_epoch(base, n)?;
            }
            return Ok(());
        }
        // No manifest: epochs up to the first one the server does not
        // serve. A new epoch that fails for another reason is only picked
        // up by a later collect; an epoch already mirrored must fetch.
        for n in 0u32.. {
            let known = git.join(format!("{n}.git")).exists();
            match self.mirror_epoch(base, n) {
                Ok(()) => {}
                Err(e) if n > 0 && !known => {
                    tracing::debug!(epoch = n, error = %e, "public-inbox: no further epoch");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The epochs of the inbox, in order: `(number, git directory)`.
    fn epochs(&self) -> Result<Vec<(u32, PathBuf)>, Error> {
        let dir = self.path.join("git");
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            path: format!(
                "{} (is this a public-inbox v2 inbox? it needs git/0.git)",
                dir.display()
            ),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".git")
                .and_then(|n| n.parse::<u32>().ok())
            {
                out.push((n, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn git_error(&self, epoch: &Path, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Io {
            path: format!("public-inbox epoch {}: {what}", epoch.display()),
            source: std::io::Error::other(e.to_string()),
        }
    }

    /// The commits of `epoch` after `after` (all of them when `after` is
    /// not in its history, or `None`), oldest first, and whether `after`
    /// was missing (a rewritten epoch).
    fn new_commits(
        &self,
        repo: &gix::Repository,
        epoch: &Path,
        after: Option<&str>,
    ) -> Result<(Vec<gix::ObjectId>, bool), Error> {
        let reference = repo
            .try_find_reference("refs/heads/master")
            .map_err(|e| self.git_error(epoch, "cannot read refs/heads/master", e))?;
        // An epoch made but not written to yet has no master.
        let Some(mut reference) = reference else {
            return Ok((Vec::new(), false));
        };
        let tip = reference
            .peel_to_id()
            .map_err(|e| self.git_error(epoch, "cannot read refs/heads/master", e))?
            .detach();
        let after = after.and_then(|a| gix::ObjectId::from_hex(a.as_bytes()).ok());
        let mut ids = Vec::new();
        let mut found = after.is_none();
        // Epochs are linear (public-inbox only appends, or rewrites): walk
        // first parents from the tip back to the cursor.
        let walk = repo
            .rev_walk([tip])
            .first_parent_only()
            .all()
            .map_err(|e| self.git_error(epoch, "cannot walk the history", e))?;
        for info in walk {
            let info = info.map_err(|e| self.git_error(epoch, "cannot walk the history", e))?;
            if Some(info.id) == after {
                found = true;
                break;
            }
            ids.push(info.id);
        }
        ids.reverse();
        Ok((ids, !found))
    }
}

impl MailSource for PublicInboxSource {
    fn key(&self) -> String {
        let abs = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("public-inbox:{}", abs.display())
    }

    fn fetch(&mut self, resume: &Resume<'_>, sink: &mut Sink<'_>) -> Result<FetchStats, Error> {
        let key = self.key();
        let mut cursor = match resume.cursor {
            Some(text) => parse_cursor(&key, text)?,
            None => Cursor::new(),
        };
        let mut stats = FetchStats::default();
        if let Some(url) = &self.url {
            self.update_from(url)?;
        }
        let epochs = self.epochs()?;
        if epochs.is_empty() {
            return Err(Error::Io {
                path: format!(
                    "{} (no epoch git/N.git in it)",
                    self.path.join("git").display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let mut plan = Vec::new();
        for (n, dir) in &epochs {
            let repo = gix::open(dir).map_err(|e| self.git_error(dir, "cannot open", e))?;
            let (commits, rewritten) =
                self.new_commits(&repo, dir, cursor.get(n).map(String::as_str))?;
            if rewritten {
                stats.warnings.push(format!(
                    "public-inbox {}: epoch {n} was rewritten (its last read commit is gone): read again from its start, mails already taken are skipped",
                    self.path.display()
                ));
            }
            plan.push((*n, dir.clone(), repo, commits));
        }
        stats.total_hint = Some(plan.iter().map(|p| p.3.len() as u64).sum());
        'epochs: for (n, dir, repo, commits) in plan {
            for id in commits {
                cursor.insert(n, id.to_hex().to_string());
                let commit = repo
                    .find_commit(id)
                    .map_err(|e| self.git_error(&dir, "cannot read a commit", e))?;
                let tree = commit
                    .tree()
                    .map_err(|e| self.git_error(&dir, "cannot read a commit's tree", e))?;
                let Some(entry) = tree.find_entry("m") else {
                    // A removal (`d`) or an empty commit: nothing to take.
                    continue;
                };
                let blob_id = entry.object_id();
                let item = blob_id.to_hex().to_string();
                if (resume.seen)(&item) {
                    stats.skipped_seen += 1;
                    stats.cursor = Some(format_cursor(&cursor));
                    continue;
                }
                let header = repo
                    .find_header(blob_id)
                    .map_err(|e| self.git_error(&dir, "cannot read a mail", e))?;
                if header.size() == 0 {
                    // public-inbox-purge leaves an empty `m` where the
                    // purged mail was (its commit says `purged <oid>`).
                    stats.cursor = Some(format_cursor(&cursor));
                    continue;
                }
                // Over the limit: handed over whole (gitoxide reads a blob
                // in one piece) to be archived and recorded, never skipped.
                let oversize = (header.size() > self.max_mail_size).then(|| Oversize {
                    size: header.size(),
                    reread: Reread::Held,
                });
                let bytes = repo
                    .find_blob(blob_id)
                    .map_err(|e| self.git_error(&dir, "cannot read a mail", e))?
                    .take_data();
                let raw = RawMail {
                    bytes,
                    origin: format!("public-inbox {} epoch {n} commit {id}", self.path.display()),
                    item: item.clone(),
                    cursor: format_cursor(&cursor),
                    warnings: Vec::new(),
                    oversize,
                };
                stats.delivered += 1;
                stats.cursor = None;
                match sink(raw) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => break 'epochs,
                    Err(source) => return Err(Error::Sink { item, source }),
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::source::fetch_all;
    use crate::testkit::git;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// Appends a mail to an epoch as public-inbox does: one commit whose
    /// tree is the file `m` (or `d` for a removal).
    fn deliver(work: &Path, file: &str, text: &str) {
        for f in ["m", "d"] {
            let _ = std::fs::remove_file(work.join(f));
        }
        std::fs::write(work.join(file), text).unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", "mail"]);
        git(
            work,
            &["push", "-q", "-f", "origin", "HEAD:refs/heads/master"],
        );
    }

    fn mail(n: u32) -> String {
        format!("Message-ID: <m{n}@example.org>\nSubject: mail {n}\n\nbody {n}\n")
    }

    fn epoch(inbox: &Path, n: u32) -> PathBuf {
        let bare = inbox.join(format!("git/{n}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        let work = inbox.join(format!("work{n}"));
        git(
            inbox,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        work
    }

    struct Taken {
        seen: RefCell<HashSet<String>>,
        cursor: RefCell<Option<String>>,
    }

    fn fetch(src: &mut PublicInboxSource, taken: &Taken) -> (Vec<String>, FetchStats) {
        let mut got = Vec::new();
        let is_seen = |item: &str| taken.seen.borrow().contains(item);
        let cursor = taken.cursor.borrow().clone();
        let stats = src
            .fetch(
                &Resume {
                    cursor: cursor.as_deref(),
                    seen: &is_seen,
                },
                &mut |m| {
                    taken.seen.borrow_mut().insert(m.item.clone());
                    *taken.cursor.borrow_mut() = Some(m.cursor.clone());
                    got.push(String::from_utf8(m.bytes).unwrap());
                    Ok(Flow::Continue)
                },
            )
            .unwrap();
        if let Some(c) = &stats.cursor {
            *taken.cursor.borrow_mut() = Some(c.clone());
        }
        (got, stats)
    }

    #[test]
    fn reads_new_commits_new_epochs_and_rewritten_epochs_once() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let w0 = epoch(&inbox, 0);
        deliver(&w0, "m", &mail(1));
        deliver(&w0, "m", &mail(2));
        let mut src = PublicInboxSource::new(inbox.clone(), 1 << 20);
        let taken = Taken {
            seen: RefCell::default(),
            cursor: RefCell::default(),
        };
        let (got, _) = fetch(&mut src, &taken);
        assert_eq!(got, [mail(1), mail(2)]);
        // Nothing new: nothing read.
        assert!(fetch(&mut src, &taken).0.is_empty());
        // A removal, a new mail, and a new epoch.
        deliver(&w0, "d", &mail(1));
        deliver(&w0, "m", &mail(3));
        let w1 = epoch(&inbox, 1);
        deliver(&w1, "m", &mail(4));
        let (got, _) = fetch(&mut src, &taken);
        assert_eq!(got, [mail(3), mail(4)]);
        // Epoch 0 rewritten (mail 2 purged: public-inbox-purge leaves an
        // empty `m`): re-read, only mail 5 is new.
        git(&w0, &["checkout", "-q", "--orphan", "fresh"]);
        deliver(&w0, "m", &mail(1));
        deliver(&w0, "m", "");
        deliver(&w0, "m", &mail(3));
        deliver(&w0, "m", &mail(5));
        let (got, stats) = fetch(&mut src, &taken);
        assert_eq!(got, [mail(5)]);
        assert_eq!(stats.skipped_seen, 2);
        assert!(
            stats.warnings[0].contains("epoch 0 was rewritten"),
            "{stats:?}"
        );
    }

    #[test]
    fn an_over_limit_mail_is_handed_over_whole_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let w0 = epoch(&inbox, 0);
        deliver(&w0, "m", &mail(1));
        let limit = mail(1).len() as u64 - 1;
        let mut src = PublicInboxSource::new(inbox, limit);
        let (got, stats) = fetch_all(&mut src, None).unwrap();
        assert!(stats.warnings.is_empty(), "{stats:?}");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, mail(1).as_bytes());
        let big = got[0].oversize.clone().unwrap();
        assert_eq!((big.size, big.reread), (limit + 1, Reread::Held));
    }

    #[test]
    fn an_inbox_url_is_mirrored_into_the_directory_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let w0 = epoch(&inbox, 0);
        deliver(&w0, "m", &mail(1));
        let url = format!("file://{}", inbox.display());
        let local = dir.path().join("mirror");
        let mut src = PublicInboxSource::new(local.clone(), 1 << 20).with_url(Some(url.clone()));
        let taken = Taken {
            seen: RefCell::default(),
            cursor: RefCell::default(),
        };
        assert_eq!(fetch(&mut src, &taken).0, [mail(1)]);
        // No epoch 1 upstream: probing stopped there and left nothing.
        assert!(!local.join("git/1.git").exists());
        // More mail and a new epoch upstream: only they are read.
        deliver(&w0, "m", &mail(2));
        let w1 = epoch(&inbox, 1);
        deliver(&w1, "m", &mail(3));
        assert_eq!(fetch(&mut src, &taken).0, [mail(2), mail(3)]);
        assert_eq!(
            git(&local.join("git/1.git"), &["rev-parse", "master"]),
            git(&inbox.join("git/1.git"), &["rev-parse", "master"])
        );
        // An inbox that is not there: an infrastructure error naming it.
        let mut gone = PublicInboxSource::new(dir.path().join("other"), 1 << 20)
            .with_url(Some(format!("{url}-gone")));
        let e = fetch_all(&mut gone, None).unwrap_err();
        assert!(e.is_infrastructure(), "{e}");
        assert!(e.to_string().contains("inbox-gone/git/0.git"), "{e}");
        assert!(!dir.path().join("other/git/0.git").exists());
    }

    #[test]
    fn epochs_come_from_the_manifest_or_the_inbox_layout() {
        let manifest = br#"{
            "/hello/git/0.git": {"fingerprint": "a"},
            "/hello/git/2.git": {"fingerprint": "b"},
            "/hello/git/1.git": {},
            "/other/git/7.git": {},
            "/hello/all.git": {}
        }"#;
        assert_eq!(manifest_epochs(manifest, "hello").unwrap(), [0, 1, 2]);
        // Behind a proxy that renamed the inbox: every epoch listed.
        assert_eq!(manifest_epochs(manifest, "lists").unwrap(), [0, 1, 2, 7]);
        assert!(manifest_epochs(b"[1]", "hello").is_err());
        assert!(manifest_epochs(b"\x1f\x8b", "hello").is_err());
        assert_eq!(
            epoch_url("https://lore.kernel.org/lkml", 3),
            "https://lore.kernel.org/lkml/3"
        );
        assert_eq!(
            epoch_url("git://example.org/lkml", 3),
            "git://example.org/lkml/git/3.git"
        );
        assert_eq!(
            epoch_url("file:///srv/lkml", 0),
            "file:///srv/lkml/git/0.git"
        );
    }

    #[test]
    fn a_directory_that_is_not_an_inbox_and_a_bad_cursor_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = PublicInboxSource::new(dir.path().to_owned(), 1 << 20);
        let e = fetch_all(&mut src, None).unwrap_err();
        assert!(e.to_string().contains("public-inbox v2 inbox"), "{e}");
        let e = parse_cursor("k", "0=nothex").unwrap_err().to_string();
        assert!(e.contains("is not EPOCH=COMMIT"), "{e}");
        let c = parse_cursor("k", &format!("0={},3={}", "a".repeat(40), "b".repeat(40))).unwrap();
        assert_eq!(
            format_cursor(&c),
            format!("0={},3={}", "a".repeat(40), "b".repeat(40))
        );
    }
}
