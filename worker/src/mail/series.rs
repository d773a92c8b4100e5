//! Series assembly (pure): which patch mails form which series, which are
//! complete, superseded, incomplete or expired, and which are duplicates.
//!
//! `assemble` is called on every collect with all patch mails that are not
//! in a finished series, so it must be deterministic (input order does not
//! matter), keep series keys stable as more mails arrive, and account for
//! every input mail: each ends up in exactly one series or in `duplicates`.
//!
//! What apply took never comes back: those mails are not in the input,
//! and their series are handed in as [`FinishedSeries`] so that a late
//! mail of one, or an older version arriving after a newer one was
//! applied, is `superseded` instead of forming a series apply would take.
//! (Collect keeps a superseded or expired series so whatever this says.)

use crate::mail::subject::SubjectFields;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A patch-classified mail as the assembler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMail {
    /// Row id in the `mails` table.
    pub mail_id: i64,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Sender's e-mail address, lower-cased.
    pub author: String,
    /// Unix seconds of the `Date:` header (or of arrival when missing).
    pub date: i64,
    /// Unix seconds when patchline stored it.
    pub received: i64,
    pub fields: SubjectFields,
    pub patch_hash: Option<String>,
    /// True for a cover letter (index 0, or no diff in a 0/N mail).
    pub is_cover: bool,
}

/// A series apply took (applied, failed, applying), as the assembler needs
/// it to recognise its late mails and its older versions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FinishedSeries {
    pub key: String,
    pub version: u32,
    /// Lower-cased e-mail address of its author.
    pub author: String,
    /// Its stored title (cover letter's, else the first patch's).
    pub title: String,
    /// Message-IDs of its mails (cover letter included).
    pub message_ids: Vec<String>,
    /// Titles of its patches (cover letter excluded).
    pub patch_titles: Vec<String>,
    /// Patch hashes of its patches.
    pub patch_hashes: Vec<String>,
}

impl FinishedSeries {
    /// The thread root its key was made from.
    fn root(&self) -> &str {
        self.key.split('#').next().unwrap_or(&self.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblyConfig {
    /// Fallback grouping window (seconds) for mails of one author, version
    /// and total that are not threaded.
    pub thread_window: i64,
    /// An incomplete series older than this (seconds since its first mail
    /// arrived) is given up on and reported as expired.
    pub incomplete_deadline: i64,
}

/// The assembler's verdict on a series, with what it found missing or
/// superseding. The state database keeps the verdict as
/// [`crate::store::SeriesState`], which also has the states apply sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SeriesState {
    Complete,
    Incomplete { missing: Vec<u32> },
    Expired { missing: Vec<u32> },
    Superseded { by: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssembledSeries {
    /// Stable across runs: the Message-ID of the thread root (cover letter,
    /// or patch 1 when there is no cover), with `#vN` appended for versions
    /// above 1.
    pub key: String,
    pub version: u32,
    pub total: u32,
    /// Cover letter title, else the first patch's title.
    pub title: String,
    pub author: String,
    pub branch: Option<String>,
    pub repo: Option<String>,
    pub cover: Option<i64>,
    /// `(index, mail_id)`, sorted by index, one per index.
    pub patches: Vec<(u32, i64)>,
    /// Numbers of the patches not there, in every state (a superseded
    /// series keeps its gaps, for the report).
    pub missing: Vec<u32>,
    pub state: SeriesState,
    /// Earliest `received` of its mails.
    pub first_received: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assembly {
    pub series: Vec<AssembledSeries>,
    /// `(duplicate mail_id, kept mail_id)`.
    pub duplicates: Vec<(i64, i64)>,
}

/// Index and total of a mail; an unnumbered `[PATCH]` is 1 of 1.
fn numbering(m: &PatchMail) -> (u32, u32) {
    match (m.fields.index, m.fields.total) {
        (Some(i), Some(t)) => (i, t),
        _ => (1, 1),
    }
}

fn is_numbered(m: &PatchMail) -> bool {
    m.fields.total.is_some()
}

/// Titles compared for "same series": case and spacing ignored.
fn norm_title(t: &str) -> String {
    t.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A group under construction: one version of one series.
#[derive(Debug, Clone)]
struct Group {
    key: String,
    root: String,
    version: u32,
    total: u32,
    /// Mail indexes into the sorted input.
    members: Vec<usize>,
}

pub fn assemble(mails: &[PatchMail], now: i64, cfg: &AssemblyConfig) -> Assembly {
    assemble_after(mails, &History::default(), now, cfg)
}

/// What the assembler is told besides the mails: the series apply took,
/// and the b4 change-ids found in the mails (by Message-ID).
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    pub finished: &'a [FinishedSeries],
    pub change_ids: Option<&'a BTreeMap<String, String>>,
}

/// The b4 change-id of a raw mail: its `X-Change-ID:` header, else the
/// `change-id:` line b4 writes under the `---` of a cover letter (or of a
/// single patch). Same for every version of a series, whatever its
/// subject says.
pub fn change_id(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let value = |line: &str, name: &str| -> Option<String> {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.eq_ignore_ascii_case(name) && !value.is_empty() && !value.contains(' '))
            .then(|| value.to_owned())
    };
    let mut header = None;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        header = header.or_else(|| value(line, "x-change-id"));
    }
    if header.is_some() {
        return header;
    }
    let mut after_separator = false;
    for line in lines {
        if line == "---" {
            after_separator = true;
        } else if line.starts_with("diff --git ") {
            after_separator = false;
        } else if after_separator && line.starts_with("change-id:") {
            return value(line, "change-id");
        }
    }
    None
}

/// [`assemble`], with the series apply took: a series
/// that is a late part of one of them (same thread and version, or every
/// patch already in it) or older than one of them (same author, a lower
/// version, the same title or patch titles) is superseded by it.
pub fn assemble_after(
    mails: &[PatchMail],
    history: &History<'_>,
    now: i64,
    cfg: &AssemblyConfig,
) -> Assembly {
    let finished = history.finished;
    // Deterministic order whatever the input order.
    let mut sorted: Vec<&PatchMail> = mails.iter().collect();
    sorted.sort_by_key(|m| (m.received, m.mail_id));
    let mut duplicates = Vec::new();
    let mut seen_ids: HashMap<&str, i64> = HashMap::new();
    let mut unique: Vec<&PatchMail> = Vec::with_capacity(sorted.len());
    for m in sorted {
        match seen_ids.get(m.message_id.as_str()) {
            Some(kept) => duplicates.push((m.mail_id, *kept)),
            None => {
                seen_ids.insert(&m.message_id, m.mail_id);
                unique.push(m);
            }
        }
    }
    let mails = unique;
    let by_id: HashMap<&str, usize> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| (m.message_id.as_str(), i))
        .collect();

    // 0. Version and total of each mail as its series has them. The cover
    // letter speaks for the version: patches replying to a `[PATCH v3 0/4]`
    // without a version of their own (`[PATCH 1/4]`) are v3. The patches
    // speak for the total: a cover whose patches all say `N/5` is `0/5`
    // even if it says `0/4`.
    let cover_of = |m: &PatchMail| -> Option<usize> {
        [
            m.in_reply_to.as_deref(),
            m.references.first().map(String::as_str),
        ]
        .into_iter()
        .flatten()
        .filter_map(|id| by_id.get(id).copied())
        .find(|c| mails[*c].fields.index == Some(0) && mails[*c].message_id != m.message_id)
    };
    let covers: Vec<Option<usize>> = mails
        .iter()
        .map(|m| (m.fields.index != Some(0)).then(|| cover_of(m)).flatten())
        .collect();
    let mut totals_under: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for (i, m) in mails.iter().enumerate() {
        if let (Some(c), Some(t)) = (covers[i], m.fields.total) {
            totals_under.entry(c).or_default().insert(t);
        }
    }
    let shapes: Vec<(u32, u32)> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (_, total) = numbering(m);
            if m.fields.index == Some(0) {
                let total = match totals_under.get(&i).map(|t| t.iter().collect::<Vec<_>>()) {
                    Some(t) if t.len() == 1 => *t[0],
                    _ => total,
                };
                return (m.fields.version, total);
            }
            let version = match covers[i] {
                Some(c) if m.fields.version == 1 && is_numbered(m) => mails[c].fields.version,
                _ => m.fields.version,
            };
            (version, total)
        })
        .collect();

