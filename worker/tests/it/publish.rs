//! The publish stage with real createrepo_c: repositories per branch and
//! target, a `.repo` file, metadata whose checksums hold, the newest builds
//! kept, noarch packages in the architecture directory, a symlink switch so
//! the served path is always a complete repository, and the one-line note
//! when the layout changes.

use crate::util::{TINY_SPEC, change_greeting, git, patchline, post, tiny_repo};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Appends a one-patch mail changing `greeting` to `text` to the list.
fn post_patch(p: &Path, text: &str) {
    let src = p.join("src");
    // Start from what patchline applied (its commits have their own ids).
    git(
        &src,
        &[
            "fetch",
            "-q",
            p.join("tiny.git").to_str().unwrap(),
            "master",
        ],
    );
    git(&src, &["reset", "-q", "--hard", "FETCH_HEAD"]);
    change_greeting(&src, text, &format!("Say {text}"));
    post(p, &src, 1, &[]);
}

/// Every `<data type=...>` of repomd.xml: its file exists and its sha256
/// is the one announced. Returns primary.xml's text.
fn check_metadata(arch_dir: &Path) -> String {
    let repomd = std::fs::read_to_string(arch_dir.join("repodata/repomd.xml")).unwrap();
    let mut primary = String::new();
    for data in repomd.split("<data type=\"").skip(1) {
        let kind = &data[..data.find('"').unwrap()];
        let checksum = data
            .split("<checksum type=\"sha256\">")
            .nth(1)
            .map(|c| &c[..c.find('<').unwrap()])
            .unwrap();
        let href = data
            .split("<location href=\"")
            .nth(1)
            .map(|h| &h[..h.find('"').unwrap()])
            .unwrap();
        let bytes = std::fs::read(arch_dir.join(href)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            checksum,
            "{kind} checksum"
        );
        if kind == "primary" {
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut primary)
                .unwrap();
        }
    }
    assert!(!primary.is_empty(), "no primary metadata");
    primary
}

