//! The patch subject grammar (pure): the team's `[branch PATCH repo] title`
//! form, the ordinary `[PATCH v2 3/7]` forms as Patchwork, Patchew and b4
//! read them (commas, `1 of 2`, glued `PATCHv2`/`PATCH1/8`, several bracket
//! groups, `(v2)` after the title), pull requests (`[GIT PULL]`), and user
//! regexes.
//!
//! Input is a decoded, unfolded subject (see `mail.rs`). The grammar never
//! fails on odd input: it answers "not a patch" with the reason instead.

use serde::{Deserialize, Serialize};

/// What the subject announces. Pull requests are recognised and kept, but
/// never applied as patches (see `classify.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    #[default]
    Patch,
    Pull,
}

impl SubjectKind {
    pub fn is_patch(&self) -> bool {
        *self == SubjectKind::Patch
    }
}

/// The fields a patch subject carries. `version` is 1 when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubjectFields {
    pub branch: Option<String>,
    pub repo: Option<String>,
    pub version: u32,
    /// The `M` of `vN.M`: a patch re-sent alone as a correction of patch
    /// `index` of version `N` (`[PATCH v7.1 39/72]`); 0 when absent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
    pub index: Option<u32>,
    /// `None` with an `index` for an unknown total (`[PATCH 3/n]`).
    pub total: Option<u32>,
    pub title: String,
    /// Every other word found in the bracketed prefixes (`RFC`, `RESEND`,
    /// `qemu-devel`, a word before `PATCH` that is no configured branch,
    /// ...), in order, as written.
    pub tags: Vec<String>,
    /// Stored fields written before pull requests were told apart read as
    /// patches; a patch is not written out, so stored JSON stays the same.
    #[serde(default, skip_serializing_if = "SubjectKind::is_patch")]
    pub kind: SubjectKind,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// The configured branch names. A word before `PATCH` is a branch only
    /// when it is one of them; `None` (no repository configured) keeps the
    /// team form's reading that the first such word is the branch.
    branches: Option<Vec<String>>,
    /// The configured repository names. The word after `PATCH` is the
    /// repository when it is one of them, or when a branch came before
    /// `PATCH` (the team's `[branch PATCH repo]`, where an unknown name is
    /// an error worth reporting, not a tag); else it is a tag
    /// (`[PATCH net-next]`, `[PATCH qemu-web]`) that routes can match.
    /// `None` (no repository configured) takes it as the repository.
    repos: Option<Vec<String>>,
}

/// Words of a bracket prefix that are tags, never a branch or a repository.
const KEYWORDS: &[&str] = &[
    "rfc", "rft", "resend", "wip", "dnm", "draft", "test", "repost",
];