    // 1. Threaded grouping: (thread root, version, total).
    let threaded = |m: &PatchMail| m.in_reply_to.is_some() || !m.references.is_empty();
    let root_of = |m: &PatchMail| -> String {
        m.references
            .first()
            .or(m.in_reply_to.as_ref())
            .cloned()
            .unwrap_or_else(|| m.message_id.clone())
    };
    // Roots that some threaded numbered mail points to: those mails join the
    // thread's group even though they carry no threading headers themselves.
    let mut thread_roots: HashSet<String> = HashSet::new();
    for m in &mails {
        if threaded(m) && is_numbered(m) {
            thread_roots.insert(root_of(m));
        }
    }
    let mut groups: BTreeMap<(String, u32, u32), Vec<usize>> = BTreeMap::new();
    let mut unthreaded: Vec<usize> = Vec::new();
    for (i, m) in mails.iter().enumerate() {
        let (version, total) = shapes[i];
        if !is_numbered(m) {
            // A lone patch is a series of its own, whatever thread it is in.
            groups
                .entry((m.message_id.clone(), version, total))
                .or_default()
                .push(i);
        } else if threaded(m) {
            groups
                .entry((root_of(m), version, total))
                .or_default()
                .push(i);
        } else if thread_roots.contains(&m.message_id) {
            groups
                .entry((m.message_id.clone(), version, total))
                .or_default()
                .push(i);
        } else {
            unthreaded.push(i);
        }
    }

    // 2. Fallback for unthreaded numbered mails: same author, version and
    // total, sent within the window, distinct indexes.
    let mut buckets: BTreeMap<(String, u32, u32), Vec<usize>> = BTreeMap::new();
    for i in unthreaded {
        let m = mails[i];
        buckets
            .entry((m.author.clone(), shapes[i].0, shapes[i].1))
            .or_default()
            .push(i);
    }
    for ((_, version, total), mut members) in buckets {
        members.sort_by_key(|i| (mails[*i].date, mails[*i].received, mails[*i].mail_id));
        let mut current: Vec<usize> = Vec::new();
        let mut flush = |current: &mut Vec<usize>| {
            if current.is_empty() {
                return;
            }
            // Keyed by the earliest-received mail, which later arrivals
            // cannot change.
            let first = current
                .iter()
                .copied()
                .min_by_key(|i| (mails[*i].received, mails[*i].mail_id))
                .unwrap_or(current[0]);
            groups
                .entry((mails[first].message_id.clone(), version, total))
                .or_default()
                .append(current);
        };
        for i in members {
            let m = mails[i];
            let start = current.first().map(|f| mails[*f].date);
            let clash = current
                .iter()
                .any(|j| numbering(mails[*j]).0 == numbering(m).0);
            if start.is_some_and(|s| m.date - s > cfg.thread_window) || clash {
                flush(&mut current);
            }
            current.push(i);
        }
        flush(&mut current);
    }

    // 3. Keys: root, `#vN` for versions above 1, `#ofT` when one thread and version
    // holds several totals (the cover's total, else the first, keeps the
    // plain key).
    let mut totals_per: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
    for (root, version, total) in groups.keys() {
        totals_per
            .entry((root.clone(), *version))
            .or_default()
            .push(*total);
    }
    let mut built: Vec<Group> = Vec::new();
    for ((root, version, total), members) in groups {
        let totals = &totals_per[&(root.clone(), version)];
        let main_total = by_id
            .get(root.as_str())
            .map(|i| shapes[*i].1)
            .filter(|t| totals.contains(t))
            .unwrap_or(totals[0]);
        let mut key = root.clone();
        // Always suffixed, even when the root is this version's own cover:
        // whether the root mail has arrived yet must not change the key.
        if version > 1 {
            key.push_str(&format!("#v{version}"));
        }
        if total != main_total {
            key.push_str(&format!("#of{total}"));
        }
        built.push(Group {
            key,
            root,
            version,
            total,
            members,
        });
    }

    // 3b. A `vN.M` patch re-sent in a thread of its own (or under the
    // patch it corrects, or unthreaded outside the window) corrects the vN
    // series of the same author and total: it joins that group, where
    // step 4 lets it win its index. Among several such groups the base is
    // the last sent (`Date:`) no later than the revision, else the first:
    // header values, so the choice does not depend on arrival order.
    let only_revisions = |g: &Group| g.members.iter().all(|i| mails[*i].fields.revision > 0);
    let sent = |g: &Group| {
        g.members
            .iter()
            .map(|i| (mails[*i].date, mails[*i].message_id.as_str()))
            .min()
    };
    for gi in 0..built.len() {
        if built[gi].members.is_empty() || !only_revisions(&built[gi]) {
            continue;
        }
        let author = &mails[built[gi].members[0]].author;
        let revision_sent = sent(&built[gi]).map(|(date, _)| date);
        let mut candidates: Vec<usize> = (0..built.len())
            .filter(|bi| {
                let b = &built[*bi];
                *bi != gi
                    && !b.members.is_empty()
                    && !only_revisions(b)
                    && b.version == built[gi].version
                    && b.total == built[gi].total
                    // Any of its mails: a cover letter is often sent
                    // as the committer, the patches as their author.
                    && b.members.iter().any(|i| mails[*i].author == *author)
            })
            .collect();
        candidates.sort_by_key(|bi| sent(&built[*bi]));
        let base = candidates
            .iter()
            .rev()
            .find(|bi| sent(&built[**bi]).map(|(date, _)| date) <= revision_sent)
            .or(candidates.first())
            .copied();
        if let Some(bi) = base {
            let moved = std::mem::take(&mut built[gi].members);
            built[bi].members.extend(moved);
        }
    }
    built.retain(|g| !g.members.is_empty());

