//! The local build stage with real rpmbuild: a patched demo package is
//! built for two targets; a broken spec fails with rpmbuild's own words;
//! re-running the stage of a run does not build again.

use crate::util::{TINY_SPEC, git, patchline, tiny_repo};
use std::path::Path;

/// A bare repo with a noarch package, and a one-patch mbox changing it.
pub fn site(spec: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let src = tiny_repo(p, spec);
    std::fs::write(src.join("greeting"), "hello, world\n").unwrap();
    git(&src, &["commit", "-q", "-am", "Greet the world"]);
    let mbox = git(
        &src,
        &[
            "format-patch",
            "--stdout",
            "--subject-prefix=master PATCH tiny",
            "-1",
        ],
    );
    std::fs::write(p.join("list.mbox"), mbox).unwrap();
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\ntargets = [\"el9\", \"fc40\"]\n",
    )
    .unwrap();
    dir
}

pub fn rpm_query(rpm: &Path, format: &str) -> String {
    let out = std::process::Command::new("rpm")
        .args(["-qp", "--qf", format])
        .arg(rpm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rpm -qp {}: {}",
        rpm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn applied_branch_is_built_for_each_target_once() {
    let site = site(TINY_SPEC);
    let p = site.path();
    let ran = patchline(p, &["run", "--json"]);
    let status = ran.json();
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let build = &status["stages"][2];
    assert_eq!(build["stage"], "build");
    assert_eq!(build["state"], "ok", "{build}");
    let builds = build["summary"]["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2);
    let tip = git(&p.join("tiny.git"), &["rev-parse", "--short=7", "master"])
        .trim()
        .to_owned();
    let count = git(&p.join("tiny.git"), &["rev-list", "--count", "master"])
        .trim()
        .to_owned();
    let date = chrono_today();
    for (b, target) in builds.iter().zip(["el9", "fc40"]) {
        assert_eq!(b["target"], target);
        let rpm = b["rpms"][0].as_str().unwrap();
        assert_eq!(
            rpm_query(Path::new(rpm), "%{NAME} %{VERSION} %{RELEASE}"),
            format!("tiny 2.1 3.{count}.{date}git{tip}.{target}"),
            "release stamped with commit count, date, commit and dist"
        );
        let files = rpm_query(Path::new(rpm), "[%{FILENAMES}\n]");
        assert!(files.contains("/usr/share/tiny/greeting"), "{files}");
        assert!(Path::new(b["log"].as_str().unwrap()).is_file());
    }
    // The patched content is what was packaged: the source tarball holds
    // the applied commit's tree.
    let srpm = Path::new(builds[0]["srpm"].as_str().unwrap());
    assert!(rpm_query(srpm, "%{NAME}").contains("tiny"));
    let tarball = srpm
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("SOURCES/tiny-2.1.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&tarball).unwrap(),
    ));
    let mut greeting = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("tiny-2.1/greeting") {
            std::io::Read::read_to_string(&mut entry, &mut greeting).unwrap();
        }
    }
    assert_eq!(greeting, "hello, world\n");
    // The stage of the same run again: nothing rebuilt.
    let rpm = Path::new(builds[0]["rpms"][0].as_str().unwrap());
    let built_at = std::fs::metadata(rpm).unwrap().modified().unwrap();
    let run = status["run"]["id"].as_i64().unwrap().to_string();
    let again = patchline(p, &["build", "--json", "--run", &run]).json();
    assert_eq!(again["builds"][0]["duration_ms"], builds[0]["duration_ms"]);
    assert_eq!(
        std::fs::metadata(rpm).unwrap().modified().unwrap(),
        built_at,
        "not rebuilt"
    );
}

fn chrono_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y%m%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_broken_spec_fails_the_build_with_rpmbuilds_message() {
    let site = site(&TINY_SPEC.replace("%files\n", "%files\n%{bogus_macro_that_fails\n"));
    let ran = patchline(site.path(), &["run"]).fails_with(1);
    assert!(
        ran.stdout().contains("[failed] tiny/master"),
        "{}",
        ran.describe()
    );
    let status = patchline(site.path(), &["status", "--json"]).json();
    let build = &status["stages"][2];
    assert_eq!(build["state"], "failed");
    let error = build["summary"]["builds"][0]["error"].as_str().unwrap();
    // rpm's own words, naming the spec.
    assert!(
        error.contains("tiny.spec") && error.contains("unclosed macro"),
        "{error}"
    );
}

/// `[[build.targets]]` are macro sets: a spec branching on `%rhel` and
/// `%fedora` builds as on that platform, and a Koji-style name with a
/// hyphen is only a name (its dist is the one configured).
#[test]
fn targets_build_with_their_own_macros() {
    let spec = TINY_SPEC.replace(
        "Summary: test package\n",
        "Summary: built for %{?rhel:rhel %{rhel}}%{?fedora:fedora %{fedora}}%{?el9: el9}\n",
    );
    let site = site(&spec);
    let p = site.path();
    let config = std::fs::read_to_string(p.join("patchline.toml"))
        .unwrap()
        .replace(
            "targets = [\"el9\", \"fc40\"]\n",
            "targets = [\"epel9-candidate\", \"f41\"]\n",
        );
    std::fs::write(
        p.join("patchline.toml"),
        format!(
            "{config}\n[[build.targets]]\nname = \"epel9-candidate\"\ndist = \".el9\"\nmacros = {{ rhel = \"9\", el9 = \"1\" }}\n\n[[build.targets]]\nname = \"f41\"\ndist = \".fc41\"\nmacros = {{ fedora = 41 }}\n"
        ),
    )
    .unwrap();
    let ran = patchline(p, &["run", "--json"]);
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let status = ran.json();
    let builds = status["stages"][2]["summary"]["builds"].as_array().unwrap();
    let want = [
        ("epel9-candidate", ".el9", "built for rhel 9 el9"),
        ("f41", ".fc41", "built for fedora 41"),
    ];
    for (b, (target, dist, summary)) in builds.iter().zip(want) {
        assert_eq!(b["target"], target);
        let rpm = Path::new(b["rpms"][0].as_str().unwrap());
        let release = rpm_query(rpm, "%{RELEASE}");
        assert!(release.ends_with(dist), "{target}: {release}");
        assert!(!release.contains('-'), "{release}");
        assert_eq!(rpm_query(rpm, "%{SUMMARY}"), summary);
    }
    // Published under the target's name.
    let publish = status["stages"][3]["summary"]["repos"].as_array().unwrap();
    assert_eq!(publish[0]["target"], "epel9-candidate", "{publish:?}");
}
