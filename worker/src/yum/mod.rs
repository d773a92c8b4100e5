//! Yum repositories: the RPMs of a build go into web-served repositories,
//! one per repository, branch and target by default
//! (`<publish_dir>/<repo>/<branch>/<target>/<arch>/`, SRPMs in `src/`), or
//! one per repository and target for all branches
//! (`<publish_dir>/<repo>/<target>/<arch>/`, `[publish] per_branch =
//! false`), with `createrepo_c` metadata and a ready `.repo` file. As in
//! Fedora's and EPEL's repositories, every architecture directory also
//! holds the noarch packages, so the `.repo` file's `$basearch` URL
//! installs everything.
//!
//! A client never sees half a repository: each publish builds a complete
//! new snapshot directory (earlier packages hard-linked, new ones copied,
//! metadata generated), then swaps the `<target>` symlink to it with one
//! rename. Only the newest `keep` builds of each package and branch stay,
//! newest as rpm orders them ([`crate::rpm::vercmp`]). It knows nothing of
//! the state database: the publish stage says what to publish.

use crate::config::Config;
use crate::rpm::vercmp::compare_version_release;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
    #[error("publish: createrepo_c failed for {path}: {source}")]
    CreaterepoSpawn {
        path: PathBuf,
        #[source]
        source: crate::live_log::Error,
    },
    /// createrepo_c ran and failed: the tail of its stderr says why.
    #[error("publish: createrepo_c failed for {path}: {stderr}")]
    Createrepo { path: PathBuf, stderr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRepo {
    pub repo: String,
    /// The branch this repository follows; `None` when one repository
    /// takes every branch (`[publish] per_branch = false`).
    #[serde(default)]
    pub branch: Option<String>,
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
    /// As [`PublishedRepo::branch`].
    #[serde(default)]
    pub branch: Option<String>,
    pub path: String,
    pub url: String,
}

/// One file to publish and the branch it was built from (`keep` counts
/// builds per branch, also when branches share a repository).
#[derive(Debug, Clone)]
pub struct Package {
    pub path: PathBuf,
    pub branch: String,
}

/// Which published repository: a repository's, or one branch's of it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub repo: &'a str,
    /// `Some` in the per-branch layout.
    pub branch: Option<&'a str>,
}

impl Scope<'_> {
    /// The branch as one path segment and id part (`stable/1.0` ->
    /// `stable_1.0`), the way the build stage names its work directories.
    fn branch_part(&self) -> Option<String> {
        self.branch.map(|b| b.replace('/', "_"))
    }

    /// Where its targets' links, `latest/` and `.snapshots/` live.
    pub fn dir(&self, root: &Path) -> PathBuf {
        match self.branch_part() {
            Some(b) => root.join(self.repo).join(b),
            None => root.join(self.repo),
        }
    }

    /// The same, as a URL path under the base URL.
    fn url_path(&self) -> String {
        match self.branch_part() {
            Some(b) => format!("{}/{b}", self.repo),
            None => self.repo.to_owned(),
        }
    }

    /// `<repo>[-<branch>]-<target>`: the `.repo` file's name and its
    /// section ids.
    fn stem(&self, target: &str) -> String {
        match self.branch_part() {
            Some(b) => format!("{}-{b}-{target}", self.repo),
            None => format!("{}-{target}", self.repo),
        }
    }

    fn title(&self, target: &str) -> String {
        match self.branch {
            Some(b) => format!("patchline {} {b} ({target})", self.repo),
            None => format!("patchline {} ({target})", self.repo),
        }
    }
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_owned(),
        source,
    }
}

/// `(name, version, release, arch)` of `name-version-release.arch.rpm`.
pub fn package_nvra(file: &str) -> Option<(&str, &str, &str, &str)> {
    let stem = file.strip_suffix(".rpm")?;
    let (nvr, arch) = stem.rsplit_once('.')?;
    let (nv, release) = nvr.rsplit_once('-')?;
    let (name, version) = nv.rsplit_once('-')?;
    Some((name, version, release, arch))
}

/// `name` of `name-version-release.arch.rpm`.
pub fn package_name(file: &str) -> Option<&str> {
    package_nvra(file).map(|p| p.0)
}

/// `arch` of `name-version-release.arch.rpm` (`src` for source RPMs).
pub fn package_arch(file: &str) -> Option<&str> {
    file.strip_suffix(".rpm")?.rsplit_once('.').map(|(_, a)| a)
}

/// A file of a snapshot being put together.
#[derive(Debug, Clone)]
struct Entry {
    /// Where it is now (the previous snapshot, or the build's output).
    src: PathBuf,
    name: String,
    branch: String,
}

