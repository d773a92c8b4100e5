//! The IMAP source against a real dovecot: order, bytes, cursors, TLS and
//! authentication variants, failures, UIDVALIDITY changes and IDLE.

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use patchline::mail::source::imap::{ImapAuth, ImapSecurity, ImapSettings, ImapSource};
use patchline::mail::source::{Error, FetchStats, Flow, MailSource, RawMail, Resume};

use crate::dovecot::{CuttingProxy, Dovecot, DovecotOptions, free_port};

/// A patch mail whose body is padded to about `body_size` bytes.
fn patch_mail(number: usize, body_size: usize, eol: &str) -> Vec<u8> {
    let mut lines = vec![
        "From: Ann Dev <ann@example.org>".to_string(),
        "To: dev@lists.example.org".to_string(),
        format!("Subject: [PATCH {number}/9] parser: fix case {number}"),
        format!("Message-ID: <patch-{number}@example.org>"),
        "Date: Mon, 2 Nov 2026 10:00:00 +0000".to_string(),
        String::new(),
        format!("Fix case {number}."),
        "---".to_string(),
        "diff --git a/src/parser.c b/src/parser.c".to_string(),
    ];
    let mut size = lines
        .iter()
        .map(|line| line.len() + eol.len())
        .sum::<usize>();
    let mut row = 0;
    while size < body_size {
        let line = format!("+    check(case_{number}, row_{row}); /* padding to reach the size */");
        size += line.len() + eol.len();
        lines.push(line);
        row += 1;
    }
    let mut mail = lines.join(eol);
    mail.push_str(eol);
    mail.into_bytes()
}

/// IMAP delivers every mail with CRLF line endings, whatever was appended.
fn as_crlf(mail: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(mail).replace("\r\n", "\n");
    text.replace('\n', "\r\n").into_bytes()
}

/// Runs one fetch and returns what reached the sink.
fn fetch_all(
    source: &mut ImapSource,
    cursor: Option<&str>,
    seen: &dyn Fn(&str) -> bool,
) -> (Result<FetchStats, Error>, Vec<RawMail>) {
    let mut mails = Vec::new();
    let resume = Resume { cursor, seen };
    let result = source.fetch(&resume, &mut |mail| {
        mails.push(mail);
        Ok(Flow::Continue)
    });
    (result, mails)
}

/// Settings for tests where no dovecot answers on `port`.
fn settings_without_server(port: u16, timeout: Duration) -> ImapSettings {
    ImapSettings {
        host: "127.0.0.1".to_string(),
        port,
        security: ImapSecurity::Plain,
        user: "patchline".to_string(),
        password: "unused".to_string().into(),
        auth: ImapAuth::Login,
        mailbox: "INBOX".to_string(),
        ca_file: None,
        timeout,
        max_mail_size: 1 << 20,
        batch: 10,
    }
}

fn never_seen(_: &str) -> bool {
    false
}

fn uids(mails: &[RawMail]) -> Vec<u32> {
    mails
        .iter()
        .map(|mail| {
            let (_, uid) = mail.item.split_once(':').expect("item is uidvalidity:uid");
            uid.parse().expect("uid is a number")
        })
        .collect()
}

fn fill(dovecot: &Dovecot, mailbox: &str, count: usize, body_size: usize) -> Vec<Vec<u8>> {
    let mut client = dovecot.client();
    (1..=count)
        .map(|number| {
            let mail = patch_mail(number, body_size, "\r\n");
            client.append(mailbox, &mail);
            mail
        })
        .collect()
}

#[test]
fn fetches_appended_mails_in_uid_order_with_their_bytes() {
    for eol in ["\n", "\r\n"] {
        let dovecot = Dovecot::start();
        let mut client = dovecot.client();
        let appended: Vec<_> = (1..=5)
            .map(|number| {
                let mail = patch_mail(number, 600, eol);
                (client.append("INBOX", &mail), mail)
            })
            .collect();
        let mut source = ImapSource::new(dovecot.settings("INBOX"));

        let (result, mails) = fetch_all(&mut source, None, &never_seen);

        let stats = result.unwrap_or_else(|e| panic!("{e}\n{}", dovecot.logs()));
        assert_eq!(stats.delivered, 5);
        assert_eq!(stats.skipped_seen, 0);
        assert_eq!(stats.total_hint, Some(5));
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(mails.len(), 5, "line ending {eol:?}");
        for (mail, (place, bytes)) in mails.iter().zip(&appended) {
            let item = format!("{}:{}", place.uidvalidity, place.uid);
            assert_eq!(mail.item, item);
            assert_eq!(
                mail.cursor,
                format!("uidvalidity={};uid={}", place.uidvalidity, place.uid)
            );
            assert_eq!(
                mail.origin,
                format!("imap 127.0.0.1 INBOX uid {}", place.uid)
            );
            assert!(
                mail.bytes == as_crlf(bytes),
                "mail {item} (appended with {eol:?}) came back changed:\n{}",
                String::from_utf8_lossy(&mail.bytes)
            );
            assert!(mail.warnings.is_empty());
        }
    }
}

