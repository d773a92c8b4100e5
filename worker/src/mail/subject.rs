//! The patch subject grammar (pure): the team's `[branch PATCH repo] title`
//! form, the ordinary `[PATCH v2 3/7]` forms, and user regexes.
//!
//! Input is a decoded, unfolded subject (see `mail.rs`). The grammar never
//! fails on odd input: it answers "not a patch" with the reason instead.

use serde::{Deserialize, Serialize};

/// The fields a patch subject carries. `version` is 1 when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubjectFields {
    pub branch: Option<String>,
    pub repo: Option<String>,
    pub version: u32,
    pub index: Option<u32>,
    pub total: Option<u32>,
    pub title: String,
    /// Every other word found in the bracketed prefixes (`RFC`, `RESEND`,
    /// `qemu-devel`, ...), in order, as written.
    pub tags: Vec<String>,
}

/// Why a subject is not a patch subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPatch {
    /// No `[... PATCH ...]` prefix and no user pattern matched.
    NoMatch,
    /// `Re:`/`AW:`... in front: a reply in a patch thread.
    Reply,
    /// It looks like a patch subject but its numbering is impossible.
    Invalid(String),
}

impl std::fmt::Display for NotPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotPatch::NoMatch => f.write_str("subject does not match the patch grammar"),
            NotPatch::Reply => f.write_str("reply to a patch"),
            NotPatch::Invalid(reason) => write!(f, "invalid patch subject: {reason}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("subject pattern {pattern:?} is not a valid regex: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error(
        "subject pattern {pattern:?} has no named group among branch, repo, version, index, total, title"
    )]
    NoGroups { pattern: String },
}

#[derive(Debug, Clone, Default)]
pub struct SubjectGrammar {
    custom: Vec<regex::Regex>,
}

/// Words of a bracket prefix that are tags, never a branch or a repository.
const KEYWORDS: &[&str] = &[
    "rfc", "rft", "resend", "wip", "dnm", "draft", "test", "repost",
];

/// Reply prefixes of common mail clients (English, German, Nordic, Dutch).
const REPLY_PREFIXES: &[&str] = &["re", "aw", "sv", "antw"];

/// Forward prefixes: a forwarded patch is still a patch (`git am` reads the
/// forwarded mail's body as is), so these are stripped, not refused.
const FORWARD_PREFIXES: &[&str] = &["fwd", "fw", "wg", "tr"];

impl SubjectGrammar {
    pub fn new(patterns: &[String]) -> Result<Self, Error> {
        let mut custom = Vec::with_capacity(patterns.len());
        for p in patterns {
            let re = regex::Regex::new(p).map_err(|source| Error::BadPattern {
                pattern: p.clone(),
                source,
            })?;
            let known = ["branch", "repo", "version", "index", "total", "title"];
            if !re.capture_names().flatten().any(|n| known.contains(&n)) {
                return Err(Error::NoGroups { pattern: p.clone() });
            }
            custom.push(re);
        }
        Ok(Self { custom })
    }

    pub fn parse(&self, subject: &str) -> Result<SubjectFields, NotPatch> {
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        // Replies first, so a loose user pattern cannot make a reply to a
        // patch (`Re: PULL qemu: ...`) a patch of its own.
        if let Some(rest) = strip_reply(&subject) {
            let patchlike = self.custom.iter().any(|re| re.is_match(rest))
                || !matches!(parse_builtin(rest), Err(NotPatch::NoMatch));
            return Err(if patchlike {
                NotPatch::Reply
            } else {
                NotPatch::NoMatch
            });
        }
        for re in &self.custom {
            if let Some(fields) = parse_custom(re, &subject) {
                return validate(fields);
            }
        }
        parse_builtin(&subject).and_then(validate)
    }
}

fn validate(fields: SubjectFields) -> Result<SubjectFields, NotPatch> {
    match (fields.index, fields.total) {
        (_, Some(0)) => Err(NotPatch::Invalid("total is 0".into())),
        (Some(i), Some(t)) if i > t => Err(NotPatch::Invalid(format!("patch {i} of {t}"))),
        (_, _) if fields.version == 0 => Err(NotPatch::Invalid("version 0".into())),
        _ => Ok(fields),
    }
}