    // 4. One mail per index: an identical re-send is a duplicate of the
    // first; a different mail for the same index is a correction and wins,
    // and a `vN.M` revision wins over what it revises whatever the order
    // of arrival.
    for g in &mut built {
        let mut slots: BTreeMap<u32, usize> = BTreeMap::new();
        let mut order = g.members.clone();
        order.sort_by_key(|i| {
            (
                mails[*i].fields.revision,
                mails[*i].received,
                mails[*i].mail_id,
            )
        });
        for i in order {
            let idx = numbering(mails[i]).0;
            match slots.get(&idx).copied() {
                None => {
                    slots.insert(idx, i);
                }
                Some(prev) => {
                    let same = mails[prev].patch_hash.is_some()
                        && mails[prev].patch_hash == mails[i].patch_hash;
                    if same {
                        duplicates.push((mails[i].mail_id, mails[prev].mail_id));
                    } else {
                        duplicates.push((mails[prev].mail_id, mails[i].mail_id));
                        slots.insert(idx, i);
                    }
                }
            }
        }
        g.members = slots.into_values().collect();
    }

    // 5. Partial rerolls: a vN group whose every patch replies directly to
    // the same index of an older version is that older version with those
    // patches replaced.
    let index_of_mail = |i: usize| numbering(mails[i]).0;
    let snapshot = built.clone();
    for g in &mut built {
        if g.version < 2 || g.members.iter().any(|i| mails[*i].fields.index == Some(0)) {
            continue;
        }
        let mut base: Option<&Group> = None;
        let all_replies = g.members.iter().all(|i| {
            let m = mails[*i];
            let Some(parent) = m.in_reply_to.as_deref().and_then(|p| by_id.get(p)) else {
                return false;
            };
            let owner = snapshot.iter().find(|o| {
                o.version < g.version && o.total == g.total && o.members.contains(parent)
            });
            match owner {
                Some(o) if index_of_mail(*parent) == index_of_mail(*i) => {
                    if base.is_none_or(|b| b.version < o.version) {
                        base = Some(o);
                    }
                    true
                }
                _ => false,
            }
        });
        if let Some(b) = base.filter(|_| all_replies) {
            let present: BTreeSet<u32> = g.members.iter().map(|i| index_of_mail(*i)).collect();
            for i in &b.members {
                if !present.contains(&index_of_mail(*i)) {
                    g.members.push(*i);
                }
            }
            g.key = format!("{}#v{}", b.key, g.version);
        }
    }

    // 6. Describe each group.
    let mut series: Vec<AssembledSeries> = built
        .iter()
        .map(|g| describe(g, &mails, now, cfg))
        .collect();