/// The branch each package file of a snapshot came from, kept in the
/// snapshot (hidden: `patchline serve` and dnf never read it).
const BRANCHES_FILE: &str = ".branches";

fn read_branches(snapshot: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(snapshot.join(BRANCHES_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, b)| (f.to_owned(), b.to_owned()))
        .collect()
}

/// A snapshot's packages by kind: source, noarch, and per architecture.
#[derive(Default)]
struct Sorted {
    src: Vec<Entry>,
    noarch: Vec<Entry>,
    arch: BTreeMap<String, Vec<Entry>>,
}

impl Sorted {
    fn add(&mut self, entry: Entry) {
        match package_arch(&entry.name).unwrap_or("noarch") {
            "src" | "nosrc" => self.src.push(entry),
            "noarch" => self.noarch.push(entry),
            arch => self.arch.entry(arch.to_owned()).or_default().push(entry),
        }
    }

    /// The architecture directories: `arches` (configured) and those
    /// arch-specific packages need. Each gets the noarch packages too.
    fn dirs(&self, arches: &[String]) -> BTreeSet<String> {
        arches
            .iter()
            .cloned()
            .chain(self.arch.keys().cloned())
            .collect()
    }
}

pub fn publish_one(
    config: &Config,
    root: &Path,
    run: i64,
    scope: Scope<'_>,
    target: &str,
    files: &[Package],
) -> Result<PublishedRepo, Error> {
    let repo_dir = scope.dir(root);
    let snapshots = repo_dir.join(".snapshots");
    let live = repo_dir.join(target);
    let next = snapshots.join(format!("{target}-run{run}"));
    // A createrepo_c a killed publish left running would write into the
    // snapshot made afresh below: it is stopped first.
    let leftovers = snapshots.join(format!("{target}-run{run}.createrepo.pgid"));
    crate::live_log::stop_leftovers(&leftovers);
    if next.exists() {
        // A re-run of the same run's stage: start that snapshot afresh.
        std::fs::remove_dir_all(&next).map_err(write_err(&next))?;
    }
    std::fs::create_dir_all(&next).map_err(write_err(&next))?;
    // Earlier packages (hard-linked from the live snapshot), then this
    // run's: a file name met twice is one package (a re-published build).
    let mut sorted = Sorted::default();
    let mut seen = BTreeSet::new();
    let earlier_branches = read_branches(&live);
    let earlier = if live.exists() {
        walk_rpms(&live)
    } else {
        Vec::new()
    };
    let earlier = earlier.into_iter().map(|path| {
        let name = file_name(&path);
        let branch = earlier_branches.get(&name).cloned().unwrap_or_default();
        (path, name, branch)
    });
    let new = files
        .iter()
        .map(|f| (f.path.clone(), file_name(&f.path), f.branch.clone()));
    for (src, name, branch) in earlier.chain(new) {
        if seen.insert(name.clone()) {
            sorted.add(Entry { src, name, branch });
        }
    }
    let keep = config.publish.keep;
    let noarch = keep_newest(&sorted.noarch, keep);
    let mut placed: Vec<(String, Vec<Entry>)> = Vec::new();
    for arch in sorted.dirs(&config.publish_arches()) {
        let mut entries = sorted
            .arch
            .get(&arch)
            .map(|e| keep_newest(e, keep))
            .unwrap_or_default();
        entries.extend(noarch.iter().cloned());
        placed.push((arch, entries));
    }
    let src = keep_newest(&sorted.src, keep);
    if !src.is_empty() {
        placed.push(("src".to_owned(), src));
    }
    let mut packages = Vec::new();
    let mut branches = String::new();
    let mut listed = BTreeSet::new();
    for (dir, entries) in &placed {
        let dest = next.join(dir);
        std::fs::create_dir_all(&dest).map_err(write_err(&dest))?;
        for e in entries {
            link_or_copy(&e.src, &dest.join(&e.name))?;
            packages.push(format!("{dir}/{}", e.name));
            if listed.insert(e.name.clone()) {
                branches.push_str(&format!("{}\t{}\n", e.name, e.branch));
            }
        }
        createrepo(&dest, &live.join(dir).join("repodata"), &leftovers)?;
    }
    packages.sort();
    let manifest = next.join(BRANCHES_FILE);
    std::fs::write(&manifest, branches).map_err(write_err(&manifest))?;
    switch_link(&repo_dir, target, run)?;
    let base_url = config.publish_base_url();
    let url = format!("{base_url}/{}/{target}", scope.url_path());
    let stem = scope.stem(target);
    let title = scope.title(target);
    let repo_file = root.join(format!("{stem}.repo"));
    let text = format!(
        "[patchline-{stem}]\nname={title}\nbaseurl={url}/$basearch/\nenabled=1\ngpgcheck=0\nmetadata_expire=1h\n\n[patchline-{stem}-source]\nname={title} sources\nbaseurl={url}/src/\nenabled=0\ngpgcheck=0\n"
    );
    let tmp = root.join(format!(".{stem}.repo.tmp"));
    std::fs::write(&tmp, text).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, &repo_file).map_err(write_err(&repo_file))?;
    Ok(PublishedRepo {
        repo: scope.repo.to_owned(),
        branch: scope.branch.map(str::to_owned),
        target: target.to_owned(),
        path: live.display().to_string(),
        url,
        repo_file: repo_file.display().to_string(),
        repo_file_url: format!("{base_url}/{stem}.repo"),
        packages,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
                // Older snapshots, and what a killed publish left beside
                // them (`.createrepo.pgid`, `.createrepo.log`).
                let _ = if e.path().is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
            }
        }
    }
    Ok(())
}