/// Reply prefixes of common mail clients (English, German, Nordic, Dutch,
/// Polish, Finnish).
const REPLY_PREFIXES: &[&str] = &["re", "aw", "sv", "antw", "odp", "vs"];

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
        Ok(Self {
            custom,
            branches: None,
            repos: None,
        })
    }

    /// The grammar that takes a word before `PATCH` as the branch only when
    /// it is one of `branches` (every configured repository's).
    pub fn with_branches(mut self, branches: Vec<String>) -> Self {
        self.branches = Some(branches);
        self
    }

    /// The grammar that takes the word after `PATCH` as the repository
    /// only when it is one of `repos` or follows a branch (see `repos`).
    pub fn with_repos(mut self, repos: Vec<String>) -> Self {
        self.repos = Some(repos);
        self
    }

    fn is_repo(&self, word: &str, after_branch: bool) -> bool {
        match &self.repos {
            None => true,
            Some(names) => after_branch || names.iter().any(|r| r == word),
        }
    }

    pub fn parse(&self, subject: &str) -> Result<SubjectFields, NotPatch> {
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let lead = Lead::read(&subject);
        // Replies first, so a loose user pattern cannot make a reply to a
        // patch (`Re: PULL qemu: ...`) a patch of its own.
        if lead.reply {
            let rest = &subject[lead.after_reply..];
            let patchlike = self.custom.iter().any(|re| re.is_match(rest))
                || lead
                    .groups
                    .iter()
                    .map(|g| lex_group(g))
                    .chain(bracket_groups(lead.title))
                    .any(|g| anchor(&g).is_some() || numbering_of(&g).is_some());
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
        self.parse_builtin(&lead).and_then(validate)
    }

    fn is_branch(&self, word: &str) -> bool {
        match &self.branches {
            None => true,
            Some(names) => names.iter().any(|b| b == word),
        }
    }

    fn parse_builtin(&self, lead: &Lead<'_>) -> Result<SubjectFields, NotPatch> {
        let groups: Vec<Vec<Word<'_>>> = lead.groups.iter().map(|g| lex_group(g)).collect();
        let anchored = groups
            .iter()
            .enumerate()
            .find_map(|(i, g)| anchor(g).map(|a| (i, a)));
        // Without a `PATCH`/`PULL` word, a numbering in brackets still marks
        // a patch (`[net,v2,1/2]`, as Patchwork and b4 read it); the body
        // must then hold a diff.
        if anchored.is_none() && !groups.iter().any(|g| numbering_of(g).is_some()) {
            return Err(NotPatch::NoMatch);
        }
        let (title, title_version) = version_after_title(lead.title);
        let mut fields = SubjectFields {
            version: 1,
            title: title.to_owned(),
            ..SubjectFields::default()
        };
        let mut version = None;
        let mut numbering = None;
        for (gi, group) in groups.iter().enumerate() {
            let anchor_at = anchored.filter(|(ai, _)| *ai == gi).map(|(_, a)| a);
            let mut repo_seen = false;
            for (wi, word) in group.iter().enumerate() {
                match word {
                    Word::Marker(kind) => {
                        if anchor_at == Some(wi) {
                            fields.kind = *kind;
                        }
                    }
                    Word::Git(_) if anchor_at == Some(wi + 1) => {}
                    Word::Version(v, r) => {
                        version.get_or_insert((*v, *r));
                    }
                    Word::Numbering(i, t) => {
                        numbering.get_or_insert((*i, *t));
                    }
                    Word::Overflow(w) => {
                        return Err(NotPatch::Invalid(format!("numbering {w} is too large")));
                    }
                    Word::Keyword(w) => fields.tags.push((*w).to_owned()),
                    Word::Git(w) | Word::Plain(w) => match anchor_at {
                        Some(at) if wi < at => {
                            if fields.branch.is_none() && self.is_branch(w) {
                                fields.branch = Some((*w).to_owned());
                            } else {
                                fields.tags.push((*w).to_owned());
                            }
                        }
                        Some(_) if !repo_seen => {
                            repo_seen = true;
                            if self.is_repo(w, fields.branch.is_some()) {
                                fields.repo = Some((*w).to_owned());
                            } else {
                                fields.tags.push((*w).to_owned());
                            }
                        }
                        _ => fields.tags.push((*w).to_owned()),
                    },
                }
            }
        }
        if let Some((v, r)) = version.or(title_version.map(|v| (v, 0))) {
            fields.version = v;
            fields.revision = r;
        }
        if let Some((index, total)) = numbering {
            fields.index = Some(index);
            fields.total = total;
        }
        Ok(fields)
    }
}

/// The words of every bracket group in front of the title, as written
/// (split at spaces and commas): what `patchline parse` shows as
/// `prefixes`.
pub fn prefixes(subject: &str) -> Vec<String> {
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    Lead::read(&subject)
        .groups
        .iter()
        .flat_map(|g| split_group(g))
        .map(str::to_owned)
        .collect()
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

/// `vN`, `N`, or a partial reroll's `vN.M` (`v7.1`): version and revision.
fn parse_revision(text: &str) -> Option<(u32, u32)> {
    match text.split_once('.') {
        None => parse_version(text).map(|v| (v, 0)),
        Some((version, revision)) => {
            if revision.is_empty() || !revision.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((parse_version(version)?, revision.parse().ok()?))
        }
    }
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
    let (version, revision) = text("version")
        .and_then(|t| parse_revision(&t))
        .unwrap_or((1, 0));
    Some(SubjectFields {
        branch: text("branch"),
        repo: text("repo"),
        version,
        revision,
        index: number("index"),
        total: number("total"),
        title,
        ..SubjectFields::default()
    })
}

/// The front of a subject: bracket groups and reply/forward prefixes in any
/// order (`Re: [list] [PATCH] t`, `[list] Re: [PATCH] t`), then the title.
struct Lead<'a> {
    groups: Vec<&'a str>,
    /// A reply prefix came before the `PATCH` group.
    reply: bool,
    /// Where the text after the last reply/forward prefix starts.
    after_reply: usize,
    title: &'a str,
}