#[test]
fn resumes_exactly_after_the_cursor() {
    let dovecot = Dovecot::start();
    let sent = fill(&dovecot, "INBOX", 5, 300);
    let mut source = ImapSource::new(dovecot.settings("INBOX"));
    let (first, all) = fetch_all(&mut source, None, &never_seen);
    first.unwrap_or_else(|e| panic!("{e}"));

    let mut fresh = ImapSource::new(dovecot.settings("INBOX"));
    let (result, rest) = fetch_all(&mut fresh, Some(&all[1].cursor), &never_seen);

    let stats = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.delivered, 3);
    assert_eq!(uids(&rest), vec![3, 4, 5]);
    for (mail, bytes) in rest.iter().zip(&sent[2..]) {
        assert_eq!(mail.bytes, *bytes);
    }
}

#[test]
fn later_runs_fetch_only_new_mail() {
    let dovecot = Dovecot::start();
    fill(&dovecot, "INBOX", 3, 300);
    let mut source = ImapSource::new(dovecot.settings("INBOX"));
    let (result, first) = fetch_all(&mut source, None, &never_seen);
    result.unwrap_or_else(|e| panic!("{e}"));
    let cursor = first.last().expect("three mails").cursor.clone();

    // Nothing new: the `N:*` range would still return the last mail.
    let (result, none) = fetch_all(&mut source, Some(&cursor), &never_seen);
    assert_eq!(result.unwrap_or_else(|e| panic!("{e}")).delivered, 0);
    assert!(none.is_empty(), "{:?}", uids(&none));

    let mut client = dovecot.client();
    client.append("INBOX", &patch_mail(4, 300, "\r\n"));
    client.append("INBOX", &patch_mail(5, 300, "\r\n"));
    // The same source object reuses its connection for the second run.
    let (result, new) = fetch_all(&mut source, Some(&cursor), &never_seen);
    let stats = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.total_hint, Some(5));
    assert_eq!(uids(&new), vec![4, 5]);
}

#[test]
fn every_security_and_authentication_mode_reads_the_mailbox() {
    let dovecot = Dovecot::start();
    let sent = fill(&dovecot, "INBOX", 2, 200);
    let modes = [
        (ImapSecurity::Plain, ImapAuth::Login),
        (ImapSecurity::Plain, ImapAuth::Plain),
        (ImapSecurity::StartTls, ImapAuth::Login),
        (ImapSecurity::StartTls, ImapAuth::Plain),
        (ImapSecurity::Tls, ImapAuth::Login),
        (ImapSecurity::Tls, ImapAuth::Plain),
    ];
    for (security, auth) in modes {
        let settings = ImapSettings {
            port: match security {
                ImapSecurity::Tls => dovecot.imaps_port,
                _ => dovecot.imap_port,
            },
            security,
            auth,
            ca_file: Some(dovecot.cert.clone()),
            ..dovecot.settings("INBOX")
        };
        let mut source = ImapSource::new(settings);
        let (result, mails) = fetch_all(&mut source, None, &never_seen);
        result.unwrap_or_else(|e| panic!("{security:?}/{auth:?}: {e}\n{}", dovecot.logs()));
        let bytes: Vec<_> = mails.into_iter().map(|mail| mail.bytes).collect();
        assert_eq!(bytes, sent, "{security:?}/{auth:?}");
    }
    let log = dovecot.logs();
    assert!(log.contains("method=PLAIN"), "{log}");
    assert!(log.contains("TLS"), "{log}");
}

#[test]
fn tls_refuses_a_certificate_nobody_vouched_for() {
    let dovecot = Dovecot::start();
    for (security, port) in [
        (ImapSecurity::Tls, dovecot.imaps_port),
        (ImapSecurity::StartTls, dovecot.imap_port),
    ] {
        let settings = ImapSettings {
            port,
            security,
            ..dovecot.settings("INBOX")
        };
        let (result, mails) = fetch_all(&mut ImapSource::new(settings), None, &never_seen);
        let error = result.expect_err("an untrusted certificate must fail");
        assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("TLS handshake failed"), "{message}");
        assert!(message.contains("certificate"), "{message}");
        assert!(mails.is_empty());
    }
}