#[test]
fn repositories_are_published_whole_and_keep_the_newest_builds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    tiny_repo(p, TINY_SPEC);
    std::fs::write(
        p.join("patchline.toml"),
        "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\ntargets = [\"el9\"]\n\n[publish]\nbase_url = \"https://repos.example.org/patchline/\"\nkeep = 2\n",
    )
    .unwrap();
    let mut published = Vec::new();
    for (n, word) in ["one", "two", "three"].iter().enumerate() {
        post_patch(p, word);
        let ran = patchline(p, &["run", "--json"]);
        let status = ran.json();
        assert_eq!(ran.code(), 0, "round {n}: {}", ran.describe());
        let publish = &status["stages"][3];
        assert_eq!(publish["stage"], "publish");
        assert_eq!(publish["state"], "ok", "{publish}");
        let repo = &publish["summary"]["repos"][0];
        assert_eq!(
            repo["url"],
            "https://repos.example.org/patchline/tiny/master/el9"
        );
        assert_eq!(repo["branch"], "master");
        assert_eq!(publish["summary"]["per_branch"], true);
        // A new publish directory: nothing changed for anyone.
        assert!(publish["summary"].get("layout_note").is_none(), "{publish}");
        published.push(repo.clone());
        let live = p.join("publish/tiny/master/el9");
        assert!(
            live.is_symlink(),
            "the served path is a symlink to a snapshot"
        );
        // A noarch package is served from the architecture directory the
        // `.repo` file's `$basearch` names; there is no noarch directory.
        assert!(!live.join("noarch").exists());
        let primary = check_metadata(&live.join(ARCH));
        let count = primary.matches("<package type=\"rpm\">").count();
        assert_eq!(count, (n + 1).min(2), "round {n}: keep = 2\n{primary}");
        let srpms = std::fs::read_dir(live.join("src")).unwrap().count();
        assert!(srpms >= 1);
    }
    let live = p.join("publish/tiny/master/el9");
    let names: Vec<String> = std::fs::read_dir(live.join(ARCH))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Only the live snapshots are left: the target's and latest/'s.
    let mut snapshots: Vec<String> = std::fs::read_dir(p.join("publish/tiny/master/.snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    snapshots.sort();
    assert_eq!(snapshots, ["el9-run3", "latest-run3"]);
    // latest/ holds only the newest build.
    let latest: Vec<String> =
        std::fs::read_dir(p.join(format!("publish/tiny/master/latest/el9/{ARCH}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert!(names.contains(&latest[0]), "{latest:?} {names:?}");
    let repo_file = std::fs::read_to_string(p.join("publish/tiny-master-el9.repo")).unwrap();
    assert!(
        repo_file
            .contains("baseurl=https://repos.example.org/patchline/tiny/master/el9/$basearch/"),
        "{repo_file}"
    );
    assert!(repo_file.contains("[patchline-tiny-master-el9]"));
    assert!(repo_file.contains("gpgcheck=0"));
}

/// dnf's `$basearch` here (the tests run on the build host).
const ARCH: &str = std::env::consts::ARCH;

/// The publish stage's summary of a run, and the text of its report.
fn publish_summary(ran: &crate::util::Ran) -> (serde_json::Value, String) {
    assert_eq!(ran.code(), 0, "{}", ran.describe());
    let status = ran.json();
    let stage = |name: &str| {
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap()
            .clone()
    };
    let publish = stage("publish");
    assert_eq!(publish["state"], "ok", "{publish}");
    let report = stage("report")["summary"]["file"]
        .as_str()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .unwrap_or_default();
    (publish["summary"].clone(), report)
}

#[test]
fn one_repository_for_all_branches_then_per_branch_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    tiny_repo(p, TINY_SPEC);
    let config = |per_branch: bool| {
        format!(
            "[intake]\nsource = \"mbox\"\npath = \"list.mbox\"\nmbox_format = \"none\"\n\n[[repos]]\nname = \"tiny\"\npath = \"tiny.git\"\nspec = \"tiny.spec\"\ntargets = [\"el9\"]\n\n[publish]\nper_branch = {per_branch}\n"
        )
    };
    std::fs::write(p.join("patchline.toml"), config(false)).unwrap();
    post_patch(p, "one");
    let (shared, _) = publish_summary(&patchline(p, &["run", "--json"]));
    assert_eq!(shared["per_branch"], false);
    assert!(shared["repos"][0]["branch"].is_null(), "{shared}");
    assert!(shared.get("layout_note").is_none(), "{shared}");
    let live = p.join("publish/tiny/el9");
    check_metadata(&live.join(ARCH));
    assert!(p.join("publish/tiny-el9.repo").is_file());
    assert!(p.join(format!("publish/tiny/latest/el9/{ARCH}")).is_dir());

    // The switch to per-branch repositories: a note in that run only.
    std::fs::write(p.join("patchline.toml"), config(true)).unwrap();
    post_patch(p, "two");
    let (first, report) = publish_summary(&patchline(p, &["run", "--json"]));
    let note = first["layout_note"].as_str().expect("a layout note");
    assert!(
        note.starts_with("tiny: repositories are now one per branch")
            && note.contains("tiny/<branch>/<target>/")
            && !note.contains('\n'),
        "{note}"
    );
    assert!(report.contains(&format!("note: {note}\n")), "{report}");
    assert!(report.contains("tiny master (el9): file://"), "{report}");
    assert!(p.join("publish/tiny-master-el9.repo").is_file());
    check_metadata(&p.join(format!("publish/tiny/master/el9/{ARCH}")));
    post_patch(p, "three");
    let (second, report) = publish_summary(&patchline(p, &["run", "--json"]));
    assert!(second.get("layout_note").is_none(), "said once: {second}");
    assert!(!report.contains("note: "), "{report}");
}
