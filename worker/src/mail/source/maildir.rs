//! Maildir as a mail source: `new/` and `cur/`, read-only.
//!
//! The mailbox belongs to the delivery agent and the user's mail client:
//! patchline never moves, renames or flags a file. An item is the file's
//! unique name (without the `:2,FLAGS` suffix), so a mail a client moved from
//! `new/` to `cur/`, or flagged, is still the same item.

use super::{Error, FetchStats, Flow, MailSource, Oversize, RawMail, Reread, Resume, Sink, mbox};
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct MaildirSource {
    path: PathBuf,
    max_mail_size: u64,
}

/// The unique part of a Maildir file name.
fn unique_name(file_name: &str) -> &str {
    file_name.split(':').next().unwrap_or(file_name)
}

/// Maildir names start with the delivery time in seconds: sort by it, then
/// by name, so mails come in delivery order.
fn delivery_order(name: &str) -> (u64, &str) {
    let secs = name
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    (secs, name)
}

impl MaildirSource {
    pub fn new(path: PathBuf, max_mail_size: u64) -> Self {
        Self {
            path,
            max_mail_size,
        }
    }

    fn list(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.path.join(sub);
            let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
                path: format!(
                    "{} (is this a Maildir? it needs new/ and cur/)",
                    dir.display()
                ),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    out.push((unique_name(&name).to_owned(), entry.path()));
                }
            }
        }
        out.sort_by(|a, b| delivery_order(&a.0).cmp(&delivery_order(&b.0)));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// Finds an item again after it vanished (a client moved or flagged it).
    fn relocate(&self, item: &str) -> Option<PathBuf> {
        ["new", "cur"].iter().find_map(|sub| {
            std::fs::read_dir(self.path.join(sub)).ok()?.find_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().to_string_lossy().into_owned();
                (unique_name(&name) == item).then(|| e.path())
            })
        })
    }

    fn read(&self, item: &str, path: &Path) -> Result<Option<Vec<u8>>, std::io::Error> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.relocate(item) {
                Some(p) => std::fs::read(p).map(Some),
                None => Ok(None),
            },
            Err(e) => Err(e),
        }
    }

    /// The first `mbox::HEAD_LIMIT` bytes of an over-limit mail, enough to
    /// name it (its header block).
    fn read_head(&self, path: &Path) -> Result<Option<Vec<u8>>, std::io::Error> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut head = Vec::new();
        file.take(mbox::HEAD_LIMIT as u64).read_to_end(&mut head)?;
        Ok(Some(head))
    }
}

impl MailSource for MaildirSource {
    fn key(&self) -> String {
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("maildir:{}", path.display())
    }

    fn fetch(&mut self, resume: &Resume<'_>, sink: &mut Sink<'_>) -> Result<FetchStats, Error> {
        let items = self.list()?;
        let mut stats = FetchStats {
            total_hint: Some(items.len() as u64),
            ..FetchStats::default()
        };
        for (item, path) in items {
            if (resume.seen)(&item) {
                stats.skipped_seen += 1;
                continue;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // Over the limit: its head is handed over and the file itself
            // is streamed into the archive, so it is recorded, never lost.
            let oversize = (size > self.max_mail_size).then(|| Oversize {
                size,
                reread: Reread::File(path.clone()),
            });
            let read = match &oversize {
                Some(_) => self.read_head(&path),
                None => self.read(&item, &path),
            };
            let bytes = match read {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    stats.warnings.push(format!(
                        "maildir {}: mail {item} disappeared while being read (deleted by a mail client?): it will be taken if it comes back",
                        self.path.display()
                    ));
                    continue;
                }
                Err(source) => {
                    return Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            let sub = path
                .parent()
                .and_then(Path::file_name)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let raw = RawMail {
                bytes,
                origin: format!("maildir {} {sub}/{item}", self.path.display()),
                item: item.clone(),
                cursor: item.clone(),
                warnings: Vec::new(),
                oversize,
            };
            stats.delivered += 1;
            match sink(raw) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break,
                Err(source) => return Err(Error::Sink { item, source }),
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::source::fetch_all;
    use std::cell::RefCell;
    use std::collections::HashSet;

    fn maildir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        dir
    }

    fn fetch(
        src: &mut MaildirSource,
        seen: &RefCell<HashSet<String>>,
    ) -> (Vec<RawMail>, FetchStats) {
        let mut got = Vec::new();
        let is_seen = |item: &str| seen.borrow().contains(item);
        let stats = src
            .fetch(
                &Resume {
                    cursor: None,
                    seen: &is_seen,
                },
                &mut |m| {
                    seen.borrow_mut().insert(m.item.clone());
                    got.push(m);
                    Ok(Flow::Continue)
                },
            )
            .unwrap();
        (got, stats)
    }

    #[test]
    fn reads_new_and_cur_in_delivery_order_never_tmp() {
        let dir = maildir();
        let p = dir.path();
        std::fs::write(p.join("new/1700000002.M2P1.host"), "Subject: two\n\n2\n").unwrap();
        std::fs::write(
            p.join("cur/1700000001.M1P1.host:2,S"),
            "Subject: one\n\n1\n",
        )
        .unwrap();
        std::fs::write(p.join("tmp/1700000000.M0P1.host"), "Subject: partial").unwrap();
        std::fs::write(p.join("new/.hidden"), "x").unwrap();
        let mut src = MaildirSource::new(p.to_path_buf(), 1 << 20);
        let seen = RefCell::new(HashSet::new());
        let (got, stats) = fetch(&mut src, &seen);
        let items: Vec<&str> = got.iter().map(|m| m.item.as_str()).collect();
        assert_eq!(items, ["1700000001.M1P1.host", "1700000002.M2P1.host"]);
        assert_eq!(got[0].bytes, b"Subject: one\n\n1\n");
        assert_eq!(stats.total_hint, Some(2));
        // A client moves and flags a mail: same item, not delivered again.
        std::fs::rename(
            p.join("new/1700000002.M2P1.host"),
            p.join("cur/1700000002.M2P1.host:2,RS"),
        )
        .unwrap();
        std::fs::write(p.join("new/1700000003.M3P1.host"), "Subject: three\n\n3\n").unwrap();
        let (again, stats) = fetch(&mut src, &seen);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].item, "1700000003.M3P1.host");
        assert_eq!(stats.skipped_seen, 2);
        // Read-only: nothing was moved by patchline.
        assert!(p.join("new/1700000003.M3P1.host").exists());
    }

    #[test]
    fn missing_dirs_and_oversized_mails() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = MaildirSource::new(dir.path().to_path_buf(), 10);
        let err = fetch_all(&mut src, None).unwrap_err().to_string();
        assert!(err.contains("new") && err.contains("Maildir"), "{err}");
        let dir = maildir();
        std::fs::write(dir.path().join("new/1.a"), "Subject: far too large\n\n").unwrap();
        let mut src = MaildirSource::new(dir.path().to_path_buf(), 10);
        let seen = RefCell::new(HashSet::new());
        let (got, stats) = fetch(&mut src, &seen);
        // Handed over (never skipped) with its head and the file to stream.
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(got.len(), 1);
        let big = got[0].oversize.clone().unwrap();
        assert_eq!(big.size, 24);
        assert_eq!(big.reread, Reread::File(dir.path().join("new/1.a")));
        let mut whole = Vec::new();
        assert_eq!(big.copy_to(&got[0].bytes, &mut whole).unwrap(), 24);
        assert_eq!(whole, b"Subject: far too large\n\n");
    }
}
