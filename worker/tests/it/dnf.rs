//! The published repositories as a user's dnf sees them: master and
//! stable-1 built over four runs of one day (real rpmbuild and
//! createrepo_c), and after every run, for each published `.repo` file,
//! the real `dnf` (Debian's 4.14) asked for the newest package through the
//! file's `baseurl` and made to install or upgrade it into an installroot.
//! Each branch's repository must give that branch's newest build every
//! time — an arch package and a noarch package alike.
//!
//! What dnf needed here (checked on Debian 12 with dnf 4.14, as root):
//! - nothing of the host: `--installroot=DIR --setopt=reposdir=/dev/null
//!   --setopt=cachedir=DIR2 --repofrompath=r,URL --repo=r`, `--releasever=9`
//!   (else it tries to guess one from the installroot and warns);
//! - no rpm database set up beforehand: dnf creates one in the installroot
//!   on the first install — at `DIR/root/.rpmdb`, because Debian's rpm has
//!   `%_dbpath ~/.rpmdb`; `rpm --root DIR -q` reads the same one;
//! - `--nogpgcheck` (nothing is signed) and packages without automatic
//!   requirements (`AutoReqProv: no`): an empty installroot provides
//!   nothing, not even `/bin/sh` or libc;
//! - `--setopt=metadata_expire=0`: the repository changes between runs
//!   within seconds, and cached metadata would hide the new build;
//! - `upgrade`, not `install`, once a package is installed: dnf 4's
//!   `install` of an installed name does nothing even when a newer build is
//!   there ("Package ... is already installed").

use crate::util::{Ran, git, patchline, run_in, tiny_repo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An arch package (`tiny`, x86_64 here) and a noarch one (`tiny-data`)
/// from one spec, installable into an empty root.
const SPEC: &str = "Name: tiny\nVersion: 2.1\nRelease: 3%{?dist}\nSummary: test package\nLicense: MIT\nSource0: %{name}-%{version}.tar.gz\nAutoReqProv: no\n\n%description\nA test package.\n\n%package data\nSummary: test data\nBuildArch: noarch\n\n%description data\nIts data.\n\n%prep\n%autosetup\n\n%build\n\n%install\ninstall -D -m 0644 greeting %{buildroot}/usr/share/tiny/greeting\ninstall -D -m 0644 greeting %{buildroot}/usr/share/tiny-data/greeting\n\n%files\n/usr/share/tiny/greeting\n\n%files data\n/usr/share/tiny-data/greeting\n";

const BRANCHES: [&str; 2] = ["master", "stable-1"];

fn dnf_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("dnf"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "dnf is missing: run scripts/setup.sh");
        eprintln!("SKIPPED: dnf is missing; run scripts/setup.sh");
    }
    found
}

/// One patch for `branch`, changing `greeting` to `text`, appended to the
/// list in the team's `[<branch> PATCH tiny]` form.
fn post_to(p: &Path, branch: &str, text: &str) {
    use std::io::Write;
    let src = p.join("src");
    let bare = p.join("tiny.git");
    // Start from what patchline applied (its commits have their own ids).
    git(&src, &["fetch", "-q", bare.to_str().unwrap(), branch]);
    git(&src, &["checkout", "-q", "-B", branch, "FETCH_HEAD"]);
    std::fs::write(src.join("greeting"), format!("{text}\n")).unwrap();
    git(&src, &["commit", "-q", "-am", &format!("Say {text}")]);
    let prefix = format!("--subject-prefix={branch} PATCH tiny");
    let mail = git(&src, &["format-patch", "--stdout", &prefix, "-1"]);
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p.join("list.mbox"))
        .unwrap()
        .write_all(mail.as_bytes())
        .unwrap();
}

/// dnf against one repository URL, touching nothing of the host.
fn dnf(dnf: &Path, root: &Path, url: &str, args: &[&str]) -> Ran {
    let cache = root.with_extension("cache");
    std::fs::create_dir_all(root).unwrap();
    let mut all = vec![
        "-q".to_owned(),
        format!("--installroot={}", root.display()),
        "--setopt=reposdir=/dev/null".to_owned(),
        format!("--setopt=cachedir={}", cache.display()),
        "--setopt=metadata_expire=0".to_owned(),
        "--releasever=9".to_owned(),
        "--nogpgcheck".to_owned(),
        format!("--repofrompath=r,{url}"),
        "--repo=r".to_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run_in(root, dnf, &all)
}

/// The first section's `baseurl` of a `.repo` file, `$basearch` resolved
/// as dnf resolves it on this machine.
fn baseurl(repo_file: &Path) -> String {
    let text = std::fs::read_to_string(repo_file).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("baseurl="))
        .unwrap_or_else(|| panic!("no baseurl in {}:\n{text}", repo_file.display()));
    assert!(url.contains("$basearch"), "{url}");
    url.replace("$basearch", std::env::consts::ARCH)
}