impl<'a> Lead<'a> {
    fn read(subject: &'a str) -> Self {
        let mut rest = subject.trim_start();
        let mut lead = Lead {
            groups: Vec::new(),
            reply: false,
            after_reply: subject.len() - rest.len(),
            title: "",
        };
        loop {
            if let Some(after) = rest.strip_prefix('[') {
                let Some(end) = after.find(']') else { break };
                lead.groups.push(after[..end].trim());
                rest = after[end + 1..].trim_start();
            } else if let Some((after, is_reply)) = strip_prefix_word(rest)
                // After the PATCH group the title begins: `[PATCH] Re: x` is
                // a patch titled "Re: x".
                && !lead.groups.iter().any(|g| anchor(&lex_group(g)).is_some())
            {
                lead.reply |= is_reply;
                rest = after;
                lead.after_reply = subject.len() - rest.len();
            } else {
                break;
            }
        }
        lead.title = rest.trim();
        lead
    }
}

/// Strips one `Re:`-like prefix; returns the rest and whether it was a
/// reply (true) or a forward (false).
fn strip_prefix_word(s: &str) -> Option<(&str, bool)> {
    let colon = s.find(':')?;
    let word = s[..colon].trim();
    // `Re[2]:`, `Re^2:` and `Re(2):` counters.
    let base = word
        .split(['[', '^', '('])
        .next()
        .unwrap_or(word)
        .to_lowercase();
    let rest = s[colon + 1..].trim_start();
    if REPLY_PREFIXES.contains(&base.as_str()) {
        Some((rest, true))
    } else if FORWARD_PREFIXES.contains(&base.as_str()) {
        Some((rest, false))
    } else {
        None
    }
}

/// Bracket groups anywhere in a text (`Re: about [PATCH v2] x`).
fn bracket_groups(text: &str) -> Vec<Vec<Word<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(end) = after.find(']') else { break };
        out.push(lex_group(&after[..end]));
        rest = &after[end + 1..];
    }
    out
}

/// One word of a bracket group, as the grammar reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word<'a> {
    /// `PATCH` or `PULL`.
    Marker(SubjectKind),
    /// `GIT`: part of the marker right before `PULL`, else a plain word.
    Git(&'a str),
    /// `vN` or `vN.M` (version, revision; 0 without one).
    Version(u32, u32),
    /// Index and total; the total is unknown in `3/n`.
    Numbering(u32, Option<u32>),
    /// A numbering whose index or total does not fit a `u32`
    /// (`1/99999999999999999999`): an invalid numbering, never a name.
    Overflow(&'a str),
    Keyword(&'a str),
    Plain(&'a str),
}

/// Where the marker (`PATCH`, `PULL`) of a group stands.
fn anchor(group: &[Word<'_>]) -> Option<usize> {
    group.iter().position(|w| matches!(w, Word::Marker(_)))
}

fn numbering_of(group: &[Word<'_>]) -> Option<(u32, Option<u32>)> {
    group.iter().find_map(|w| match w {
        Word::Numbering(i, t) => Some((*i, *t)),
        _ => None,
    })
}

/// A bracket group's words: commas separate as spaces do (`PATCH,RFC`,
/// `net,v2,1/2`).
fn split_group(group: &str) -> impl Iterator<Item = &str> {
    group
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
}

fn lex_group(group: &str) -> Vec<Word<'_>> {
    let raw: Vec<&str> = split_group(group).collect();
    let mut words = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // Mercurial's `1 of 2`.
        if let [index, of, total, ..] = raw[i..]
            && of.eq_ignore_ascii_case("of")
            && let (Ok(index), Ok(total)) = (index.parse::<u32>(), total.parse::<u32>())
        {
            words.push(Word::Numbering(index, Some(total)));
            i += 3;
            continue;
        }
        // `1 of 99999999999999999999`: a numbering no series can have,
        // not three words.
        if let [index, of, total, ..] = raw[i..]
            && of.eq_ignore_ascii_case("of")
            && [index, total]
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        {
            let big = if index.parse::<u32>().is_err() {
                index
            } else {
                total
            };
            words.push(Word::Overflow(big));
            i += 3;
            continue;
        }
        lex_word(raw[i], &mut words);
        i += 1;
    }
    words
}

/// One word, which may be several glued together: `PATCHv2`, `PATCH1/8`,
/// `v2PATCH1/4`.
fn lex_word<'a>(word: &'a str, out: &mut Vec<Word<'a>>) {
    let lower = word.to_ascii_lowercase();
    // A version glued in front of the marker (`v2PATCH`).
    let (lead_version, body_at) = match lower.strip_prefix('v') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let marker = &after[digits..];
            match after[..digits].parse::<u32>() {
                Ok(v)
                    if digits > 0
                        && (marker.starts_with("patch") || marker.starts_with("pull")) =>
                {
                    (Some(v), 1 + digits)
                }
                _ => (None, 0),
            }
        }
        None => (None, 0),
    };
    let body = &lower[body_at..];
    // `PATCHES` and `PATCHSET` as b4 reads them (any word starting with
    // `patch`); the longer names first, so `patches` is not `patch` + `es`.
    let marker = [
        ("patchset", SubjectKind::Patch),
        ("patches", SubjectKind::Patch),
        ("patch", SubjectKind::Patch),
        ("pull", SubjectKind::Pull),
    ]
    .into_iter()
    .find_map(|(name, kind)| body.strip_prefix(name).map(|tail| (kind, tail)));
    if let Some((kind, tail)) = marker {
        let tail_word = if tail.is_empty() {
            None
        } else if let Some((v, r)) = parse_revision(tail) {
            Some(Word::Version(v, r))
        } else {
            // The tail as written (`to_ascii_lowercase` keeps byte offsets),
            // so an overflowing numbering is named as the sender wrote it.
            numbering_word(&word[word.len() - tail.len()..])
        };
        if tail.is_empty() || tail_word.is_some() {
            if let Some(v) = lead_version {
                out.push(Word::Version(v, 0));
            }
            out.push(Word::Marker(kind));
            out.extend(tail_word);
            return;
        }
    }
    out.push(if word.eq_ignore_ascii_case("git") {
        Word::Git(word)
    } else if KEYWORDS.contains(&lower.as_str()) {
        Word::Keyword(word)
    } else if let Some((v, r)) = parse_revision(word).filter(|_| word.starts_with(['v', 'V'])) {
        Word::Version(v, r)
    } else if let Some(n) = numbering_word(word) {
        n
    } else {
        Word::Plain(word)
    });
}

