//! rpm's version comparison (`rpmvercmp`, rpm 4.18's `rpmio/rpmvercmp.c`),
//! so the publish stage orders builds exactly as dnf will: a repository
//! keeps "the newest N" by the order its clients upgrade in, never by file
//! name (`1.10` sorts before `1.9` as text).
//!
//! Pure: no process, no I/O. The unit tests compare it with the real
//! `rpm.vercmp` when rpm is installed.

use std::cmp::Ordering;

/// Compares two version or release strings as rpm does: alphanumeric
/// segments, numbers numerically (leading zeros ignored) and newer than
/// letters, `~` older than anything (even the end), `^` newer than the end
/// but older than anything else.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    loop {
        while one.first().is_some_and(separator) {
            one = &one[1..];
        }
        while two.first().is_some_and(separator) {
            two = &two[1..];
        }
        match (one.first(), two.first()) {
            (Some(b'~'), Some(b'~')) => {
                (one, two) = (&one[1..], &two[1..]);
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                (one, two) = (&one[1..], &two[1..]);
                continue;
            }
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), None) => return Ordering::Greater,
            (Some(b'^'), Some(_)) => return Ordering::Less,
            (Some(_), Some(b'^')) => return Ordering::Greater,
            (None, _) | (_, None) => break,
            _ => {}
        }
        let numeric = one[0].is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let len1 = one.iter().take_while(|c| class(c)).count();
        let len2 = two.iter().take_while(|c| class(c)).count();
        let (seg1, seg2) = (&one[..len1], &two[..len2]);
        if seg2.is_empty() {
            // Segments of different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let strip = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
            let (n1, n2) = (&seg1[strip(seg1)..], &seg2[strip(seg2)..]);
            n1.len().cmp(&n2.len()).then_with(|| n1.cmp(n2))
        } else {
            seg1.cmp(seg2)
        };
        if order != Ordering::Equal {
            return order;
        }
        (one, two) = (&one[len1..], &two[len2..]);
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// `(version, release)` pairs compared as rpm compares EVRs without epoch.
pub fn compare_version_release(a: (&str, &str), b: (&str, &str)) -> Ordering {
    rpmvercmp(a.0, b.0).then_with(|| rpmvercmp(a.1, b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs from rpm's own test suite (`tests/rpmvercmp.at`) plus the
    /// releases this project stamps.
    const CASES: &[(&str, &str, i32)] = &[
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1a", "2.0.1", 1),
        ("5.5p1", "5.5p2", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("xyz10", "xyz10.1", -1),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("5.5p1", "5.5.p1", 0),
        ("1.0010", "1.9", 1),
        ("1.05", "1.5", 0),
        ("1.0", "1", 1),
        ("2.50", "2.5", 1),
        ("fc4", "fc.4", 0),
        ("FC5", "fc4", -1),
        ("2a", "2.0", -1),
        ("1.0a", "1.0aa", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0^", "1.0", 1),
        ("1.0^git1", "1.0", 1),
        ("1.0^git1", "1.01", -1),
        ("1.0^git1~pre", "1.0^git1", -1),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        // Same-day snapshots: the counter decides, whatever the hashes.
        (
            "3.9.20261202gitfff0000.el9",
            "3.10.20261202git0000aaa.el9",
            -1,
        ),
        ("3.10.20261202gitaaa.el9", "3.10.20261203gitaaa.el9", -1),
        // The old scheme: same-day builds ordered by hash (the bug).
        ("1.20261202gitfff0000", "1.20261202git0000aaa", 1),
    ];

    #[test]
    fn orders_like_rpm() {
        for &(a, b, want) in CASES {
            assert_eq!(rpmvercmp(a, b) as i32, want, "rpmvercmp({a:?}, {b:?})");
            assert_eq!(rpmvercmp(b, a) as i32, -want, "rpmvercmp({b:?}, {a:?})");
        }
    }

    /// The same cases through the installed rpm's own `rpm.vercmp` (rpm's
    /// Lua interpreter, in Debian's `rpm` package), when there is one.
    #[test]
    fn agrees_with_the_installed_rpm() {
        let lua: String = CASES
            .iter()
            // rpm's `print` adds no newline: a space separates answers.
            .map(|(a, b, _)| format!("print(rpm.vercmp({a:?}, {b:?}) .. ' ')\n"))
            .collect();
        let Ok(out) = std::process::Command::new("rpm")
            .arg("--eval")
            .arg(format!("%{{lua:\n{lua}}}"))
            .output()
        else {
            eprintln!("rpm not installed: compared with rpm's own test cases only");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<i32> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let ours: Vec<i32> = CASES
            .iter()
            .map(|(a, b, _)| rpmvercmp(a, b) as i32)
            .collect();
        assert_eq!(got, ours);
    }

    #[test]
    fn version_then_release() {
        assert_eq!(
            compare_version_release(("2.1", "3.10.x"), ("2.1", "3.9.x")),
            Ordering::Greater
        );
        assert_eq!(
            compare_version_release(("2.0", "9"), ("2.1", "1")),
            Ordering::Less
        );
    }
}