#[test]
fn each_branchs_repository_gives_dnf_its_newest_build_every_time() {
    let Some(dnf_bin) = dnf_bin() else { return };
    let arch = std::env::consts::ARCH;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    tiny_repo(p, SPEC);
    git(&p.join("tiny.git"), &["branch", "stable-1", "master"]);
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nbranches = [\"master\", \"stable-1\"]\nspec = \"tiny.spec\"\ntargets = [\"el9\"]\n\n[[build.targets]]\nname = \"el9\"\ndist = \".el9\"\nmacros = { rhel = \"9\", el9 = \"1\" }\n\n[publish]\nkeep = 2\n",
    )
    .unwrap();
    // Which branches get a patch in each of the four runs of the day.
    let rounds: [&[&str]; 4] = [
        &["master", "stable-1"],
        &["master"],
        &["stable-1"],
        &["master", "stable-1"],
    ];
    // Per branch: the releases built so far, oldest first.
    let mut built: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut greeting: BTreeMap<&str, String> = BTreeMap::new();
    for (n, branches) in rounds.iter().enumerate() {
        for branch in *branches {
            let text = format!("{branch} round {n}");
            post_to(p, branch, &text);
            greeting.insert(branch, text);
        }
        let ran = patchline(p, &["run", "--json"]);
        assert_eq!(ran.code(), 0, "run {n}: {}", ran.describe());
        let status = ran.json();
        let stage = |name: &str| {
            status["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == name)
                .unwrap()["summary"]
                .clone()
        };
        for b in stage("build")["builds"].as_array().unwrap() {
            let branch = BRANCHES
                .iter()
                .find(|x| **x == b["branch"])
                .expect("a configured branch");
            // The SRPM's NVR carries no dist; the binary packages the
            // target's.
            let nvr = b["nvr"].as_str().unwrap();
            let release = format!("{}.el9", nvr.strip_prefix("tiny-2.1-").unwrap());
            built.entry(branch).or_default().push(release);
        }
        let publish = stage("publish");
        let repos = publish["repos"].as_array().unwrap();
        assert_eq!(repos.len(), branches.len(), "run {n}: {publish}");
        // Every .repo file published so far: both branches' after run 0.
        for branch in BRANCHES {
            let repo_file = p.join(format!("publish/tiny-{branch}-el9.repo"));
            let url = baseurl(&repo_file);
            assert!(url.contains(&format!("/tiny/{branch}/el9/{arch}")), "{url}");
            let releases = &built[branch];
            let newest = releases.last().unwrap();
            let point = format!("run {n}, {branch} ({url})");

            let latest = dnf(
                &dnf_bin,
                &p.join(format!("root-{branch}")),
                &url,
                &[
                    "repoquery",
                    "--latest-limit",
                    "1",
                    "--qf",
                    "%{name}-%{version}-%{release}.%{arch}",
                    "tiny",
                    "tiny-data",
                ],
            )
            .ok();
            let mut got: Vec<&str> = latest.lines().map(str::trim).collect();
            got.sort();
            assert_eq!(
                got,
                [
                    format!("tiny-2.1-{newest}.{arch}"),
                    format!("tiny-data-2.1-{newest}.noarch")
                ],
                "{point}: the newest build of the branch"
            );
            // Only this branch's builds, the newest `keep` of them.
            let all = dnf(
                &dnf_bin,
                &p.join(format!("root-{branch}")),
                &url,
                &["repoquery", "--qf", "%{release}", "tiny"],
            )
            .ok();
            let mut offered: Vec<&str> = all.lines().map(str::trim).collect();
            offered.sort();
            let mut want: Vec<&str> = releases.iter().rev().take(2).map(String::as_str).collect();
            want.sort();
            assert_eq!(offered, want, "{point}: keep = 2 of this branch");

            // Install (the first time) or upgrade: the user follows the
            // branch and always ends at its newest build.
            let root = p.join(format!("root-{branch}"));
            let verb = if root.join("usr/share/tiny").exists() {
                "upgrade"
            } else {
                "install"
            };
            dnf(&dnf_bin, &root, &url, &[verb, "-y", "tiny", "tiny-data"]).ok();
            let installed = run_in(
                p,
                Path::new("rpm"),
                &["--root", root.to_str().unwrap(), "-q", "tiny", "tiny-data"],
            )
            .ok();
            assert_eq!(
                installed.lines().collect::<Vec<_>>(),
                [
                    format!("tiny-2.1-{newest}.{arch}"),
                    format!("tiny-data-2.1-{newest}.noarch")
                ],
                "{point}: {verb}"
            );
            for file in ["usr/share/tiny/greeting", "usr/share/tiny-data/greeting"] {
                assert_eq!(
                    std::fs::read_to_string(root.join(file)).unwrap().trim(),
                    greeting[branch],
                    "{point}: {file}"
                );
            }
        }
    }
    assert_eq!(built["master"].len(), 3);
    assert_eq!(built["stable-1"].len(), 3);
}
