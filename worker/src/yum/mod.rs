//! Yum repositories: the RPMs of a build go into web-served repositories,
//! `<publish_dir>/<repo>/<target>/<arch>/` (SRPMs in `src/`), with
//! `createrepo_c` metadata and a ready `<repo>-<target>.repo` file.
//!
//! A client never sees half a repository: each publish builds a complete
//! new snapshot directory (earlier packages hard-linked, new ones copied,
//! metadata generated), then swaps the `<target>` symlink to it with one
//! rename. Only the newest `keep` builds of each package stay. It knows
//! nothing of the state database: the publish stage says what to publish.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("publish: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("publish: createrepo_c failed for {path}: cannot run createrepo_c: {source}")]
    CreaterepoSpawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// createrepo_c ran and failed: the tail of its stderr says why.
    #[error("publish: createrepo_c failed for {path}: {stderr}")]
    Createrepo { path: PathBuf, stderr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRepo {
    pub repo: String,
    pub target: String,
    /// The directory served (the symlink).
    pub path: String,
    pub url: String,
    pub repo_file: String,
    pub repo_file_url: String,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestLink {
    pub repo: String,
    pub path: String,
    pub url: String,
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_owned(),
        source,
    }
}

/// `name` of `name-version-release.arch.rpm`.
pub fn package_name(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".rpm")?;
    let (nvr, _arch) = stem.rsplit_once('.')?;
    let (nv, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = nv.rsplit_once('-')?;
    Some(name)
}

/// `arch` of `name-version-release.arch.rpm` (`src` for source RPMs).
pub fn package_arch(file: &str) -> Option<&str> {
    file.strip_suffix(".rpm")?.rsplit_once('.').map(|(_, a)| a)
}

pub fn publish_one(
    config: &Config,
    root: &Path,
    run: i64,
    repo: &str,
    target: &str,
    files: &[PathBuf],
) -> Result<PublishedRepo, Error> {
    let repo_dir = root.join(repo);
    let snapshots = repo_dir.join(".snapshots");
    let live = repo_dir.join(target);
    let next = snapshots.join(format!("{target}-run{run}"));
    if next.exists() {
        // A re-run of the same run's stage: start that snapshot afresh.
        std::fs::remove_dir_all(&next).map_err(write_err(&next))?;
    }
    std::fs::create_dir_all(&next).map_err(write_err(&next))?;
    // Earlier packages, hard-linked from the live snapshot.
    let mut by_dir: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    if live.exists() {
        for entry in walk_rpms(&live) {
            let rel = entry.strip_prefix(&live).unwrap_or(&entry).to_path_buf();
            let dir = rel
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_dir.entry(dir).or_default().push((entry.clone(), name));
        }
    }
    // New packages, by architecture directory.
    for file in files {
        let (name, arch) = name_and_arch(file);
        by_dir.entry(arch).or_default().push((file.clone(), name));
    }
    let mut packages = Vec::new();
    for (dir, entries) in by_dir {
        let dest = next.join(&dir);
        std::fs::create_dir_all(&dest).map_err(write_err(&dest))?;
        // Newest last: earlier snapshot first, then this run's files.
        let kept = keep_newest(&entries, config.publish.keep);
        for (src, name) in kept {
            let to = dest.join(&name);
            if to.exists() {
                continue;
            }
            link_or_copy(&src, &to)?;
            packages.push(format!("{dir}/{name}"));
        }
    }
    packages.sort();
    for arch_dir in std::fs::read_dir(&next).map_err(write_err(&next))? {
        let path = arch_dir.map_err(write_err(&next))?.path();
        if path.is_dir() {
            createrepo(
                &path,
                live.join(path.file_name().unwrap_or_default())
                    .join("repodata")
                    .as_path(),
            )?;
        }
    }
    switch_link(&repo_dir, target, run)?;
    let base_url = config.publish_base_url();
    let url = format!("{base_url}/{repo}/{target}");
    let repo_file = root.join(format!("{repo}-{target}.repo"));
    let text = format!(
        "[patchline-{repo}-{target}]\nname=patchline {repo} ({target})\nbaseurl={url}/$basearch/\nenabled=1\ngpgcheck=0\nmetadata_expire=1h\n\n[patchline-{repo}-{target}-source]\nname=patchline {repo} ({target}) sources\nbaseurl={url}/src/\nenabled=0\ngpgcheck=0\n"
    );
    let tmp = root.join(format!(".{repo}-{target}.repo.tmp"));
    std::fs::write(&tmp, text).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, &repo_file).map_err(write_err(&repo_file))?;
    Ok(PublishedRepo {
        repo: repo.to_owned(),
        target: target.to_owned(),
        path: live.display().to_string(),
        url,
        repo_file: repo_file.display().to_string(),
        repo_file_url: format!("{base_url}/{repo}-{target}.repo"),
        packages,
    })
}

