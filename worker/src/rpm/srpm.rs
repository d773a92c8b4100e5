//! Source RPMs from a commit: the tree as `<name>-<version>.tar.gz` (as the
//! spec's `Source0` expects), the spec with its `Release` stamped
//! `<base>.<count>.<YYYYMMDD>git<shortsha>` so every build of a branch is
//! newer than the last, and `rpmbuild -bs` in a private `_topdir`.
//!
//! The count (commits reachable from the commit built, `git rev-list
//! --count`) comes first because rpm compares releases segment by segment:
//! with the date first, two builds of one day were ordered by their hashes
//! and `dnf upgrade` could move a user backwards. A branch only grows, so
//! its count does; the same commit always gets the same count (an NVR is
//! reproducible), and a rebuild on a later day is still newer by its date.
//!
//! Processes are spawned with argument vectors only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spec {spec}: no `Release:` line")]
    NoRelease { spec: String },
    #[error("spec {spec}: {message}")]
    Spec { spec: String, message: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rpmbuild -bs failed for {spec}: {message}")]
    Rpmbuild { spec: String, message: String },
    /// rpmbuild could not be started, or its log not written.
    #[error(transparent)]
    Run(#[from] crate::live_log::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open repository {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// A gitoxide call failed; `what` names the operation.
    #[error("repository {path}: cannot {what}: {source}")]
    Git {
        path: PathBuf,
        what: String,
        #[source]
        source: gix::Error,
    },
    #[error("repository {path}: {commit:?} is not a commit id: {source}")]
    BadCommit {
        path: PathBuf,
        commit: String,
        #[source]
        source: gix::Error,
    },
}

/// What a stamped release carries after the spec's own base.
pub struct Stamp<'a> {
    /// Commits reachable from the commit built ([`commit_count`]).
    pub count: u64,
    /// `YYYYMMDD` (UTC) of the build.
    pub date: &'a str,
    /// The commit's short id.
    pub short: &'a str,
}

/// Rewrites the `Release:` value `1%{?dist}` as
/// `1.<count>.<date>git<short>%{?dist}` (the macro tail is kept as written).
pub fn stamp_release(spec: &str, spec_name: &str, stamp: &Stamp<'_>) -> Result<String, Error> {
    let Stamp { count, date, short } = stamp;
    let mut out = String::with_capacity(spec.len() + 32);
    let mut stamped = false;
    for line in spec.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_release = trimmed.len() > 8 && trimmed[..8].eq_ignore_ascii_case("release:");
        if !stamped && is_release {
            let value = trimmed[8..].trim();
            let (base, tail) = match value.find('%') {
                Some(at) => (value[..at].trim(), &value[at..]),
                None => (value, ""),
            };
            let base = if base.is_empty() { "0" } else { base };
            let eol = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!(
                "Release:        {base}.{count}.{date}git{short}{tail}{eol}"
            ));
            stamped = true;
        } else {
            out.push_str(line);
        }
    }
    if !stamped {
        return Err(Error::NoRelease {
            spec: spec_name.to_owned(),
        });
    }
    Ok(out)
}

/// The repository at `repo_path` and the id `commit` names in it.
fn open_at(repo_path: &Path, commit: &str) -> Result<(gix::Repository, gix::ObjectId), Error> {
    let repo = gix::open(repo_path).map_err(|source| Error::Open {
        path: repo_path.to_owned(),
        source,
    })?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|source| Error::BadCommit {
        path: repo_path.to_owned(),
        commit: commit.to_owned(),
        source,
    })?;
    Ok((repo, id))
}

/// The number of commits reachable from `commit` (as `git rev-list
/// --count`): the counter of [`stamp_release`].
pub fn commit_count(repo_path: &Path, commit: &str) -> Result<u64, Error> {
    let (repo, id) = open_at(repo_path, commit)?;
    let git = |source: gix::Error| Error::Git {
        path: repo_path.to_owned(),
        what: format!("count the commits of {commit}"),
        source,
    };
    let mut count = 0;
    for info in repo.rev_walk([id]).all().map_err(git)? {
        info.map_err(git)?;
        count += 1;
    }
    Ok(count)
}

