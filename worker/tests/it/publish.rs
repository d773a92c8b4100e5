//! The publish stage with real createrepo_c: repositories per target, a
//! `.repo` file, metadata whose checksums hold, the newest builds kept, and
//! a symlink switch so the served path is always a complete repository.

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
        assert_eq!(repo["url"], "https://repos.example.org/patchline/tiny/el9");
        published.push(repo.clone());
        let live = p.join("publish/tiny/el9");
        assert!(
            live.is_symlink(),
            "the served path is a symlink to a snapshot"
        );
        let primary = check_metadata(&live.join("noarch"));
        let count = primary.matches("<package type=\"rpm\">").count();
        assert_eq!(count, (n + 1).min(2), "round {n}: keep = 2\n{primary}");
        let srpms = std::fs::read_dir(live.join("src")).unwrap().count();
        assert!(srpms >= 1);
    }
    let live = p.join("publish/tiny/el9");
    let names: Vec<String> = std::fs::read_dir(live.join("noarch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Only the live snapshots are left: the target's and latest/'s.
    let mut snapshots: Vec<String> = std::fs::read_dir(p.join("publish/tiny/.snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    snapshots.sort();
    assert_eq!(snapshots, ["el9-run3", "latest-run3"]);
    // latest/ holds only the newest build.
    let latest: Vec<String> = std::fs::read_dir(p.join("publish/tiny/latest/el9/noarch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert!(names.contains(&latest[0]), "{latest:?} {names:?}");
    let repo_file = std::fs::read_to_string(p.join("publish/tiny-el9.repo")).unwrap();
    assert!(
        repo_file.contains("baseurl=https://repos.example.org/patchline/tiny/el9/$basearch/"),
        "{repo_file}"
    );
    assert!(repo_file.contains("gpgcheck=0"));
}