#[test]
fn a_ca_file_without_certificates_is_reported() {
    let dovecot = Dovecot::start();
    let empty = tempfile::NamedTempFile::new().expect("temp file");
    let settings = ImapSettings {
        port: dovecot.imaps_port,
        security: ImapSecurity::Tls,
        ca_file: Some(empty.path().to_path_buf()),
        ..dovecot.settings("INBOX")
    };
    let (result, _) = fetch_all(&mut ImapSource::new(settings), None, &never_seen);
    let error = result.expect_err("an empty CA file must fail");
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&empty.path().display().to_string())
    );
    assert!(!error.is_infrastructure());
}

#[test]
fn a_wrong_password_is_auth_failed_and_never_shown() {
    let wrong = "WrongHorseBatteryStaple-93";
    for auth in [ImapAuth::Login, ImapAuth::Plain] {
        // Dovecot delays repeated failures from one address by seconds.
        let dovecot = Dovecot::start();
        let settings = ImapSettings {
            password: wrong.to_string().into(),
            auth,
            ..dovecot.settings("INBOX")
        };
        let (result, _) = fetch_all(&mut ImapSource::new(settings), None, &never_seen);
        let error = result.expect_err("a wrong password must fail");
        let Error::AuthFailed { server, user, .. } = &error else {
            panic!("{auth:?}: expected AuthFailed, got {error:?}");
        };
        assert_eq!(server, &format!("127.0.0.1:{}", dovecot.imap_port));
        assert_eq!(user, "patchline");
        assert!(!error.is_infrastructure());
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(
                !shown.contains(wrong),
                "{auth:?} leaks the password: {shown}"
            );
            assert!(!shown.contains(&dovecot.password), "{auth:?}: {shown}");
        }
    }
}

#[test]
fn a_closed_port_is_unreachable() {
    let port = free_port();
    let settings = settings_without_server(port, Duration::from_secs(5));
    let mut source = ImapSource::new(settings);
    let (result, _) = fetch_all(&mut source, None, &never_seen);
    let error = result.expect_err("nobody listens there");
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.is_infrastructure());
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    let waited = source.wait_for_mail(Duration::from_millis(100));
    assert!(
        matches!(waited, Err(Error::Unreachable { .. })),
        "{waited:?}"
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = thread::spawn(move || listener.accept().map(|(socket, _)| socket));
    let settings = settings_without_server(port, Duration::from_millis(500));
    let started = Instant::now();
    let (result, _) = fetch_all(&mut ImapSource::new(settings), None, &never_seen);
    let error = result.expect_err("a silent server must time out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.is_infrastructure(), "{error:?}");
    assert!(error.to_string().contains("no answer"), "{error}");
    drop(accepted.join());
}

#[test]
fn a_missing_mailbox_is_a_configuration_error() {
    let dovecot = Dovecot::start();
    let mut source = ImapSource::new(dovecot.settings("no-such-list"));
    let (result, _) = fetch_all(&mut source, None, &never_seen);
    let error = result.expect_err("the mailbox does not exist");
    assert!(
        matches!(error, Error::MailboxUnavailable { .. }),
        "{error:?}"
    );
    assert!(!error.is_infrastructure());
    assert!(error.to_string().contains("no-such-list"), "{error}");
}

#[test]
fn a_new_uidvalidity_reads_everything_again_but_skips_seen_items() {
    let dovecot = Dovecot::start();
    let mut client = dovecot.client();
    client.create("lists.dev");
    let old: Vec<_> = (1..=3)
        .map(|n| client.append("lists.dev", &patch_mail(n, 200, "\r\n")))
        .collect();
    let mut source = ImapSource::new(dovecot.settings("lists.dev"));
    let (result, before) = fetch_all(&mut source, None, &never_seen);
    result.unwrap_or_else(|e| panic!("{e}"));
    let cursor = before.last().expect("three mails").cursor.clone();

    // Deleting and recreating a mailbox is how UIDVALIDITY changes in real
    // life (a restored backup, a migrated server): dovecot never reuses it.
    client.delete("lists.dev");
    client.create("lists.dev");
    let new: Vec<_> = (1..=4)
        .map(|n| client.append("lists.dev", &patch_mail(n, 200, "\r\n")))
        .collect();
    let validity = new[0].uidvalidity;
    assert_ne!(validity, old[0].uidvalidity);
    assert_eq!(client.uidvalidity("lists.dev"), validity);

    // An earlier interrupted resync already stored the first two.
    let taken: HashSet<String> = [format!("{validity}:1"), format!("{validity}:2")].into();
    let seen = |item: &str| taken.contains(item);
    let (result, after) = fetch_all(&mut source, Some(&cursor), &seen);

    let stats = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(uids(&after), vec![3, 4]);
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.skipped_seen, 2);
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("UIDVALIDITY changed")),
        "{:?}",
        stats.warnings
    );
    for mail in &after {
        assert!(
            mail.item.starts_with(&format!("{validity}:")),
            "{}",
            mail.item
        );
        assert!(mail.cursor.starts_with(&format!("uidvalidity={validity};")));
    }
}