/// `<scope>/latest/<target>/<arch>/`: only the packages this run built
/// (noarch ones in every architecture directory, as in the repositories),
/// hard-linked from the published snapshots, switched like a target.
pub fn publish_latest(
    config: &Config,
    root: &Path,
    run: i64,
    scope: Scope<'_>,
    files: &[(String, Vec<Package>)],
) -> Result<LatestLink, Error> {
    let repo_dir = scope.dir(root);
    let next = repo_dir.join(".snapshots").join(format!("latest-run{run}"));
    if next.exists() {
        std::fs::remove_dir_all(&next).map_err(write_err(&next))?;
    }
    for (target, files) in files {
        let mut sorted = Sorted::default();
        for f in files {
            sorted.add(Entry {
                src: f.path.clone(),
                name: file_name(&f.path),
                branch: f.branch.clone(),
            });
        }
        let mut placed: Vec<(String, Vec<Entry>)> = sorted
            .dirs(&config.publish_arches())
            .into_iter()
            .map(|arch| {
                let mut entries = sorted.arch.get(&arch).cloned().unwrap_or_default();
                entries.extend(sorted.noarch.iter().cloned());
                (arch, entries)
            })
            .collect();
        if !sorted.src.is_empty() {
            placed.push(("src".to_owned(), sorted.src.clone()));
        }
        for (dir, entries) in placed {
            let dest = next.join(target).join(&dir);
            std::fs::create_dir_all(&dest).map_err(write_err(&dest))?;
            for e in entries {
                let published = repo_dir.join(target).join(&dir).join(&e.name);
                let src = if published.exists() { published } else { e.src };
                link_or_copy(&src, &dest.join(&e.name))?;
            }
        }
    }
    switch_link(&repo_dir, "latest", run)?;
    Ok(LatestLink {
        repo: scope.repo.to_owned(),
        branch: scope.branch.map(str::to_owned),
        path: repo_dir.join("latest").display().to_string(),
        url: format!("{}/{}/latest/", config.publish_base_url(), scope.url_path()),
    })
}

/// Which layout `<publish_dir>/<repo>/` was last published in, so the
/// first run after a change can say so once ([`layout_change`]).
const LAYOUT_FILE: &str = ".layout";

fn layout_word(per_branch: bool) -> &'static str {
    if per_branch {
        "per-branch"
    } else {
        "one-for-all-branches"
    }
}

/// Records the layout `repo` is published in now and returns a one-line
/// note for the report when that changed since its last publish (a
/// publish directory from before layouts were recorded counts as
/// one-for-all-branches when it holds snapshots). A new repository gets no
/// note.
pub fn layout_change(config: &Config, root: &Path, repo: &str) -> Result<Option<String>, Error> {
    let per_branch = config.publish.per_branch;
    let repo_dir = root.join(repo);
    let marker = repo_dir.join(LAYOUT_FILE);
    let before = match std::fs::read_to_string(&marker) {
        Ok(word) => Some(word.trim() == layout_word(true)),
        // Published before the layout was recorded: the shared layout.
        Err(_) if repo_dir.join(".snapshots").is_dir() => Some(false),
        Err(_) => None,
    };
    std::fs::create_dir_all(&repo_dir).map_err(write_err(&repo_dir))?;
    std::fs::write(&marker, format!("{}\n", layout_word(per_branch)))
        .map_err(write_err(&marker))?;
    let base = config.publish_base_url();
    Ok(match before {
        Some(was) if was != per_branch && per_branch => Some(format!(
            "{repo}: repositories are now one per branch ({base}/{repo}/<branch>/<target>/, .repo files {repo}-<branch>-<target>.repo); {base}/{repo}/<target>/ is no longer updated: switch to your branch's .repo file ([publish] per_branch = false goes back)"
        )),
        Some(was) if was != per_branch => Some(format!(
            "{repo}: one repository now takes every branch ({base}/{repo}/<target>/, .repo files {repo}-<target>.repo); {base}/{repo}/<branch>/ is no longer updated: switch to the new .repo file"
        )),
        _ => None,
    })
}