    // 7. Supersession: a newer version of the same series (same thread, the
    // newer cover replying into the older thread, or same author and title).
    // A re-send of the same version with identical patches is a duplicate.
    // Candidate pairs come from indexes (thread root, ids replied to, author
    // and title), so this stays linear in practice, not quadratic.
    let mut owner: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_root: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_title: HashMap<(String, String), Vec<usize>> = HashMap::new();
    // Normalised once per series, not once per candidate pair.
    let series_titles: Vec<String> = series.iter().map(|s| norm_title(&s.title)).collect();
    for (gi, g) in built.iter().enumerate() {
        for i in &g.members {
            owner
                .entry(mails[*i].message_id.as_str())
                .or_default()
                .push(gi);
        }
        owner.entry(g.root.as_str()).or_default().push(gi);
        by_root.entry(g.root.as_str()).or_default().push(gi);
        by_title
            .entry((series[gi].author.clone(), series_titles[gi].clone()))
            .or_default()
            .push(gi);
    }
    // A reroll with a reworded cover (often in a new thread) keeps its
    // patches' own subjects: index them by author too.
    let patch_titles = |g: &Group| -> BTreeSet<(String, String)> {
        g.members
            .iter()
            .filter(|i| numbering(mails[**i]).0 != 0)
            .map(|i| {
                (
                    mails[*i].author.clone(),
                    norm_title(&mails[*i].fields.title),
                )
            })
            .collect()
    };
    let group_patch_titles: Vec<BTreeSet<(String, String)>> =
        built.iter().map(patch_titles).collect();
    let mut by_patch_title: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (gi, titles) in group_patch_titles.iter().enumerate() {
        for t in titles {
            by_patch_title.entry(t.clone()).or_default().push(gi);
        }
    }
    // b4's change-id stays the same across versions, whatever the subjects.
    let change_of = |g: &Group| -> Option<&String> {
        let ids = history.change_ids?;
        g.members
            .iter()
            .filter_map(|i| {
                ids.get(&mails[*i].message_id)
                    .map(|c| (numbering(mails[*i]).0, c))
            })
            .min()
            .map(|(_, c)| c)
    };
    let group_change: Vec<Option<&String>> = built.iter().map(change_of).collect();
    let mut by_change: BTreeMap<&String, Vec<usize>> = BTreeMap::new();
    for (gi, c) in group_change.iter().enumerate() {
        if let Some(c) = c {
            by_change.entry(*c).or_default().push(gi);
        }
    }
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (b, g) in built.iter().enumerate() {
        if let Some(owners) = group_change[b].and_then(|c| by_change.get(c)) {
            for a in owners {
                if *a != b {
                    pairs.insert((*a, b));
                }
            }
        }
        let mut related: Vec<usize> = by_root[g.root.as_str()].clone();
        related.extend(&by_title[&(series[b].author.clone(), series_titles[b].clone())]);
        for t in &group_patch_titles[b] {
            if let Some(owners) = by_patch_title.get(t) {
                related.extend(owners);
            }
        }
        for i in &g.members {
            let m = mails[*i];
            for id in m.in_reply_to.iter().chain(&m.references) {
                if let Some(owners) = owner.get(id.as_str()) {
                    related.extend(owners);
                }
            }
        }
        for a in related {
            if a != b {
                pairs.insert((a, b));
            }
        }
    }
    let group_ids: Vec<HashSet<&str>> = built
        .iter()
        .map(|g| {
            g.members
                .iter()
                .map(|i| mails[*i].message_id.as_str())
                .chain(std::iter::once(g.root.as_str()))
                .collect()
        })
        .collect();
    // Which of two groups arrived later: by the time their first mail was
    // received, then by the order mails were stored (two mails received in
    // the same second must not look simultaneous: a re-send would then not
    // supersede the original, and both would be applied).
    let arrivals: Vec<(i64, Option<i64>)> = (0..built.len())
        .map(|gi| {
            (
                series[gi].first_received,
                built[gi].members.iter().map(|i| mails[*i].mail_id).min(),
            )
        })
        .collect();
    let mut dropped: HashSet<usize> = HashSet::new();
    for (a, b) in pairs {
        {
            if dropped.contains(&a) || dropped.contains(&b) {
                continue;
            }
            let (old, new) = (&built[a], &built[b]);
            let same_thread = old.root == new.root;
            let old_ids = &group_ids[a];
            let replies_into = new.members.iter().any(|i| {
                let m = mails[*i];
                m.in_reply_to
                    .as_ref()
                    .is_some_and(|p| old_ids.contains(p.as_str()))
                    || m.references.iter().any(|r| old_ids.contains(r.as_str()))
            });
            let same_title =
                series[a].author == series[b].author && series_titles[a] == series_titles[b];
            // Half of the older version's patches (at least one) under the
            // same subjects, from the same author.
            let old_titles = &group_patch_titles[a];
            let shared = group_patch_titles[b].intersection(old_titles).count();
            let same_patches_titled = shared > 0 && shared * 2 >= old_titles.len();
            let same_change = group_change[a].is_some() && group_change[a] == group_change[b];
            let related =
                same_thread || replies_into || same_title || same_patches_titled || same_change;
            if !related {
                continue;
            }
            if new.version > old.version {
                // Keep the newest version that supersedes it.
                let better = match &series[a].state {
                    SeriesState::Superseded { by } => built
                        .iter()
                        .find(|g| &g.key == by)
                        .is_none_or(|g| g.version < new.version),
                    _ => true,
                };
                if better {
                    series[a].state = SeriesState::Superseded {
                        by: new.key.clone(),
                    };
                }
            } else if new.version == old.version
                && same_title
                && arrivals[b] > arrivals[a]
                && !same_thread
            {
                let pairs: Vec<(i64, i64)> = new
                    .members
                    .iter()
                    .filter_map(|i| {
                        let twin = old.members.iter().find(|j| {
                            index_of_mail(**j) == index_of_mail(*i)
                                && mails[**j].patch_hash.is_some()
                                && mails[**j].patch_hash == mails[*i].patch_hash
                        })?;
                        Some((mails[*i].mail_id, mails[*twin].mail_id))
                    })
                    .collect();
                let patches_new = new
                    .members
                    .iter()
                    .filter(|i| index_of_mail(**i) != 0)
                    .count();
                let same_patches = pairs.len() >= patches_new && patches_new > 0;
                if same_patches {
                    // The whole series sent again: count it once.
                    let covers: Vec<(i64, i64)> = new
                        .members
                        .iter()
                        .filter(|i| index_of_mail(**i) == 0)
                        .filter_map(|i| {
                            old.members
                                .iter()
                                .find(|j| index_of_mail(**j) == 0)
                                .map(|j| (mails[*i].mail_id, mails[*j].mail_id))
                        })
                        .collect();
                    let accounted: HashSet<i64> =
                        pairs.iter().chain(&covers).map(|p| p.0).collect();
                    if new
                        .members
                        .iter()
                        .all(|i| accounted.contains(&mails[*i].mail_id))
                    {
                        duplicates.extend(pairs);
                        duplicates.extend(covers);
                        dropped.insert(b);
                    }
                } else {
                    series[a].state = SeriesState::Superseded {
                        by: new.key.clone(),
                    };
                }
            }
        }
    }
    // 8. What apply took stays taken.
    for (gi, g) in built.iter().enumerate() {
        if dropped.contains(&gi) || matches!(series[gi].state, SeriesState::Superseded { .. }) {
            continue;
        }
        if let Some(f) = finished_over(g, &series[gi], &mails, finished) {
            series[gi].state = SeriesState::Superseded { by: f.key.clone() };
        }
    }
    let mut series: Vec<AssembledSeries> = series
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, s)| s)
        .collect();
    series.sort_by(|a, b| (a.first_received, &a.key).cmp(&(b.first_received, &b.key)));
    duplicates.sort_unstable();
    duplicates.dedup();
    Assembly { series, duplicates }
}

/// The finished series `g` belongs to or is older than, if any (the
/// highest version, then the smallest key, whatever the input order).
fn finished_over<'f>(
    g: &Group,
    s: &AssembledSeries,
    mails: &[&PatchMail],
    finished: &'f [FinishedSeries],
) -> Option<&'f FinishedSeries> {
    let numbered = g.members.iter().any(|i| is_numbered(mails[*i]));
    let titles: BTreeSet<String> = g
        .members
        .iter()
        .filter(|i| numbering(mails[**i]).0 != 0)
        .map(|i| norm_title(&mails[*i].fields.title))
        .collect();
    let patch_count = g
        .members
        .iter()
        .filter(|i| numbering(mails[**i]).0 != 0)
        .count();
    let hashes: Vec<&str> = g
        .members
        .iter()
        .filter(|i| numbering(mails[**i]).0 != 0)
        .filter_map(|i| mails[*i].patch_hash.as_deref())
        .collect();
    finished
        .iter()
        .filter(|f| {
            let same_author = f.author == s.author;
            // A late mail of its thread and version (a correction, the
            // missing patch of an expired series, a re-sent patch).
            let late = numbered
                && g.version <= f.version
                && (g.root == f.root()
                    || g.members.iter().any(|i| {
                        mails[*i]
                            .in_reply_to
                            .as_ref()
                            .is_some_and(|p| f.message_ids.contains(p))
                    }));
            // Every patch already in it: the series sent again.
            let resent = same_author
                && !hashes.is_empty()
                && hashes.len() == patch_count
                && hashes.iter().all(|h| f.patch_hashes.iter().any(|k| k == h));
            // An older version arriving after the newer one was finished.
            let older = same_author
                && g.version < f.version
                && (norm_title(&f.title) == norm_title(&s.title) || {
                    // As between open versions: half of its patches (at
                    // least one) under the newer one's subjects.
                    let shared = titles
                        .iter()
                        .filter(|t| f.patch_titles.iter().any(|u| norm_title(u) == **t))
                        .count();
                    shared > 0 && shared * 2 >= titles.len()
                });
            late || resent || older
        })
        .max_by(|a, b| a.version.cmp(&b.version).then_with(|| b.key.cmp(&a.key)))
}