/// Points `<repo_dir>/<name>` at `.snapshots/<name>-run<run>` with one
/// rename of a symlink (a client sees the old or the new snapshot, never a
/// mix), then removes the snapshots of `name` no link points to any more.
fn switch_link(repo_dir: &Path, name: &str, run: i64) -> Result<(), Error> {
    let live = repo_dir.join(name);
    let snapshots = repo_dir.join(".snapshots");
    let link_tmp = repo_dir.join(format!(".{name}.link-{run}"));
    let _ = std::fs::remove_file(&link_tmp);
    let relative = Path::new(".snapshots").join(format!("{name}-run{run}"));
    std::os::unix::fs::symlink(&relative, &link_tmp).map_err(write_err(&link_tmp))?;
    if live.exists() && !live.is_symlink() {
        // A directory left by hand where the link goes: keep it aside.
        let aside = repo_dir.join(format!(".{name}.replaced-{run}"));
        std::fs::rename(&live, &aside).map_err(write_err(&live))?;
    }
    std::fs::rename(&link_tmp, &live).map_err(write_err(&live))?;
    let current = repo_dir.join(&relative);
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}-run")) && e.path() != current {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// `<repo>/latest/<target>/<arch>/`: only the packages this run built,
/// hard-linked from the published snapshots, switched like a target.
pub fn publish_latest(
    root: &Path,
    run: i64,
    repo: &str,
    files: &[(String, Vec<PathBuf>)],
) -> Result<String, Error> {
    let repo_dir = root.join(repo);
    let next = repo_dir.join(".snapshots").join(format!("latest-run{run}"));
    if next.exists() {
        std::fs::remove_dir_all(&next).map_err(write_err(&next))?;
    }
    for (target, files) in files {
        for file in files {
            let (name, arch) = name_and_arch(file);
            let dest = next.join(target).join(&arch);
            std::fs::create_dir_all(&dest).map_err(write_err(&dest))?;
            let to = dest.join(&name);
            let published = repo_dir.join(target).join(&arch).join(&name);
            let src = if published.exists() {
                published
            } else {
                file.clone()
            };
            link_or_copy(&src, &to)?;
        }
    }
    switch_link(&repo_dir, "latest", run)?;
    Ok(repo_dir.join("latest").display().to_string())
}

/// The file name of a package and the architecture directory it goes to.
fn name_and_arch(file: &Path) -> (String, String) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let arch = package_arch(&name).unwrap_or("noarch").to_owned();
    (name, arch)
}

/// A hard link (same file system: no copy, no space), else a copy.
fn link_or_copy(src: &Path, to: &Path) -> Result<(), Error> {
    if std::fs::hard_link(src, to).is_err() {
        std::fs::copy(src, to).map_err(write_err(to))?;
    }
    Ok(())
}

/// The newest `keep` files of each package name; `entries` are oldest
/// first.
fn keep_newest(entries: &[(PathBuf, String)], keep: usize) -> Vec<(PathBuf, String)> {
    let mut by_name: BTreeMap<&str, Vec<&(PathBuf, String)>> = BTreeMap::new();
    for e in entries {
        by_name
            .entry(package_name(&e.1).unwrap_or(&e.1))
            .or_default()
            .push(e);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_name {
        // The same file name twice (re-published): one copy.
        list.dedup_by(|a, b| a.1 == b.1);
        let skip = list.len().saturating_sub(keep.max(1));
        out.extend(list.into_iter().skip(skip).cloned());
    }
    out
}

fn walk_rpms(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() && !path.ends_with("repodata") {
                out.extend(walk_rpms(&path));
            } else if path.extension().is_some_and(|e| e == "rpm") {
                out.push(path);
            }
        }
    }
    out
}

/// `createrepo_c`, reusing the previous metadata (`--update`) when there is
/// some.
fn createrepo(dir: &Path, previous: &Path) -> Result<(), Error> {
    let mut cmd = Command::new("createrepo_c");
    cmd.arg("--quiet");
    if previous.join("repomd.xml").exists() {
        cmd.arg("--update")
            .arg("--update-md-path")
            .arg(previous.parent().unwrap_or(previous));
    }
    let out = cmd
        .arg(dir)
        .output()
        .map_err(|source| Error::CreaterepoSpawn {
            path: dir.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Createrepo {
            path: dir.to_owned(),
            stderr: crate::rpm::srpm::last_lines(&String::from_utf8_lossy(&out.stderr), 5),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_and_arches() {
        let cases = [
            ("hello-1.0-1.fc40.x86_64.rpm", Some("hello"), Some("x86_64")),
            (
                "hello-debuginfo-1.0-1.20261125gitabc.el9.x86_64.rpm",
                Some("hello-debuginfo"),
                Some("x86_64"),
            ),
            (
                "qemu-kvm-9.1.0-3.el9.src.rpm",
                Some("qemu-kvm"),
                Some("src"),
            ),
            ("noext", None, None),
        ];
        for (file, name, arch) in cases {
            assert_eq!(package_name(file), name, "{file}");
            assert_eq!(package_arch(file), arch, "{file}");
        }
    }

    #[test]
    fn keeps_the_newest_builds_of_each_package() {
        let e = |n: &str| (PathBuf::from(n), n.to_owned());
        let entries = vec![
            e("a-1-1.x.rpm"),
            e("b-1-1.x.rpm"),
            e("a-1-2.x.rpm"),
            e("a-1-3.x.rpm"),
            e("a-1-3.x.rpm"),
        ];
        let kept: Vec<String> = keep_newest(&entries, 2).into_iter().map(|k| k.1).collect();
        assert_eq!(kept, ["a-1-2.x.rpm", "a-1-3.x.rpm", "b-1-1.x.rpm"]);
    }
}
