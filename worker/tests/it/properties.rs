//! Property-based tests (proptest, stable toolchain) of the parsers that
//! read hostile input: whatever the bytes, nothing panics; and where the
//! input is well formed, what comes out is what went in. A short run with
//! a fixed seed is part of the test suite; `PATCHLINE_PROPTEST_CASES`
//! makes it longer (docs/security.md).

use patchline::mail::parse::{MailLimits, parse_mail};
use patchline::mail::source::mbox::{MboxFormat, MboxSource};
use patchline::mail::source::{Flow, MailSource, Resume};
use patchline::mail::subject::SubjectGrammar;
use patchline::patch::hunks::{ApplyOptions, apply_hunks};
use patchline::patch::mailinfo::{MailInfoOptions, mailinfo};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PATCHLINE_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(20261202),
        ..Config::default()
    })
}

/// Bytes that look like mail more often than random bytes do.
fn mailish() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("From: A <a@x>\n".to_owned()),
        Just("Subject: [PATCH v2 1/2] t\n".to_owned()),
        Just("Content-Type: multipart/mixed; boundary=b\n".to_owned()),
        Just("Content-Transfer-Encoding: base64\n".to_owned()),
        Just("--b\n".to_owned()),
        Just("\n".to_owned()),
        Just("diff --git a/x b/x\n".to_owned()),
        Just("@@ -1,3 +1,4 @@\n".to_owned()),
        Just("GIT binary patch\nliteral 99999999999\n".to_owned()),
        "[ -~]{0,40}\n",
        "[\\x00-\\xff]{0,20}",
    ];
    prop::collection::vec(line, 0..40).prop_map(|l| l.concat().into_bytes())
}

#[test]
fn parsing_a_mail_and_its_patch_never_panics() {
    runner(256)
        .run(&mailish(), |bytes| {
            let _ = parse_mail(&bytes, &MailLimits::default());
            if let Ok(info) = mailinfo(&bytes, MailInfoOptions::default()) {
                let _ = patchline::patch::parse::parse(&info.patch);
            }
            let _ = patchline::patch::parse::parse(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_subject_grammar_never_panics_and_reads_what_was_written() {
    let grammar = SubjectGrammar::default();
    runner(512)
        .run(&"\\PC{0,80}", |s| {
            let _ = grammar.parse(&s);
            Ok(())
        })
        .unwrap();
    let written = (1u32..50, 1u32..40, 0u32..40, "[a-z][a-z ]{0,30}[a-z]");
    runner(256)
        .run(&written, |(version, total, index, title)| {
            let index = index.min(total);
            let subject = format!("[PATCH v{version} {index}/{total}] {title}");
            let fields = grammar
                .parse(&subject)
                .map_err(|e| TestCaseError::fail(format!("{subject:?}: {e}")))?;
            prop_assert_eq!(fields.version, version);
            prop_assert_eq!(fields.index, Some(index));
            prop_assert_eq!(fields.total, Some(total));
            prop_assert_eq!(
                fields.title,
                title.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            Ok(())
        })
        .unwrap();
}

/// Mails whose bodies hold `From ` lines at any quoting depth, written as
/// mboxrd, split back into the same mails.
#[test]
fn an_mboxrd_file_splits_into_the_mails_written() {
    let body_line = prop_oneof![
        Just("From the start\n".to_owned()),
        Just(">From quoted\n".to_owned()),
        Just(">>From twice\n".to_owned()),
        Just("\n".to_owned()),
        "[ -~]{0,30}\n",
    ];
    let mail = prop::collection::vec(body_line, 0..12);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.mbox");
    runner(128)
        .run(&prop::collection::vec(mail, 1..8), |mails| {
            let texts: Vec<String> = mails
                .iter()
                .enumerate()
                .map(|(n, body)| format!("From: a@x\nSubject: m{n}\n\n{}", body.concat()))
                .collect();
            let mut file = String::new();
            for text in &texts {
                file.push_str("From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n");
                for line in text.split_inclusive('\n') {
                    if line.trim_start_matches('>').starts_with("From ") {
                        file.push('>');
                    }
                    file.push_str(line);
                }
                if !text.ends_with('\n') {
                    file.push('\n');
                }
                file.push('\n');
            }
            std::fs::write(&path, &file).unwrap();
            let mut got = Vec::new();
            let never = |_: &str| false;
            MboxSource::new(path.clone(), MboxFormat::Mboxrd, 1 << 20)
                .fetch(
                    &Resume {
                        cursor: None,
                        seen: &never,
                    },
                    &mut |m| {
                        got.push(String::from_utf8_lossy(&m.bytes).into_owned());
                        Ok(Flow::Continue)
                    },
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want: Vec<String> = texts
                .iter()
                .map(|t| {
                    if t.ends_with('\n') {
                        t.clone()
                    } else {
                        format!("{t}\n")
                    }
                })
                .collect();
            prop_assert_eq!(got, want);
            Ok(())
        })
        .unwrap();
}

/// Random edits of a file, diffed by real `git diff`, applied by the
/// engine's hunks: the edited file comes back.
#[test]
fn hunks_of_git_diff_apply_to_give_the_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old_path, new_path) = (dir.path().join("old"), dir.path().join("new"));
    let lines = prop::collection::vec("[a-c]{0,3}", 1..40);
    let edits = prop::collection::vec((0usize..40, 0u8..3, "[a-d]{0,3}"), 1..8);
    runner(64)
        .run(&(lines, edits), |(lines, edits)| {
            let mut new = lines.clone();
            for (at, kind, text) in edits {
                let at = at % (new.len() + 1);
                match kind {
                    0 => new.insert(at, text),
                    1 if at < new.len() => {
                        new.remove(at);
                    }
                    _ if at < new.len() => new[at] = text,
                    _ => new.push(text),
                }
            }
            let text = |l: &[String]| l.iter().map(|s| format!("{s}\n")).collect::<String>();
            let (old_text, new_text) = (text(&lines), text(&new));
            std::fs::write(&old_path, &old_text).unwrap();
            std::fs::write(&new_path, &new_text).unwrap();
            let out = std::process::Command::new("git")
                .args(["diff", "--no-index", "--no-color", "--", "old", "new"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            if out.stdout.is_empty() {
                // The edits changed nothing: git prints no diff.
                prop_assert_eq!(&old_text, &new_text);
                return Ok(());
            }
            let files = patchline::patch::parse::parse(&out.stdout)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = match files.first() {
                None => old_text.clone().into_bytes(),
                Some(file) => apply_hunks(
                    old_text.as_bytes(),
                    &file.hunks,
                    ApplyOptions::default(),
                )
                .map_err(|e| {
                    TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out.stdout)))
                })?,
            };
            prop_assert_eq!(String::from_utf8_lossy(&got), new_text);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_xml_rpc_decoder_never_panics() {
    let xmlish = prop::collection::vec(
        prop_oneof![
            Just("<?xml version=\"1.0\"?>".to_owned()),
            Just("<methodResponse><params><param><value>".to_owned()),
            Just("<struct><member><name>x</name><value><int>".to_owned()),
            Just("</int></value></member></struct>".to_owned()),
            Just("<array><data>".to_owned()),
            Just("<fault>".to_owned()),
            Just("<i8>99999999999999999999</i8>".to_owned()),
            Just("</value></param></params></methodResponse>".to_owned()),
            "[ -~]{0,20}",
        ],
        0..30,
    );
    runner(256)
        .run(&xmlish, |parts| {
            let body = parts.concat();
            let _ = kojiwire::decode_response(&body);
            let _ = kojiwire::decode_call(&body);
            Ok(())
        })
        .unwrap();
}