#[test]
fn reading_leaves_the_mailbox_untouched() {
    let dovecot = Dovecot::start();
    fill(&dovecot, "INBOX", 3, 200);
    let mut client = dovecot.client();
    let flags_before = client.flags("INBOX");
    assert_eq!(flags_before.len(), 3);

    let (result, mails) = fetch_all(
        &mut ImapSource::new(dovecot.settings("INBOX")),
        None,
        &never_seen,
    );
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mails.len(), 3);

    let flags_after = dovecot.client().flags("INBOX");
    assert_eq!(flags_after, flags_before);
    for (uid, flags) in &flags_after {
        assert!(
            !flags.contains("\\Seen"),
            "uid {uid} was marked seen: {flags}"
        );
    }
}

/// An over-limit mail is fetched alone and handed over whole, marked over
/// the limit (collect archives it and records it as an error): never
/// skipped.
#[test]
fn oversized_mail_is_handed_over_whole_and_marked() {
    let dovecot = Dovecot::start();
    let mut client = dovecot.client();
    client.append("INBOX", &patch_mail(1, 500, "\r\n"));
    let big_text = patch_mail(2, 50_000, "\r\n");
    client.append("INBOX", &big_text);
    client.append("INBOX", &patch_mail(3, 500, "\r\n"));
    let settings = ImapSettings {
        max_mail_size: 10_000,
        ..dovecot.settings("INBOX")
    };

    let (result, mails) = fetch_all(&mut ImapSource::new(settings), None, &never_seen);

    let stats = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(uids(&mails), vec![1, 2, 3]);
    assert_eq!(stats.delivered, 3);
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    let big = mails[1].oversize.clone().expect("marked over the limit");
    assert_eq!(big.reread, patchline::mail::source::Reread::Held);
    assert_eq!(big.size, big_text.len() as u64);
    assert_eq!(mails[1].bytes, big_text);
    assert!(mails[0].oversize.is_none() && mails[2].oversize.is_none());
}