fn describe(g: &Group, mails: &[&PatchMail], now: i64, cfg: &AssemblyConfig) -> AssembledSeries {
    let mut members: Vec<(u32, &PatchMail)> = g
        .members
        .iter()
        .map(|i| (numbering(mails[*i]).0, mails[*i]))
        .collect();
    members.sort_by_key(|(idx, m)| (*idx, m.mail_id));
    let cover = members.iter().find(|(i, _)| *i == 0).map(|(_, m)| *m);
    let patches: Vec<(u32, i64)> = members
        .iter()
        .filter(|(i, _)| *i != 0)
        .map(|(i, m)| (*i, m.mail_id))
        .collect();
    let lead = cover.or_else(|| members.iter().find(|(i, _)| *i != 0).map(|(_, m)| *m));
    let first_patch = members.iter().find(|(i, _)| *i != 0).map(|(_, m)| *m);
    let named = |pick: fn(&SubjectFields) -> &Option<String>| -> Option<String> {
        cover
            .and_then(|c| pick(&c.fields).clone())
            .or_else(|| first_patch.and_then(|p| pick(&p.fields).clone()))
            .or_else(|| members.iter().find_map(|(_, m)| pick(&m.fields).clone()))
    };
    let present: BTreeSet<u32> = patches.iter().map(|(i, _)| *i).collect();
    let missing: Vec<u32> = (1..=g.total).filter(|i| !present.contains(i)).collect();
    let first_received = members.iter().map(|(_, m)| m.received).min().unwrap_or(now);
    let state = if missing.is_empty() {
        SeriesState::Complete
    } else if now - first_received > cfg.incomplete_deadline {
        SeriesState::Expired {
            missing: missing.clone(),
        }
    } else {
        SeriesState::Incomplete {
            missing: missing.clone(),
        }
    };
    AssembledSeries {
        key: g.key.clone(),
        version: g.version,
        total: g.total,
        title: lead.map(|m| m.fields.title.clone()).unwrap_or_default(),
        author: lead.map(|m| m.author.clone()).unwrap_or_default(),
        branch: named(|f| &f.branch),
        repo: named(|f| &f.repo),
        cover: cover.map(|m| m.mail_id),
        patches,
        missing,
        state,
        first_received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Lcg;

    const CFG: AssemblyConfig = AssemblyConfig {
        thread_window: 3600,
        incomplete_deadline: 3 * 86400,
    };

    /// A mail: id, subject numbering `(index,total)` or None, version,
    /// in-reply-to, received time.
    fn m(
        id: i64,
        msgid: &str,
        num: Option<(u32, u32)>,
        version: u32,
        irt: Option<&str>,
        received: i64,
    ) -> PatchMail {
        PatchMail {
            mail_id: id,
            message_id: msgid.into(),
            in_reply_to: irt.map(str::to_owned),
            references: irt.map(|r| vec![r.to_owned()]).unwrap_or_default(),
            author: "ada@example.org".into(),
            date: received,
            received,
            fields: SubjectFields {
                version,
                index: num.map(|n| n.0),
                total: num.map(|n| n.1),
                title: format!("title of {msgid}"),
                ..SubjectFields::default()
            },
            patch_hash: Some(format!("hash-{msgid}")),
            is_cover: num.is_some_and(|n| n.0 == 0),
        }
    }

    type Row<'a> = (&'a str, &'a SeriesState, Vec<(u32, i64)>);

    fn keys(a: &Assembly) -> Vec<Row<'_>> {
        a.series
            .iter()
            .map(|s| (s.key.as_str(), &s.state, s.patches.clone()))
            .collect()
    }

    #[test]
    fn cover_letter_series_complete_in_any_order() {
        let mails = vec![
            m(3, "p2", Some((2, 2)), 1, Some("c"), 30),
            m(1, "c", Some((0, 2)), 1, None, 10),
            m(2, "p1", Some((1, 2)), 1, Some("c"), 20),
        ];
        let a = assemble(&mails, 100, &CFG);
        assert_eq!(a.series.len(), 1);
        let s = &a.series[0];
        assert_eq!(s.key, "c");
        assert_eq!(s.cover, Some(1));
        assert_eq!(s.patches, vec![(1, 2), (2, 3)]);
        assert_eq!(s.state, SeriesState::Complete);
        assert_eq!(s.title, "title of c");
        assert_eq!(s.first_received, 10);
    }

    #[test]
    fn no_cover_patches_reply_to_patch_one() {
        let mails = vec![
            m(1, "p1", Some((1, 3)), 1, None, 10),
            m(2, "p2", Some((2, 3)), 1, Some("p1"), 11),
            m(3, "p3", Some((3, 3)), 1, Some("p1"), 12),
        ];
        let a = assemble(&mails, 100, &CFG);
        assert_eq!(
            keys(&a),
            vec![("p1", &SeriesState::Complete, vec![(1, 1), (2, 2), (3, 3)])]
        );
    }

    #[test]
    fn lone_patches_are_series_of_one() {
        let mails = vec![
            m(1, "a", None, 1, None, 10),
            m(2, "b", None, 1, Some("discussion"), 11),
        ];
        let a = assemble(&mails, 100, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                ("a", &SeriesState::Complete, vec![(1, 1)]),
                ("b", &SeriesState::Complete, vec![(1, 2)])
            ]
        );
    }

    #[test]
    fn unthreaded_mails_grouped_by_author_version_total_and_window() {
        let mut mails = vec![
            m(1, "x1", Some((1, 2)), 1, None, 1000),
            m(2, "x2", Some((2, 2)), 1, None, 1100),
            // Same shape, hours later: another series.
            m(3, "y1", Some((1, 2)), 1, None, 90_000),
        ];
        mails[2].fields.title = "other".into();
        let a = assemble(&mails, 100_000, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                ("x1", &SeriesState::Complete, vec![(1, 1), (2, 2)]),
                (
                    "y1",
                    &SeriesState::Incomplete { missing: vec![2] },
                    vec![(1, 3)]
                ),
            ]
        );
    }

    #[test]
    fn incomplete_then_expired() {
        let mails = vec![
            m(1, "c", Some((0, 3)), 1, None, 10),
            m(2, "p2", Some((2, 3)), 1, Some("c"), 10),
        ];
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(
            a.series[0].state,
            SeriesState::Incomplete {
                missing: vec![1, 3]
            }
        );
        let a = assemble(&mails, 10 + CFG.incomplete_deadline + 1, &CFG);
        assert_eq!(
            a.series[0].state,
            SeriesState::Expired {
                missing: vec![1, 3]
            }
        );
    }

    #[test]
    fn newer_version_supersedes_older() {
        let mut mails = vec![
            m(1, "c1", Some((0, 2)), 1, None, 10),
            m(2, "a1", Some((1, 2)), 1, Some("c1"), 10),
            m(3, "b1", Some((2, 2)), 1, Some("c1"), 10),
            // v2 as a new thread, same author and cover title.
            m(4, "c2", Some((0, 2)), 2, None, 50),
            m(5, "a2", Some((1, 2)), 2, Some("c2"), 50),
        ];
        mails[3].fields.title = "Title Of C1".into();
        let a = assemble(&mails, 60, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c1",
                    &SeriesState::Superseded { by: "c2#v2".into() },
                    vec![(1, 2), (2, 3)]
                ),
                (
                    "c2#v2",
                    &SeriesState::Incomplete { missing: vec![2] },
                    vec![(1, 5)]
                ),
            ]
        );
        // A v2 sent in reply to the v1 cover: same thread, keyed `#v2`.
        let mails = vec![
            m(1, "c1", Some((0, 1)), 1, None, 10),
            m(2, "a1", Some((1, 1)), 1, Some("c1"), 10),
            m(3, "c2", Some((0, 1)), 2, Some("c1"), 50),
            PatchMail {
                references: vec!["c1".into(), "c2".into()],
                ..m(4, "a2", Some((1, 1)), 2, Some("c2"), 50)
            },
        ];
        let a = assemble(&mails, 60, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c1",
                    &SeriesState::Superseded { by: "c1#v2".into() },
                    vec![(1, 2)]
                ),
                ("c1#v2", &SeriesState::Complete, vec![(1, 4)]),
            ]
        );
    }

    #[test]
    fn partial_reroll_replaces_one_patch() {
        let mails = vec![
            m(1, "c", Some((0, 3)), 1, None, 10),
            m(2, "p1", Some((1, 3)), 1, Some("c"), 10),
            m(3, "p2", Some((2, 3)), 1, Some("c"), 10),
            m(4, "p3", Some((3, 3)), 1, Some("c"), 10),
            PatchMail {
                references: vec!["c".into(), "p3".into()],
                ..m(5, "p3v2", Some((3, 3)), 2, Some("p3"), 40)
            },
        ];
        let a = assemble(&mails, 50, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c",
                    &SeriesState::Superseded { by: "c#v2".into() },
                    vec![(1, 2), (2, 3), (3, 4)]
                ),
                ("c#v2", &SeriesState::Complete, vec![(1, 2), (2, 3), (3, 5)]),
            ]
        );
        assert_eq!(a.series[1].cover, Some(1));
    }

    fn revised(mut m: PatchMail, revision: u32) -> PatchMail {
        m.fields.revision = revision;
        m.patch_hash = Some(format!("hash-{}-r{revision}", m.message_id));
        m
    }

    /// `[PATCH v2.1 2/3]`: one patch of v2 re-sent as its correction,
    /// replying into the v2 thread or in a thread of its own, before or
    /// after the patch it corrects: v2 with that patch replaced, nothing
    /// superseded, the revised mail a duplicate.
    #[test]
    fn a_vn_m_revision_replaces_its_patch_in_version_n() {
        let base = || {
            vec![
                m(1, "c", Some((0, 3)), 2, None, 10),
                m(2, "p1", Some((1, 3)), 2, Some("c"), 10),
                m(3, "p2", Some((2, 3)), 2, Some("c"), 10),
                m(4, "p3", Some((3, 3)), 2, Some("c"), 10),
            ]
        };
        let in_thread = PatchMail {
            references: vec!["c".into(), "p2".into()],
            ..revised(m(5, "p2r", Some((2, 3)), 2, Some("p2"), 9000), 1)
        };
        // `git send-email --in-reply-to=<patch 2>`: references that patch
        // only, so its thread root is patch 2, not the cover.
        let under_patch = revised(m(5, "p2r", Some((2, 3)), 2, Some("p2"), 9000), 1);
        let own_thread = revised(m(5, "p2r", Some((2, 3)), 2, None, 9000), 1);
        for (name, revision) in [
            ("in thread", in_thread),
            ("under its patch", under_patch),
            ("own thread", own_thread),
        ] {
            let mut mails = base();
            mails.push(revision.clone());
            for order in [false, true] {
                if order {
                    mails.reverse();
                }
                let a = assemble(&mails, 9100, &CFG);
                assert_eq!(
                    keys(&a),
                    vec![("c#v2", &SeriesState::Complete, vec![(1, 2), (2, 5), (3, 4)])],
                    "{name}"
                );
                assert_eq!(a.duplicates, vec![(3, 5)], "{name}");
            }
        }
        // The revision arrived first (delayed delivery of the original):
        // it still wins.
        let mut mails = base();
        mails[2].received = 9500;
        mails.push(revised(m(5, "p2r", Some((2, 3)), 2, Some("p2"), 9000), 1));
        let a = assemble(&mails, 9600, &CFG);
        assert_eq!(keys(&a)[0].2, vec![(1, 2), (2, 5), (3, 4)]);
    }

    #[test]
    fn duplicates_and_corrections() {
        let mut resent = m(3, "p1-again", Some((1, 2)), 1, Some("c"), 30);
        resent.patch_hash = Some("hash-p1".into());
        let correction = m(4, "p2-fixed", Some((2, 2)), 1, Some("c"), 40);
        let mails = vec![
            m(1, "c", Some((0, 2)), 1, None, 10),
            m(2, "p1", Some((1, 2)), 1, Some("c"), 20),
            m(5, "p2", Some((2, 2)), 1, Some("c"), 25),
            resent,
            correction,
            m(6, "p1", Some((1, 2)), 1, Some("c"), 50),
        ];
        let a = assemble(&mails, 60, &CFG);
        assert_eq!(
            keys(&a),
            vec![("c", &SeriesState::Complete, vec![(1, 2), (2, 4)])]
        );
        assert_eq!(a.duplicates, vec![(3, 2), (5, 4), (6, 2)]);
    }

    /// A one-patch series with a cover, and the whole of it sent again
    /// (a RESEND in a new thread) received at `again`.
    fn sent_twice(again: i64) -> Vec<PatchMail> {
        vec![
            m(1, "c", Some((0, 1)), 1, None, 10),
            m(2, "p", Some((1, 1)), 1, Some("c"), 10),
            PatchMail {
                fields: SubjectFields {
                    title: "title of c".into(),
                    ..m(3, "c-again", Some((0, 1)), 1, None, again).fields
                },
                ..m(3, "c-again", Some((0, 1)), 1, None, again)
            },
            PatchMail {
                patch_hash: Some("hash-p".into()),
                ..m(4, "p-again", Some((1, 1)), 1, Some("c-again"), again)
            },
        ]
    }

    /// The whole series sent again counts once, also when both copies
    /// were received in the same second (one collect of an archive): then
    /// the order mails were stored decides (seen on the kvmarm archive: a
    /// `[PATCH RESEND]` was kept as a second complete series).
    #[test]
    fn whole_series_resent_counts_once() {
        for again in [90, 10] {
            let a = assemble(&sent_twice(again), 100, &CFG);
            assert_eq!(
                keys(&a),
                vec![("c", &SeriesState::Complete, vec![(1, 2)])],
                "re-sent at {again}"
            );
            assert_eq!(a.duplicates, vec![(3, 1), (4, 2)], "re-sent at {again}");
        }
    }

    #[test]
    fn mixed_totals_in_one_thread_are_split() {
        let mails = vec![
            m(1, "c", Some((0, 3)), 1, None, 10),
            m(2, "p1", Some((1, 3)), 1, Some("c"), 10),
            m(3, "q1", Some((1, 4)), 1, Some("c"), 10),
        ];
        let a = assemble(&mails, 20, &CFG);
        let ks: Vec<&str> = a.series.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(ks, vec!["c", "c#of4"]);
    }

    #[test]
    fn branch_and_repo_from_cover_then_first_patch() {
        let mut mails = vec![
            m(1, "c", Some((0, 2)), 1, None, 10),
            m(2, "p1", Some((1, 2)), 1, Some("c"), 10),
            m(3, "p2", Some((2, 2)), 1, Some("c"), 10),
        ];
        mails[1].fields.repo = Some("qemu".into());
        mails[2].fields.repo = Some("libvirt".into());
        mails[2].fields.branch = Some("stable".into());
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(a.series[0].repo.as_deref(), Some("qemu"));
        assert_eq!(a.series[0].branch.as_deref(), Some("stable"));
        mails[0].fields.repo = Some("kimchi".into());
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(a.series[0].repo.as_deref(), Some("kimchi"));
    }

    fn titled(mut m: PatchMail, title: &str) -> PatchMail {
        m.fields.title = title.into();
        m
    }

    #[test]
    fn reworded_reroll_in_a_new_thread_supersedes_by_patch_subjects() {
        let mails = vec![
            titled(m(1, "c1", Some((0, 2)), 1, None, 10), "Tidy the net code"),
            titled(m(2, "a1", Some((1, 2)), 1, Some("c1"), 10), "net: one"),
            titled(m(3, "b1", Some((2, 2)), 1, Some("c1"), 10), "net: two"),
            titled(m(4, "c2", Some((0, 2)), 2, None, 50), "net: tidy, take two"),
            titled(m(5, "a2", Some((1, 2)), 2, Some("c2"), 50), "net: one"),
            titled(m(6, "b2", Some((2, 2)), 2, Some("c2"), 50), "Net:  Two"),
        ];
        let a = assemble(&mails, 60, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c1",
                    &SeriesState::Superseded { by: "c2#v2".into() },
                    vec![(1, 2), (2, 3)]
                ),
                ("c2#v2", &SeriesState::Complete, vec![(1, 5), (2, 6)]),
            ]
        );
        // Another author's series under the same subjects is not a reroll.
        let mut other = mails.clone();
        for m in &mut other[3..] {
            m.author = "bob@example.org".into();
        }
        let a = assemble(&other, 60, &CFG);
        assert_eq!(a.series[0].state, SeriesState::Complete);
    }

    fn finished(key: &str, version: u32, ids: &[&str], patch_titles: &[&str]) -> FinishedSeries {
        FinishedSeries {
            key: key.into(),
            version,
            author: "ada@example.org".into(),
            title: format!("title of {}", ids[0]),
            message_ids: ids.iter().map(|i| (*i).to_owned()).collect(),
            patch_titles: patch_titles.iter().map(|t| (*t).to_owned()).collect(),
            patch_hashes: ids[1..].iter().map(|i| format!("hash-{i}")).collect(),
        }
    }

    #[test]
    fn what_was_finished_stays_finished() {
        let applied = [finished("c", 1, &["c", "p1"], &["title of p1"])];
        // A late correction of patch 1/1 in the finished thread.
        let late = vec![m(3, "p1-fix", Some((1, 1)), 1, Some("c"), 50)];
        let a = assemble_after(
            &late,
            &History {
                finished: &applied,
                change_ids: None,
            },
            60,
            &CFG,
        );
        assert_eq!(
            keys(&a),
            vec![(
                "c",
                &SeriesState::Superseded { by: "c".into() },
                vec![(1, 3)]
            )]
        );
        // The same series sent again in a new thread.
        let resent = vec![
            m(4, "c-again", Some((0, 1)), 1, None, 50),
            PatchMail {
                patch_hash: Some("hash-p1".into()),
                ..m(5, "p1-again", Some((1, 1)), 1, Some("c-again"), 50)
            },
        ];
        let a = assemble_after(
            &resent,
            &History {
                finished: &applied,
                change_ids: None,
            },
            60,
            &CFG,
        );
        assert_eq!(
            a.series[0].state,
            SeriesState::Superseded { by: "c".into() }
        );
        // v1 arriving after v2 was applied.
        let applied_v2 = [finished("c2#v2", 2, &["c2", "a2"], &["net: one"])];
        let v1 = vec![
            m(6, "c1", Some((0, 1)), 1, None, 50),
            titled(m(7, "a1", Some((1, 1)), 1, Some("c1"), 50), "Net: one"),
        ];
        let a = assemble_after(
            &v1,
            &History {
                finished: &applied_v2,
                change_ids: None,
            },
            60,
            &CFG,
        );
        assert_eq!(
            a.series[0].state,
            SeriesState::Superseded { by: "c2#v2".into() }
        );
        // A v2 sent into the finished v1's thread, and a lone patch posted
        // in it, are new series.
        let newer = vec![
            m(8, "c-v2", Some((0, 1)), 2, Some("c"), 50),
            PatchMail {
                references: vec!["c".into(), "c-v2".into()],
                ..m(9, "p1-v2", Some((1, 1)), 2, Some("c-v2"), 50)
            },
            m(10, "fixup", None, 1, Some("p1"), 55),
        ];
        let a = assemble_after(
            &newer,
            &History {
                finished: &applied,
                change_ids: None,
            },
            60,
            &CFG,
        );
        assert_eq!(
            keys(&a),
            vec![
                ("c#v2", &SeriesState::Complete, vec![(1, 9)]),
                ("fixup", &SeriesState::Complete, vec![(1, 10)]),
            ]
        );
    }

    #[test]
    fn grouping_cases() {
        // `[PATCH v3 0/2]` over `[PATCH 1/2]`, `[PATCH 2/2]`: v3.
        let mails = vec![
            m(1, "c", Some((0, 2)), 3, None, 10),
            m(2, "p1", Some((1, 2)), 1, Some("c"), 10),
            m(3, "p2", Some((2, 2)), 1, Some("c"), 10),
        ];
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(
            keys(&a),
            vec![("c#v3", &SeriesState::Complete, vec![(1, 2), (2, 3)])]
        );
        assert_eq!((a.series[0].version, a.series[0].cover), (3, Some(1)));
        // A cover saying `0/2` over patches saying `N/3`.
        let mails = vec![
            m(1, "c", Some((0, 2)), 1, None, 10),
            m(2, "p1", Some((1, 3)), 1, Some("c"), 10),
            m(3, "p3", Some((3, 3)), 1, Some("c"), 10),
        ];
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(
            keys(&a),
            vec![(
                "c",
                &SeriesState::Incomplete { missing: vec![2] },
                vec![(1, 2), (3, 3)]
            )]
        );
        assert_eq!((a.series[0].total, a.series[0].cover), (3, Some(1)));
        // Deep threading (`git format-patch --thread=deep`): each patch
        // replies to the one before.
        let deep = |id, msgid: &str, idx, parent: &str, refs: &[&str]| PatchMail {
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            ..m(id, msgid, Some((idx, 3)), 1, Some(parent), 10)
        };
        let mails = vec![
            m(1, "c", Some((0, 3)), 1, None, 10),
            deep(2, "p1", 1, "c", &["c"]),
            deep(3, "p2", 2, "p1", &["c", "p1"]),
            deep(4, "p3", 3, "p2", &["c", "p1", "p2"]),
        ];
        let a = assemble(&mails, 20, &CFG);
        assert_eq!(
            keys(&a),
            vec![("c", &SeriesState::Complete, vec![(1, 2), (2, 3), (3, 4)])]
        );
        // A reroll sent into the old version's thread, v1 incomplete: the
        // superseded v1 still says what it missed.
        let mails = vec![
            m(1, "c", Some((0, 2)), 1, None, 10),
            m(2, "p1", Some((1, 2)), 1, Some("c"), 10),
            m(3, "c2", Some((0, 2)), 2, Some("c"), 30),
            PatchMail {
                references: vec!["c".into(), "c2".into()],
                ..m(4, "q1", Some((1, 2)), 2, Some("c2"), 30)
            },
            PatchMail {
                references: vec!["c".into(), "c2".into()],
                ..m(5, "q2", Some((2, 2)), 2, Some("c2"), 30)
            },
        ];
        let a = assemble(&mails, 40, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c",
                    &SeriesState::Superseded { by: "c#v2".into() },
                    vec![(1, 2)]
                ),
                ("c#v2", &SeriesState::Complete, vec![(1, 4), (2, 5)]),
            ]
        );
        assert_eq!(a.series[0].missing, vec![2]);
        assert_eq!(a.series[1].missing, Vec::<u32>::new());
    }

    #[test]
    fn b4_change_id_from_the_cover_footer_or_the_header() {
        let footer = "Message-ID: <c@x>\nSubject: [PATCH v2 0/2] Reworded\n\nText.\n\n---\nSomeone (2):\n  a\n\n a | 1 +\n\n---\nbase-commit: 9852d85ec9d492ebef56dc5f229416c925758edc\nchange-id: 20240913-mgtime-20c98bcda88e\n\nBest regards,\n-- \nA <a@x>\n";
        let header = "Message-ID: <p@x>\nX-Change-ID: 20260330-ipq9650-159027d548cc\nSubject: [PATCH] x\n\nchange-id: not-this\n";
        let quoted = "Message-ID: <r@x>\nSubject: Re: x\n\n> ---\n> change-id: 20250901-pac1711-d3bacda400fd\n";
        for crlf in [false, true] {
            let eol = |t: &str| {
                if crlf {
                    t.replace('\n', "\r\n")
                } else {
                    t.to_owned()
                }
            };
            assert_eq!(
                change_id(eol(footer).as_bytes()).as_deref(),
                Some("20240913-mgtime-20c98bcda88e"),
                "crlf {crlf}"
            );
            assert_eq!(
                change_id(eol(header).as_bytes()).as_deref(),
                Some("20260330-ipq9650-159027d548cc")
            );
            assert_eq!(change_id(eol(quoted).as_bytes()), None);
        }
    }

    #[test]
    fn a_change_id_links_versions_whatever_their_subjects() {
        let mails = vec![
            m(1, "c1", Some((0, 1)), 1, None, 10),
            m(2, "a1", Some((1, 1)), 1, Some("c1"), 10),
            titled(m(3, "c2", Some((0, 1)), 2, None, 50), "Something else"),
            titled(m(4, "a2", Some((1, 1)), 2, Some("c2"), 50), "renamed patch"),
        ];
        let a = assemble(&mails, 60, &CFG);
        assert_eq!(a.series[0].state, SeriesState::Complete, "not linked");
        let ids: BTreeMap<String, String> = [("c1", "20240913-x-1"), ("c2", "20240913-x-1")]
            .map(|(m, c)| (m.to_owned(), c.to_owned()))
            .into();
        let history = History {
            finished: &[],
            change_ids: Some(&ids),
        };
        let a = assemble_after(&mails, &history, 60, &CFG);
        assert_eq!(
            keys(&a),
            vec![
                (
                    "c1",
                    &SeriesState::Superseded { by: "c2#v2".into() },
                    vec![(1, 2)]
                ),
                ("c2#v2", &SeriesState::Complete, vec![(1, 4)]),
            ]
        );
    }

    fn scenario() -> Vec<PatchMail> {
        let mut v = vec![
            m(1, "c", Some((0, 3)), 1, None, 10),
            m(2, "p1", Some((1, 3)), 1, Some("c"), 11),
            m(3, "p2", Some((2, 3)), 1, Some("c"), 12),
            m(4, "p3", Some((3, 3)), 1, Some("c"), 13),
            PatchMail {
                references: vec!["c".into(), "p2".into()],
                ..m(5, "p2v2", Some((2, 3)), 2, Some("p2"), 30)
            },
            m(6, "lone", None, 1, None, 14),
            m(7, "u1", Some((1, 2)), 1, None, 15),
            m(8, "u2", Some((2, 2)), 1, None, 16),
            m(9, "p1", Some((1, 3)), 1, Some("c"), 40),
            // A v3 whose patches arrive before their cover.
            PatchMail {
                references: vec!["c3".into()],
                ..m(10, "p1v3", Some((1, 1)), 3, Some("c3"), 50)
            },
            m(11, "c3", Some((0, 1)), 3, None, 60),
        ];
        v[6].author = "bob@example.org".into();
        v[7].author = "bob@example.org".into();
        v
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let mails = scenario();
        let want = assemble(&mails, 100, &CFG);
        let mut rng = Lcg(42);
        for _ in 0..50 {
            let mut shuffled = mails.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.next() % (i + 1));
            }
            assert_eq!(assemble(&shuffled, 100, &CFG), want);
        }
        // Every mail is accounted for exactly once.
        let mut seen: Vec<i64> = want
            .series
            .iter()
            .flat_map(|s| s.patches.iter().map(|p| p.1).chain(s.cover))
            .chain(want.duplicates.iter().map(|d| d.0))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let mut all: Vec<i64> = mails.iter().map(|m| m.mail_id).collect();
        all.sort_unstable();
        assert_eq!(seen, all);
    }

    #[test]
    fn keys_are_stable_as_mails_arrive() {
        let mails = scenario();
        for cut in 1..mails.len() {
            let before = assemble(&mails[..cut], 100, &CFG);
            let after = assemble(&mails, 100, &CFG);
            for s in &before.series {
                assert!(
                    after.series.iter().any(|t| t.key == s.key),
                    "key {} from the first {cut} mails vanished: {:?}",
                    s.key,
                    after.series.iter().map(|t| &t.key).collect::<Vec<_>>()
                );
            }
        }
    }
}