/// A hard link (same file system: no copy, no space), else a copy.
fn link_or_copy(src: &Path, to: &Path) -> Result<(), Error> {
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(src, to).is_err() {
        std::fs::copy(src, to).map_err(write_err(to))?;
    }
    Ok(())
}

/// The newest `keep` builds of each package of each branch, newest as rpm
/// compares versions and releases (file names sort `3.10` before `3.9`).
/// Entries whose name does not parse are kept as they are.
fn keep_newest(entries: &[Entry], keep: usize) -> Vec<Entry> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        let name = package_name(&e.name).unwrap_or(&e.name);
        groups.entry((&e.branch, name)).or_default().push(e);
    }
    let mut out = Vec::new();
    for (_, mut list) in groups {
        // Stable: equal versions keep their order (earlier, then this run).
        list.sort_by(|a, b| {
            let vr = |e: &Entry| {
                package_nvra(&e.name)
                    .map(|(_, v, r, _)| (v.to_owned(), r.to_owned()))
                    .unwrap_or_default()
            };
            let (va, vb) = (vr(a), vr(b));
            compare_version_release((&va.0, &va.1), (&vb.0, &vb.1))
        });
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
/// some; in a process group of its own named in `leftovers` while it runs
/// (see [`crate::live_log::Options::leftovers`]), its output in
/// `leftovers` with `.log` for an extension.
fn createrepo(dir: &Path, previous: &Path, leftovers: &Path) -> Result<(), Error> {
    let mut cmd = Command::new("createrepo_c");
    cmd.arg("--quiet");
    if previous.join("repomd.xml").exists() {
        cmd.arg("--update")
            .arg("--update-md-path")
            .arg(previous.parent().unwrap_or(previous));
    }
    cmd.arg(dir);
    let log = leftovers.with_extension("log");
    let label = format!("createrepo_c {}", dir.display());
    let finished = crate::live_log::run(
        &mut cmd,
        &crate::live_log::Options {
            label: &label,
            log: &log,
            timeout: None,
            leftovers: Some(leftovers),
            tail_lines: 5,
            keep: |_| false,
        },
    )
    .map_err(|source| Error::CreaterepoSpawn {
        path: dir.to_owned(),
        source,
    })?;
    // What it said is in the tail kept, for a failure's message.
    let _ = std::fs::remove_file(&log);
    if !finished.success() {
        return Err(Error::Createrepo {
            path: dir.to_owned(),
            stderr: finished.tail.join("\n"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_and_arches() {
        assert_eq!(
            package_nvra("tiny-data-2.1-3.12.20261202gitabc.el9.noarch.rpm"),
            Some(("tiny-data", "2.1", "3.12.20261202gitabc.el9", "noarch"))
        );
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
    fn keeps_the_newest_builds_of_each_package_and_branch_in_rpm_order() {
        let e = |n: &str, branch: &str| Entry {
            src: PathBuf::from(n),
            name: n.to_owned(),
            branch: branch.to_owned(),
        };
        // Walked in file-name order, as a snapshot is: 3.10 before 3.9.
        let entries = vec![
            e("a-1-3.10.x.rpm", "master"),
            e("a-1-3.8.x.rpm", "master"),
            e("a-1-3.9.x.rpm", "master"),
            e("a-1-2.4.x.rpm", "stable"),
            e("b-1-1.x.rpm", "master"),
        ];
        let kept: Vec<String> = keep_newest(&entries, 2)
            .into_iter()
            .map(|k| k.name)
            .collect();
        // master keeps its two newest a's; stable's only build stays.
        assert_eq!(
            kept,
            [
                "a-1-3.9.x.rpm",
                "a-1-3.10.x.rpm",
                "b-1-1.x.rpm",
                "a-1-2.4.x.rpm"
            ]
        );
    }

    #[test]
    fn scopes_name_paths_urls_and_repo_ids() {
        let root = Path::new("/p");
        let shared = Scope {
            repo: "tiny",
            branch: None,
        };
        let branch = Scope {
            repo: "tiny",
            branch: Some("stable/1.0"),
        };
        assert_eq!(shared.dir(root), Path::new("/p/tiny"));
        assert_eq!(branch.dir(root), Path::new("/p/tiny/stable_1.0"));
        assert_eq!(shared.stem("el9"), "tiny-el9");
        assert_eq!(branch.stem("el9"), "tiny-stable_1.0-el9");
        assert_eq!(branch.url_path(), "tiny/stable_1.0");
        assert_eq!(branch.title("el9"), "patchline tiny stable/1.0 (el9)");
    }
}