/// `%{name}` and `%{version}` of a spec, as rpm itself expands them.
pub fn name_version(spec: &Path) -> Result<(String, String), Error> {
    let out = Command::new("rpmspec")
        .args(["-q", "--srpm", "--qf", "%{name} %{version}\n"])
        .arg(spec)
        .output()
        .map_err(|source| Error::Spawn {
            program: "rpmspec",
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (out.status.success(), words.next(), words.next()) {
        (true, Some(n), Some(v)) => Ok((n.to_owned(), v.to_owned())),
        _ => Err(Error::Spec {
            spec: spec.display().to_string(),
            message: last_lines(&String::from_utf8_lossy(&out.stderr), 5),
        }),
    }
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Writes the tree of `commit` as a gzipped tar under `prefix/`.
pub fn write_tarball(
    repo_path: &Path,
    commit: &str,
    prefix: &str,
    out: &Path,
) -> Result<(), Error> {
    let git = |what: String, source| Error::Git {
        path: repo_path.to_owned(),
        what,
        source,
    };
    let (repo, id) = open_at(repo_path, commit)?;
    let tree = repo
        .find_commit(id)
        .and_then(|c| c.tree())
        .map_err(|e| git(format!("read the tree of commit {commit}"), e))?;
    let entries = tree
        .traverse()
        .breadthfirst
        .files()
        .map_err(|e| git(format!("list the files of commit {commit}"), e))?;
    let write_err = |source| Error::Write {
        path: out.to_owned(),
        source,
    };
    let file = std::fs::File::create(out).map_err(write_err)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        let path = format!("{prefix}/{}", entry.filepath);
        let kind = entry.mode.kind();
        use gix::objs::tree::EntryKind;
        let mut header = tar::Header::new_gnu();
        match kind {
            EntryKind::Tree => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &path, std::io::empty())
                    .map_err(write_err)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => {
                let data = repo
                    .find_blob(entry.oid)
                    .map(|mut b| b.take_data())
                    .map_err(|e| git(format!("read {} at {commit}", entry.filepath), e))?;
                if kind == EntryKind::Link {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_mode(0o777);
                    let target = String::from_utf8_lossy(&data).into_owned();
                    tar.append_link(&mut header, &path, target)
                        .map_err(write_err)?;
                } else {
                    header.set_size(data.len() as u64);
                    header.set_mode(if kind == EntryKind::BlobExecutable {
                        0o755
                    } else {
                        0o644
                    });
                    tar.append_data(&mut header, &path, &data[..])
                        .map_err(write_err)?;
                }
            }
            // Submodules are not part of a source tarball.
            EntryKind::Commit => {}
        }
    }
    let gz = tar.into_inner().map_err(write_err)?;
    let mut file = gz.finish().map_err(write_err)?;
    file.flush().map_err(write_err)?;
    Ok(())
}

/// `rpmbuild -bs`, its output in `log` (and in the caller's span as it
/// comes, each line after `label`): returns the path of the written
/// `.src.rpm`.
pub fn build_srpm(topdir: &Path, spec: &Path, log: &Path, label: &str) -> Result<PathBuf, Error> {
    let mut rpmbuild = Command::new("rpmbuild");
    rpmbuild
        .arg("-bs")
        // Debian's rpm database does not know the host's build tools.
        .arg("--nodeps")
        .arg("--define")
        .arg(format!("_topdir {}", topdir.display()))
        .arg(spec);
    let ran = crate::live_log::run(
        &mut rpmbuild,
        &crate::live_log::Options {
            label,
            log,
            timeout: None,
            leftovers: Some(&topdir.join("rpmbuild.pgid")),
            tail_lines: 8,
            keep: |line| line.starts_with("Wrote: "),
        },
    )?;
    let written = ran
        .kept
        .iter()
        .find_map(|l| l.strip_prefix("Wrote: "))
        .map(|p| PathBuf::from(p.trim()));
    match (ran.success(), written) {
        (true, Some(path)) => Ok(path),
        _ => Err(Error::Rpmbuild {
            spec: spec.display().to_string(),
            message: ran.tail.join(" | "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_is_stamped_keeping_the_macro_tail() {
        let cases = [
            (
                "Release:        1%{?dist}\n",
                "Release:        1.42.20261125gitabc1234%{?dist}\n",
            ),
            ("release: 3\n", "Release:        3.42.20261125gitabc1234\n"),
            (
                "Release: 0.rc1%{?dist}",
                "Release:        0.rc1.42.20261125gitabc1234%{?dist}",
            ),
            (
                "Release: %{rel}%{?dist}\n",
                "Release:        0.42.20261125gitabc1234%{rel}%{?dist}\n",
            ),
        ];
        let stamp = Stamp {
            count: 42,
            date: "20261125",
            short: "abc1234",
        };
        for (input, want) in cases {
            let spec = format!("Name: x\n{input}");
            let got = stamp_release(&spec, "x.spec", &stamp).unwrap();
            assert_eq!(got, format!("Name: x\n{want}"), "{input:?}");
        }
        let e = stamp_release("Name: x\n", "x.spec", &stamp)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "spec x.spec: no `Release:` line");
    }

    /// Four builds of one branch on one day, in commit order, whatever
    /// their hashes: each stamped release sorts after the one before (the
    /// order `dnf upgrade` follows), and the count is git's own.
    #[test]
    fn releases_of_a_branch_sort_newest_last_on_one_day() {
        use crate::rpm::vercmp::rpmvercmp;
        use crate::testkit::git;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        let mut releases = Vec::new();
        for n in 1..=11 {
            std::fs::write(d.join("f"), format!("{n}\n")).unwrap();
            git(d, &["add", "f"]);
            git(d, &["commit", "-q", "-m", &format!("change {n}")]);
            let head = String::from_utf8(git(d, &["rev-parse", "HEAD"])).unwrap();
            let head = head.trim();
            let count = commit_count(d, head).unwrap();
            let by_git = String::from_utf8(git(d, &["rev-list", "--count", head])).unwrap();
            assert_eq!(count.to_string(), by_git.trim());
            let stamp = Stamp {
                count,
                date: "20261202",
                short: &head[..7],
            };
            let spec = stamp_release("Release: 3%{?dist}\n", "x.spec", &stamp).unwrap();
            let release = spec["Release:".len()..].trim().replace("%{?dist}", ".el9");
            releases.push(release);
        }
        // 9 -> 10 -> 11: numerically, not as text.
        for pair in releases.windows(2) {
            assert_eq!(
                rpmvercmp(&pair[0], &pair[1]),
                std::cmp::Ordering::Less,
                "{pair:?}"
            );
        }
        let e = commit_count(d, "0123456789abcdef0123456789abcdef01234567").unwrap_err();
        assert!(
            e.to_string().contains("count the commits of 0123456"),
            "{e}"
        );
    }
}