fn parse_version(text: &str) -> Option<u32> {
    let digits = text.strip_prefix(['v', 'V']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_custom(re: &regex::Regex, subject: &str) -> Option<SubjectFields> {
    let caps = re.captures(subject)?;
    let text = |name: &str| {
        caps.name(name)
            .map(|m| m.as_str().trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let number = |name: &str| text(name).and_then(|t| parse_version(&t));
    let whole = caps.get(0)?;
    let title = text("title").unwrap_or_else(|| subject[whole.end()..].trim().to_owned());
    Some(SubjectFields {
        branch: text("branch"),
        repo: text("repo"),
        version: number("version").unwrap_or(1),
        index: number("index"),
        total: number("total"),
        title,
        tags: Vec::new(),
    })
}

/// The subject after list tags and reply/forward prefixes, when one of the
/// prefixes is a reply (`[list] Re: Fwd: x` -> `x`).
fn strip_reply(subject: &str) -> Option<&str> {
    let mut rest = subject.trim();
    let mut reply = false;
    loop {
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            let group = &after[..end];
            if patch_token(group).is_some() {
                break;
            }
            rest = after[end + 1..].trim_start();
        } else if let Some((after, is_reply)) = strip_prefix_word(rest) {
            reply |= is_reply;
            rest = after;
        } else {
            break;
        }
    }
    reply.then_some(rest)
}

/// Strips one `Re:`-like prefix; returns the rest and whether it was a
/// reply (true) or a forward (false).
fn strip_prefix_word(s: &str) -> Option<(&str, bool)> {
    let colon = s.find(':')?;
    let word = s[..colon].trim();
    // `Re[2]:` and `Re^2:` counters.
    let base = word.split(['[', '^']).next().unwrap_or(word).to_lowercase();
    let rest = s[colon + 1..].trim_start();
    if REPLY_PREFIXES.contains(&base.as_str()) {
        Some((rest, true))
    } else if FORWARD_PREFIXES.contains(&base.as_str()) {
        Some((rest, false))
    } else {
        None
    }
}

fn parse_builtin(subject: &str) -> Result<SubjectFields, NotPatch> {
    let mut rest = subject.trim();
    let mut groups: Vec<&str> = Vec::new();
    let mut reply = false;
    // Prefixes and bracket groups in any order: `Re: [list] [PATCH] t`,
    // `[list] Re: [PATCH] t`, `Fwd: [PATCH] t`.
    loop {
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            groups.push(after[..end].trim());
            rest = after[end + 1..].trim_start();
        } else if let Some((after, is_reply)) = strip_prefix_word(rest)
            // After the PATCH group the title begins: `[PATCH] Re: x` is a
            // patch titled "Re: x".
            && !groups.iter().any(|g| patch_token(g).is_some())
        {
            reply |= is_reply;
            rest = after;
        } else {
            break;
        }
    }
    let title = rest.trim().to_owned();
    let Some(patch_at) = groups.iter().position(|g| patch_token(g).is_some()) else {
        return Err(NotPatch::NoMatch);
    };
    if reply {
        return Err(NotPatch::Reply);
    }
    let mut fields = SubjectFields {
        version: 1,
        title,
        ..SubjectFields::default()
    };
    for (i, group) in groups.iter().enumerate() {
        if i != patch_at {
            fields
                .tags
                .extend(group.split_whitespace().map(str::to_owned));
        }
    }
    let words: Vec<&str> = groups[patch_at].split_whitespace().collect();
    let (pos, inline_version) = patch_token(groups[patch_at]).unwrap_or((0, None));
    if let Some(v) = inline_version {
        fields.version = v;
    }
    let mut leftovers_after = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if i == pos {
            continue;
        }
        let lower = word.to_lowercase();
        if KEYWORDS.contains(&lower.as_str()) {
            fields.tags.push((*word).to_owned());
        } else if let Some(v) = parse_version(word).filter(|_| word.starts_with(['v', 'V'])) {
            fields.version = v;
        } else if let Some((i_text, t_text)) = word.split_once('/')
            && let (Ok(index), Ok(total)) = (i_text.parse::<u32>(), t_text.parse::<u32>())
        {
            fields.index = Some(index);
            fields.total = Some(total);
        } else if i < pos {
            if fields.branch.is_none() {
                fields.branch = Some((*word).to_owned());
            } else {
                fields.tags.push((*word).to_owned());
            }
        } else {
            leftovers_after.push(*word);
        }
    }
    let mut leftovers = leftovers_after.into_iter();
    fields.repo = leftovers.next().map(str::to_owned);
    fields.tags.extend(leftovers.map(str::to_owned));
    Ok(fields)
}

/// Position of the `PATCH` word in a bracket group, with the version when
/// written as one word (`PATCHv2`).
fn patch_token(group: &str) -> Option<(usize, Option<u32>)> {
    group.split_whitespace().enumerate().find_map(|(i, w)| {
        let upper = w.to_ascii_uppercase();
        if upper == "PATCH" {
            Some((i, None))
        } else {
            upper
                .strip_prefix("PATCH")
                .and_then(parse_version)
                .map(|v| (i, Some(v)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(
        branch: Option<&str>,
        repo: Option<&str>,
        version: u32,
        numbering: Option<(u32, u32)>,
        title: &str,
        tags: &[&str],
    ) -> SubjectFields {
        SubjectFields {
            branch: branch.map(str::to_owned),
            repo: repo.map(str::to_owned),
            version,
            index: numbering.map(|n| n.0),
            total: numbering.map(|n| n.1),
            title: title.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn builtin_grammar_table() {
        let g = SubjectGrammar::default();
        let cases: Vec<(&str, SubjectFields)> = vec![
            ("[PATCH] Fix it", f(None, None, 1, None, "Fix it", &[])),
            (
                "[PATCH v3 2/5] Fix it",
                f(None, None, 3, Some((2, 5)), "Fix it", &[]),
            ),
            (
                "[PATCH 0/4] Cover",
                f(None, None, 1, Some((0, 4)), "Cover", &[]),
            ),
            (
                "[RFC PATCH v2 0/4] Idea",
                f(None, None, 2, Some((0, 4)), "Idea", &["RFC"]),
            ),
            ("[PATCH RFC] Idea", f(None, None, 1, None, "Idea", &["RFC"])),
            (
                "[PATCH RESEND v2 1/2] Again",
                f(None, None, 2, Some((1, 2)), "Again", &["RESEND"]),
            ),
            (
                "[Resend][PATCH] Again",
                f(None, None, 1, None, "Again", &["Resend"]),
            ),
            ("[PATCH V2] Upper", f(None, None, 2, None, "Upper", &[])),
            (
                "[PATCHv2 1/3] Joined",
                f(None, None, 2, Some((1, 3)), "Joined", &[]),
            ),
            (
                "[PATCH 01/10] Padded",
                f(None, None, 1, Some((1, 10)), "Padded", &[]),
            ),
            (
                "[PATCH 1/3 v2] Late version",
                f(None, None, 2, Some((1, 3)), "Late version", &[]),
            ),
            (
                "[qemu-devel] [PATCH 1/2] Listed",
                f(None, None, 1, Some((1, 2)), "Listed", &["qemu-devel"]),
            ),
            (
                "[master PATCH kimchi] Team",
                f(Some("master"), Some("kimchi"), 1, None, "Team", &[]),
            ),
            (
                "[stable-2.1 PATCH v3 2/5 qemu] Team numbered",
                f(
                    Some("stable-2.1"),
                    Some("qemu"),
                    3,
                    Some((2, 5)),
                    "Team numbered",
                    &[],
                ),
            ),
            (
                "[master PATCH hello 1/3] git format-patch order",
                f(
                    Some("master"),
                    Some("hello"),
                    1,
                    Some((1, 3)),
                    "git format-patch order",
                    &[],
                ),
            ),
            (
                "[master RFC PATCH v2 libvirt] Both",
                f(Some("master"), Some("libvirt"), 2, None, "Both", &["RFC"]),
            ),
            (
                "[PATCH net-next v2 3/5] Linux tree",
                f(None, Some("net-next"), 2, Some((3, 5)), "Linux tree", &[]),
            ),
            (
                "Fwd: [PATCH] Forwarded",
                f(None, None, 1, None, "Forwarded", &[]),
            ),
            (
                "  [PATCH]\tSpaced   out  ",
                f(None, None, 1, None, "Spaced out", &[]),
            ),
            ("[patch] lower", f(None, None, 1, None, "lower", &[])),
            ("[PATCH] ", f(None, None, 1, None, "", &[])),
            (
                "[PATCH] Re: title that starts like a reply",
                f(
                    None,
                    None,
                    1,
                    None,
                    "Re: title that starts like a reply",
                    &[],
                ),
            ),
        ];
        for (subject, want) in cases {
            assert_eq!(g.parse(subject), Ok(want), "{subject:?}");
        }
    }

    #[test]
    fn not_patches_table() {
        let g = SubjectGrammar::default();
        let cases = [
            ("Re: [PATCH 1/2] Fix", NotPatch::Reply),
            ("RE: [PATCH] Fix", NotPatch::Reply),
            ("AW: [PATCH] Fix", NotPatch::Reply),
            ("Re[2]: [PATCH] Fix", NotPatch::Reply),
            ("[qemu-devel] Re: [PATCH] Fix", NotPatch::Reply),
            ("Re: Fwd: [PATCH] Fix", NotPatch::Reply),
            ("Release plans", NotPatch::NoMatch),
            ("Re: Release plans", NotPatch::NoMatch),
            ("[ANNOUNCE] qemu 9.1", NotPatch::NoMatch),
            ("Fix [PATCH] in the middle", NotPatch::NoMatch),
            ("[DISPATCH] not a patch", NotPatch::NoMatch),
            ("", NotPatch::NoMatch),
            ("[PATCH", NotPatch::NoMatch),
            (
                "[PATCH 3/2] Impossible",
                NotPatch::Invalid("patch 3 of 2".into()),
            ),
            ("[PATCH 0/0] Empty", NotPatch::Invalid("total is 0".into())),
            ("[PATCH v0] Zero", NotPatch::Invalid("version 0".into())),
        ];
        for (subject, want) in cases {
            assert_eq!(g.parse(subject), Err(want), "{subject:?}");
        }
    }

    #[test]
    fn user_patterns_come_first() {
        let g = SubjectGrammar::new(&[
            r"^\[(?P<repo>[a-z]+)\]\[(?P<branch>[\w.-]+)\] (?:v(?P<version>\d+) )?(?P<index>\d+)/(?P<total>\d+): (?P<title>.*)$".to_owned(),
            r"^PULL (?P<repo>\w+):".to_owned(),
        ])
        .unwrap();
        assert_eq!(
            g.parse("[kimchi][stable] v2 1/3: Fix the UI"),
            Ok(f(
                Some("stable"),
                Some("kimchi"),
                2,
                Some((1, 3)),
                "Fix the UI",
                &[]
            ))
        );
        assert_eq!(
            g.parse("PULL qemu: the rest is the title"),
            Ok(f(None, Some("qemu"), 1, None, "the rest is the title", &[]))
        );
        // Falls back to the built-in grammar.
        assert_eq!(g.parse("[PATCH] x").unwrap().title, "x");
        // A reply to a patch in the user's form is a reply, not a patch.
        assert_eq!(g.parse("Re: PULL qemu: the rest"), Err(NotPatch::Reply));
        assert_eq!(g.parse("Re: lunch"), Err(NotPatch::NoMatch));
        let e = SubjectGrammar::new(&["(".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid regex"), "{e}");
        let e = SubjectGrammar::new(&["PULL".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no named group"), "{e}");
    }
}