/// `3/7`, `03/10`, and `3/n` for a total not known when it was sent.
fn numbering_word(word: &str) -> Option<Word<'_>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (index, total) = word.split_once('/')?;
    if !digits(index) {
        return None;
    }
    let unknown_total = matches!(total, "n" | "N" | "x" | "X" | "?");
    if !unknown_total && !digits(total) {
        return None;
    }
    // Digits that overflow are still a numbering's shape: read as a word
    // they would become a repository or branch name.
    let Ok(index) = index.parse() else {
        return Some(Word::Overflow(word));
    };
    if unknown_total {
        return Some(Word::Numbering(index, None));
    }
    Some(match total.parse() {
        Ok(total) => Word::Numbering(index, Some(total)),
        Err(_) => Word::Overflow(word),
    })
}

/// A version written after the title, `title (v2)`, as Patchwork reads it;
/// the marker leaves the title so a reroll keeps its series' title.
fn version_after_title(title: &str) -> (&str, Option<u32>) {
    if let Some(body) = title.strip_suffix(')')
        && let Some(open) = body.rfind('(')
        && let Some(v) = parse_version(body[open + 1..].trim())
        && body[open + 1..].trim_start().starts_with(['v', 'V'])
    {
        return (body[..open].trim_end(), Some(v));
    }
    (title, None)
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
            ..SubjectFields::default()
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

#[cfg(test)]
mod wider_grammar_tests {
    //! The forms Patchwork, Patchew and b4 read, and what the team form
    //! makes of a word before `PATCH` once branches are configured.
    use super::*;

    struct Want {
        branch: Option<&'static str>,
        repo: Option<&'static str>,
        version: u32,
        revision: u32,
        index: Option<u32>,
        total: Option<u32>,
        title: &'static str,
        tags: &'static [&'static str],
        kind: SubjectKind,
    }

    const W: Want = Want {
        branch: None,
        repo: None,
        version: 1,
        revision: 0,
        index: None,
        total: None,
        title: "t",
        tags: &[],
        kind: SubjectKind::Patch,
    };

    fn fields(w: &Want) -> SubjectFields {
        SubjectFields {
            branch: w.branch.map(str::to_owned),
            repo: w.repo.map(str::to_owned),
            version: w.version,
            revision: w.revision,
            index: w.index,
            total: w.total,
            title: w.title.to_owned(),
            tags: w.tags.iter().map(|t| (*t).to_owned()).collect(),
            kind: w.kind,
        }
    }

    fn configured() -> SubjectGrammar {
        SubjectGrammar::default().with_branches(vec!["master".into(), "stable-2.1".into()])
    }

    #[test]
    fn peer_forms_table() {
        let pull = SubjectKind::Pull;
        let cases: Vec<(&str, Want)> = vec![
            // A patch re-sent alone as a correction of one patch of v7
            // (a partial reroll), not a repository named `v7.1`.
            (
                "[PATCH v7.1 39/72] t",
                Want {
                    version: 7,
                    revision: 1,
                    index: Some(39),
                    total: Some(72),
                    ..W
                },
            ),
            (
                "[PATCHv3.2 2/4] t",
                Want {
                    version: 3,
                    revision: 2,
                    index: Some(2),
                    total: Some(4),
                    ..W
                },
            ),
            (
                "[PATCH v2. 1/2] t",
                Want {
                    repo: Some("v2."),
                    index: Some(1),
                    total: Some(2),
                    ..W
                },
            ),
            // Commas separate like spaces (Patchwork's split on `[,\s]+`).
            (
                "[net,v2,1/2] t",
                Want {
                    version: 2,
                    index: Some(1),
                    total: Some(2),
                    tags: &["net"],
                    ..W
                },
            ),
            (
                "[PATCH,RFC] t",
                Want {
                    tags: &["RFC"],
                    ..W
                },
            ),
            (
                "[PATCH v2,3/7] t",
                Want {
                    version: 2,
                    index: Some(3),
                    total: Some(7),
                    ..W
                },
            ),
            (
                "[PATCH,1/2] t",
                Want {
                    index: Some(1),
                    total: Some(2),
                    ..W
                },
            ),
            (
                "[PATCH RFC,v3 2/2] t",
                Want {
                    version: 3,
                    index: Some(2),
                    total: Some(2),
                    tags: &["RFC"],
                    ..W
                },
            ),
            // Mercurial's patchbomb.
            (
                "[PATCH 0 of 2] t",
                Want {
                    index: Some(0),
                    total: Some(2),
                    ..W
                },
            ),
            (
                "[PATCH 1 of 2] t",
                Want {
                    index: Some(1),
                    total: Some(2),
                    ..W
                },
            ),
            (
                "[PATCH 2 OF 2 V3] t",
                Want {
                    version: 3,
                    index: Some(2),
                    total: Some(2),
                    ..W
                },
            ),
            // Numbering and tags in their own brackets.
            (
                "[PATCH] [RFC,1/2] t",
                Want {
                    index: Some(1),
                    total: Some(2),
                    tags: &["RFC"],
                    ..W
                },
            ),
            (
                "[PATCH] [RFC] [1/2] t",
                Want {
                    index: Some(1),
                    total: Some(2),
                    tags: &["RFC"],
                    ..W
                },
            ),
            (
                "[libvirt] [PATCH v2 1/3] t",
                Want {
                    version: 2,
                    index: Some(1),
                    total: Some(3),
                    tags: &["libvirt"],
                    ..W
                },
            ),
            (
                "[Qemu-devel] [RFC] [PATCH v2] t",
                Want {
                    version: 2,
                    tags: &["Qemu-devel", "RFC"],
                    ..W
                },
            ),
            (
                "[PATCH] rewrite [a-z] regexes",
                Want {
                    title: "rewrite [a-z] regexes",
                    ..W
                },
            ),
            // Glued words.
            (
                "[PATCH1/8] t",
                Want {
                    index: Some(1),
                    total: Some(8),
                    ..W
                },
            ),
            (
                "[v2PATCH1/4] t",
                Want {
                    version: 2,
                    index: Some(1),
                    total: Some(4),
                    ..W
                },
            ),
            (
                "[v2 PATCH 1/4] t",
                Want {
                    version: 2,
                    index: Some(1),
                    total: Some(4),
                    ..W
                },
            ),
            (
                "[PATCHv3 0/2] t",
                Want {
                    version: 3,
                    index: Some(0),
                    total: Some(2),
                    ..W
                },
            ),
            // A total not known when sent.
            (
                "[PATCH 3/n] t",
                Want {
                    index: Some(3),
                    ..W
                },
            ),
            (
                "[PATCH v2 0/N] t",
                Want {
                    version: 2,
                    index: Some(0),
                    ..W
                },
            ),
            // A version after the title (Patchwork's `(vN)`).
            ("[PATCH] t (v2)", Want { version: 2, ..W }),
            (
                "[PATCH 1/2] t (V3)",
                Want {
                    version: 3,
                    index: Some(1),
                    total: Some(2),
                    ..W
                },
            ),
            ("[PATCH v4] t (v2)", Want { version: 4, ..W }),
            (
                "[PATCH] t (version two)",
                Want {
                    title: "t (version two)",
                    ..W
                },
            ),
            // Pull requests.
            ("[PULL] t", Want { kind: pull, ..W }),
            ("[GIT PULL] t", Want { kind: pull, ..W }),
            ("[git pull] t", Want { kind: pull, ..W }),
            (
                "[PULL v2 0/3] t",
                Want {
                    kind: pull,
                    version: 2,
                    index: Some(0),
                    total: Some(3),
                    ..W
                },
            ),
            (
                "[PULL 1/3] t",
                Want {
                    kind: pull,
                    index: Some(1),
                    total: Some(3),
                    ..W
                },
            ),
            (
                "[GIT PULL net-next] t",
                Want {
                    kind: pull,
                    repo: Some("net-next"),
                    ..W
                },
            ),
            (
                "[PULLv2] t",
                Want {
                    kind: pull,
                    version: 2,
                    ..W
                },
            ),
            // b4 takes any word starting with `patch`.
            (
                "[PATCHES 0/3] t",
                Want {
                    index: Some(0),
                    total: Some(3),
                    ..W
                },
            ),
            ("[PATCHSET v2] t", Want { version: 2, ..W }),
            // Forwards stay patches; list tags may come first.
            ("Fwd: [PATCH] t", W),
            (
                "[list] FW: [PATCH] t",
                Want {
                    tags: &["list"],
                    ..W
                },
            ),
        ];
        let g = SubjectGrammar::default();
        for (subject, want) in &cases {
            assert_eq!(g.parse(subject), Ok(fields(want)), "{subject:?}");
        }
    }

    #[test]
    fn a_word_before_patch_is_a_branch_only_when_configured() {
        let g = configured();
        let cases: Vec<(&str, Want)> = vec![
            (
                "[libvirt] [python PATCH] t",
                Want {
                    tags: &["libvirt", "python"],
                    ..W
                },
            ),
            (
                "[qemu PATCH] t",
                Want {
                    tags: &["qemu"],
                    ..W
                },
            ),
            (
                "[qemu PATCH v2 1/2] t",
                Want {
                    version: 2,
                    index: Some(1),
                    total: Some(2),
                    tags: &["qemu"],
                    ..W
                },
            ),
            (
                "[master PATCH kimchi] t",
                Want {
                    branch: Some("master"),
                    repo: Some("kimchi"),
                    ..W
                },
            ),
            (
                "[RFC master PATCH kimchi] t",
                Want {
                    branch: Some("master"),
                    repo: Some("kimchi"),
                    tags: &["RFC"],
                    ..W
                },
            ),
            (
                "[qemu stable-2.1 PATCH v3 2/5 qemu] t",
                Want {
                    branch: Some("stable-2.1"),
                    repo: Some("qemu"),
                    version: 3,
                    index: Some(2),
                    total: Some(5),
                    tags: &["qemu"],
                    ..W
                },
            ),
            // Branch names are git's: case matters.
            (
                "[Master PATCH] t",
                Want {
                    tags: &["Master"],
                    ..W
                },
            ),
            (
                "[master GIT PULL hello] t",
                Want {
                    kind: SubjectKind::Pull,
                    branch: Some("master"),
                    repo: Some("hello"),
                    ..W
                },
            ),
            (
                "[master PULL v2 hello 0/3] t",
                Want {
                    kind: SubjectKind::Pull,
                    branch: Some("master"),
                    repo: Some("hello"),
                    version: 2,
                    index: Some(0),
                    total: Some(3),
                    ..W
                },
            ),
        ];
        for (subject, want) in &cases {
            assert_eq!(g.parse(subject), Ok(fields(want)), "{subject:?}");
        }
        // Without configured repositories the team form reads as before.
        assert_eq!(
            SubjectGrammar::default()
                .parse("[qemu PATCH] t")
                .unwrap()
                .branch
                .as_deref(),
            Some("qemu")
        );
    }

    #[test]
    fn a_word_after_patch_is_a_repository_only_when_configured_or_after_a_branch() {
        let g = configured().with_repos(vec!["kimchi".into(), "qemu".into()]);
        let cases: Vec<(&str, Want)> = vec![
            // netdev's tree names: tags, so the default repository or a
            // route (`tags = ["net-next"]`) decides.
            (
                "[PATCH net-next 1/2] t",
                Want {
                    index: Some(1),
                    total: Some(2),
                    tags: &["net-next"],
                    ..W
                },
            ),
            (
                "[PATCH v3 net] t",
                Want {
                    version: 3,
                    tags: &["net"],
                    ..W
                },
            ),
            (
                "[PATCH qemu v2] t",
                Want {
                    repo: Some("qemu"),
                    version: 2,
                    ..W
                },
            ),
            // The team form: after a branch an unknown name stays the
            // repository, so a typo is reported, not applied elsewhere.
            (
                "[master PATCH kimchii] t",
                Want {
                    branch: Some("master"),
                    repo: Some("kimchii"),
                    ..W
                },
            ),
        ];
        for (subject, want) in &cases {
            assert_eq!(g.parse(subject), Ok(fields(want)), "{subject:?}");
        }
    }

    #[test]
    fn replies_and_non_patches_table() {
        let g = configured();
        let cases = [
            ("re: [PATCH] t", NotPatch::Reply),
            ("RE: RE: [PATCH v2 1/2] t", NotPatch::Reply),
            ("Re: Re: Re: [PATCH] t", NotPatch::Reply),
            ("Aw: [PATCH] t", NotPatch::Reply),
            ("AW: AW: [PATCH] t", NotPatch::Reply),
            ("Sv: [PATCH] t", NotPatch::Reply),
            ("SV: Re: [PATCH] t", NotPatch::Reply),
            ("Fwd: Re: [PATCH] t", NotPatch::Reply),
            ("Re : [PATCH] t", NotPatch::Reply),
            ("Re(2): [PATCH] t", NotPatch::Reply),
            ("Re: [PULL] t", NotPatch::Reply),
            ("Re: [GIT PULL] t", NotPatch::Reply),
            ("Re: [net,v2,1/2] t", NotPatch::Reply),
            ("Re: about the [PATCH v2] of last week", NotPatch::Reply),
            ("Re: review of [PATCH 1 of 2]", NotPatch::Reply),
            ("[list] Re: [PATCH] t", NotPatch::Reply),
            ("Re: the [ANNOUNCE] of qemu", NotPatch::NoMatch),
            ("[ANNOUNCE] qemu 9.1", NotPatch::NoMatch),
            ("[RFC] an idea", NotPatch::NoMatch),
            ("[GIT] not a pull", NotPatch::NoMatch),
            ("[PATCHED] not the marker", NotPatch::NoMatch),
            ("[PATCHESv2x] not the marker either", NotPatch::NoMatch),
            ("[DISPATCH] not a patch", NotPatch::NoMatch),
            ("[PATCH 3/2] t", NotPatch::Invalid("patch 3 of 2".into())),
            (
                "[PATCH 1/99999999999999999999] t",
                NotPatch::Invalid("numbering 1/99999999999999999999 is too large".into()),
            ),
            (
                "[PATCH 99999999999999999999/2] t",
                NotPatch::Invalid("numbering 99999999999999999999/2 is too large".into()),
            ),
            (
                "[PATCH 1 of 99999999999999999999] t",
                NotPatch::Invalid("numbering 99999999999999999999 is too large".into()),
            ),
            ("[PATCH 3 of 2] t", NotPatch::Invalid("patch 3 of 2".into())),
            ("[PATCH 0/0] t", NotPatch::Invalid("total is 0".into())),
        ];
        for (subject, want) in cases {
            assert_eq!(g.parse(subject), Err(want), "{subject:?}");
        }
    }

    #[test]
    fn prefixes_are_every_bracket_word_as_written() {
        assert_eq!(
            prefixes("[libvirt] [python PATCH v2,1/3] t [x]"),
            ["libvirt", "python", "PATCH", "v2", "1/3"]
        );
        assert_eq!(prefixes("Re: [PATCH] t"), ["PATCH"]);
        assert!(prefixes("no brackets").is_empty());
    }
}