#[test]
fn stop_from_the_sink_ends_the_fetch_and_leaves_the_rest_as_new_mail() {
    let dovecot = Dovecot::start();
    fill(&dovecot, "INBOX", 4, 200);
    let settings = ImapSettings {
        batch: 3,
        ..dovecot.settings("INBOX")
    };
    let mut source = ImapSource::new(settings);
    let mut taken = Vec::new();
    let resume = Resume {
        cursor: None,
        seen: &never_seen,
    };
    let stats = source
        .fetch(&resume, &mut |mail| {
            taken.push(mail);
            Ok(if taken.len() == 2 {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.delivered, 2);
    assert_eq!(uids(&taken), vec![1, 2]);

    let started = Instant::now();
    let waited = source.wait_for_mail(Duration::from_secs(10));
    assert!(
        waited.unwrap_or_else(|e| panic!("{e}")),
        "mails 3 and 4 are still unread"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_sink_error_names_the_item_and_stops() {
    let dovecot = Dovecot::start();
    fill(&dovecot, "INBOX", 2, 200);
    let mut source = ImapSource::new(dovecot.settings("INBOX"));
    let resume = Resume {
        cursor: None,
        seen: &never_seen,
    };
    let error = source
        .fetch(&resume, &mut |_| Err("disk full".into()))
        .expect_err("the sink failed");
    let Error::Sink { item, .. } = &error else {
        panic!("expected Sink, got {error:?}");
    };
    assert!(item.ends_with(":1"), "{item}");
    assert!(!error.is_infrastructure());
}

/// Large mails through a proxy that cuts the connection inside the second
/// FETCH batch (mails 3 and 4), or inside the first.
#[test]
fn a_connection_cut_mid_fetch_loses_nothing_and_duplicates_nothing() {
    const MAIL_SIZE: usize = 64 * 1024;
    let cases = [
        // Greeting, login, EXAMINE and the size listing are about 2 KiB.
        (3 * MAIL_SIZE, vec![1, 2], "resumes after uid 2"),
        (MAIL_SIZE, vec![], "starts from the first mail"),
    ];
    for (cut_after, delivered_before_cut, resume_text) in cases {
        let dovecot = Dovecot::start();
        let sent = fill(&dovecot, "INBOX", 5, MAIL_SIZE);
        let proxy = CuttingProxy::start(dovecot.imap_port, cut_after);
        let through_proxy = ImapSettings {
            port: proxy.port,
            batch: 2,
            ..dovecot.settings("INBOX")
        };

        let (result, before) = fetch_all(&mut ImapSource::new(through_proxy), None, &never_seen);

        let error = result.expect_err("the proxy cut the connection");
        assert!(error.is_infrastructure(), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(resume_text), "{message}");
        assert_eq!(uids(&before), delivered_before_cut, "{message}");

        let cursor = before.last().map(|mail| mail.cursor.clone());
        let mut healthy = ImapSource::new(ImapSettings {
            batch: 2,
            ..dovecot.settings("INBOX")
        });
        let (result, after) = fetch_all(&mut healthy, cursor.as_deref(), &never_seen);
        result.unwrap_or_else(|e| panic!("{e}"));

        let mut all_uids = uids(&before);
        all_uids.extend(uids(&after));
        assert_eq!(all_uids, vec![1, 2, 3, 4, 5], "{message}");
        let received: Vec<&Vec<u8>> = before
            .iter()
            .chain(&after)
            .map(|mail| &mail.bytes)
            .collect();
        assert_eq!(
            received,
            sent.iter().collect::<Vec<_>>(),
            "every mail exactly once"
        );
    }
}

#[test]
fn idle_wakes_up_when_another_connection_appends() {
    let dovecot = Dovecot::start();
    fill(&dovecot, "INBOX", 1, 200);
    let mut source = ImapSource::new(dovecot.settings("INBOX"));
    let (result, first) = fetch_all(&mut source, None, &never_seen);
    result.unwrap_or_else(|e| panic!("{e}"));
    let cursor = first[0].cursor.clone();

    let started = Instant::now();
    let quiet = source.wait_for_mail(Duration::from_millis(700));
    assert!(!quiet.unwrap_or_else(|e| panic!("{e}")), "no mail arrived");
    assert!(started.elapsed() >= Duration::from_millis(700));

    let port = dovecot.imap_port;
    let password = dovecot.password.clone();
    let appender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut client = crate::dovecot::ImapClient::login(port, crate::dovecot::USER, &password);
        client.append("INBOX", &patch_mail(2, 200, "\r\n"))
    });
    let started = Instant::now();
    let woke = source.wait_for_mail(Duration::from_secs(20));
    assert!(woke.unwrap_or_else(|e| panic!("{e}\n{}", dovecot.logs())));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "IDLE should wake at once, took {:?}",
        started.elapsed()
    );
    let appended = appender.join().expect("append thread");

    let (result, new) = fetch_all(&mut source, Some(&cursor), &never_seen);
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(uids(&new), vec![appended.uid]);
}

#[test]
fn without_idle_the_source_polls() {
    let dovecot = Dovecot::start_with(DovecotOptions { without_idle: true });
    let mut source = ImapSource::new(dovecot.settings("INBOX"));
    let (result, _) = fetch_all(&mut source, None, &never_seen);
    result.unwrap_or_else(|e| panic!("{e}"));

    let port = dovecot.imap_port;
    let password = dovecot.password.clone();
    let appender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut client = crate::dovecot::ImapClient::login(port, crate::dovecot::USER, &password);
        client.append("INBOX", &patch_mail(1, 200, "\r\n"))
    });
    let started = Instant::now();
    let woke = source.wait_for_mail(Duration::from_secs(2));
    appender.join().expect("append thread");
    assert!(
        woke.unwrap_or_else(|e| panic!("{e}")),
        "the poll at the deadline sees the mail"
    );
    // IDLE would have woken at once; a poll only looks again at the deadline.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_cursor_is_rejected_before_connecting() {
    let settings = settings_without_server(free_port(), Duration::from_secs(1));
    let (result, _) = fetch_all(&mut ImapSource::new(settings), Some("uid=3"), &never_seen);
    let error = result.expect_err("the cursor is garbage");
    assert!(matches!(error, Error::BadCursor { .. }), "{error:?}");
}
