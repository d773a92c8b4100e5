//! A pull request mail's `git request-pull` text (pure): the commit it
//! starts from, the repository URL and ref to fetch, the commit it goes
//! up to, and the summary between the dashed lines.
//!
//! Read from the decoded body (lists send it base64 or quoted-printable as
//! often as plain). Mail clients indent and re-wrap; the labels git writes
//! are matched case-insensitively and the values are taken from the next
//! non-empty line. Nothing here fetches: the caller checks the URL against
//! its allow-list first.

/// What a `git request-pull` text asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// "The following changes since commit <id>".
    pub since: String,
    /// The repository to fetch from, as written.
    pub url: String,
    /// The ref after the URL (`tags/for-linus`, `for-next`); `None`
    /// means the remote's HEAD.
    pub reference: Option<String>,
    /// "for you to fetch changes up to <id>": what the fetched ref must be.
    pub up_to: String,
    /// The subject line shown under "up to".
    pub up_to_subject: Option<String>,
    /// The text between the two dashed lines (the signed tag's message or
    /// the branch description); empty when the request has none.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no `git request-pull` text (\"The following changes since commit ...\")")]
    NoRequest,
    #[error("the request names no repository (\"are available in the Git repository at:\")")]
    NoUrl,
    #[error(
        "the request names no commit it goes up to (\"for you to fetch changes up to ...\"): its tip cannot be checked"
    )]
    NoTip,
    #[error("{what} {id:?} is not a full commit id")]
    BadCommit { what: &'static str, id: String },
}

const SINCE: &str = "the following changes since commit ";
const AT: &str = "are available in the git repository at";
const UP_TO: &str = "for you to fetch changes up to ";
const DASHES: &str = "----------------------------------------------------------------";

fn full_id(what: &'static str, text: &str) -> Result<String, Error> {
    let id = text
        .trim()
        .trim_end_matches(':')
        .trim()
        .to_ascii_lowercase();
    if matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(Error::BadCommit {
            what,
            id: text.trim().to_owned(),
        })
    }
}

/// Reads the request out of a pull request mail's body.
pub fn parse_request_pull(body: &str) -> Result<PullRequest, Error> {
    let raw: Vec<&str> = body
        .lines()
        .map(|l| l.trim_end_matches('\r').trim_end())
        // A reply quoting a request is not one.
        .filter(|l| !l.trim_start().starts_with('>'))
        .collect();
    let lines: Vec<&str> = raw.iter().map(|l| l.trim()).collect();
    let find = |label: &str, from: usize| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.to_ascii_lowercase().starts_with(label))
            .map(|(i, l)| (i, *l))
    };
    let next_value = |after: usize| {
        lines
            .iter()
            .enumerate()
            .skip(after + 1)
            .find(|(_, l)| !l.is_empty())
            .map(|(i, l)| (i, *l))
    };
    let (since_at, since_line) = find(SINCE, 0).ok_or(Error::NoRequest)?;
    let since = full_id("the start commit", &since_line[SINCE.len()..])?;
    let (url_label, _) = find(AT, since_at).ok_or(Error::NoUrl)?;
    let (url_at, url_line) = next_value(url_label).ok_or(Error::NoUrl)?;
    let mut words = url_line.split_whitespace();
    let url = words.next().ok_or(Error::NoUrl)?.to_owned();
    let reference = words.next().map(str::to_owned);
    let (tip_at, tip_line) = find(UP_TO, url_at).ok_or(Error::NoTip)?;
    let up_to = full_id("the tip commit", &tip_line[UP_TO.len()..])?;
    let up_to_subject = next_value(tip_at)
        .filter(|(_, l)| !l.starts_with(DASHES))
        .map(|(_, l)| l.to_owned());
    let summary = match lines
        .iter()
        .skip(tip_at)
        .position(|l| l.starts_with(DASHES))
    {
        Some(first) => {
            let start = tip_at + first + 1;
            let end = lines
                .iter()
                .skip(start)
                .position(|l| l.starts_with(DASHES))
                .map_or(start, |n| start + n);
            // As written: indentation inside the summary is the author's.
            raw[start..end].join("\n").trim_matches('\n').to_owned()
        }
        None => String::new(),
    };
    Ok(PullRequest {
        since,
        url,
        reference,
        up_to,
        up_to_subject,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "88603b6dc419445847923fcb7fe5080067a30f98";
    const TIP: &str = "de535c0234dd2dbd9c790790f2ca1c4ec8a52d2b";

    fn request(url_line: &str) -> String {
        format!(
            "Hi,\n\nPlease pull.\n\nThe following changes since commit {BASE}:\n\n  Linux 6.2-rc2 (2023-01-01 13:53:16 -0800)\n\nare available in the Git repository at:\n\n  {url_line}\n\nfor you to fetch changes up to {TIP}:\n\n  Merge branch x (2023-01-05 15:26:53 +0000)\n\n{DASHES}\nFixes for 6.2\n\n- Fix one\n  thing\n\n{DASHES}\nA (1):\n      one\n\n a | 1 +\n"
        )
    }

    #[test]
    fn what_git_request_pull_writes() {
        let pr = parse_request_pull(&request(
            "git://git.kernel.org/pub/scm/linux/kernel/git/kvmarm/kvmarm.git tags/kvmarm-fixes-6.2-1",
        ))
        .unwrap();
        assert_eq!(
            pr,
            PullRequest {
                since: BASE.into(),
                url: "git://git.kernel.org/pub/scm/linux/kernel/git/kvmarm/kvmarm.git".into(),
                reference: Some("tags/kvmarm-fixes-6.2-1".into()),
                up_to: TIP.into(),
                up_to_subject: Some("Merge branch x (2023-01-05 15:26:53 +0000)".into()),
                summary: "Fixes for 6.2\n\n- Fix one\n  thing".into(),
            }
        );
        let crlf =
            parse_request_pull(&request("https://h/r.git for-next").replace('\n', "\r\n")).unwrap();
        assert_eq!(crlf.reference.as_deref(), Some("for-next"));
        assert_eq!(crlf.summary, "Fixes for 6.2\n\n- Fix one\n  thing");
        // No ref: the remote's HEAD.
        let head = parse_request_pull(&request("https://h/r.git")).unwrap();
        assert_eq!(head.reference, None);
    }

    #[test]
    fn what_is_not_a_request_is_named() {
        assert_eq!(
            parse_request_pull("Please pull my tree."),
            Err(Error::NoRequest)
        );
        let quoted: String = request("https://h/r.git")
            .lines()
            .map(|l| format!("> {l}\n"))
            .collect();
        assert_eq!(parse_request_pull(&quoted), Err(Error::NoRequest));
        let no_tip = request("https://h/r.git").replace("for you to fetch changes up to", "and");
        assert_eq!(parse_request_pull(&no_tip), Err(Error::NoTip));
        let short = request("https://h/r.git").replace(TIP, "de535c02");
        assert!(matches!(
            parse_request_pull(&short),
            Err(Error::BadCommit {
                what: "the tip commit",
                ..
            })
        ));
    }

    /// Real requests from public list archives (kvmarm, plain text;
    /// virtualization, base64), read through the mail parser as collect
    /// reads them.
    #[test]
    fn real_requests_from_list_archives() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real/");
        let read = |name: &str| {
            let raw = std::fs::read(format!("{fixtures}{name}")).unwrap();
            let mail = crate::mail::parse::parse_mail(&raw, &Default::default()).unwrap();
            parse_request_pull(&mail.body).unwrap()
        };
        let kvmarm = read("git-pull-kvmarm.eml");
        assert_eq!(kvmarm.since, BASE);
        assert_eq!(kvmarm.up_to, TIP);
        assert_eq!(
            kvmarm.url,
            "git://git.kernel.org/pub/scm/linux/kernel/git/kvmarm/kvmarm.git"
        );
        assert_eq!(kvmarm.reference.as_deref(), Some("tags/kvmarm-fixes-6.2-1"));
        assert!(
            kvmarm
                .summary
                .starts_with("KVM/arm64 fixes for 6.2, take #1\n\n- Fix the PMCR_EL0")
        );
        assert!(
            kvmarm.summary.ends_with("replaced by Zenghui"),
            "{}",
            kvmarm.summary
        );
        let vhost = read("git-pull-vhost-base64.eml");
        assert_eq!(vhost.since, "ffc253263a1375a65fa6c9f62a893e9767fbebfa");
        assert_eq!(vhost.up_to, "86f6c224c97911b4392cb7b402e6a4ed323a449e");
        assert_eq!(
            vhost.url,
            "https://git.kernel.org/pub/scm/linux/kernel/git/mst/vhost.git"
        );
        assert_eq!(vhost.reference.as_deref(), Some("tags/for_linus"));
        assert!(
            vhost
                .summary
                .starts_with("vhost,virtio,vdpa: features, fixes, cleanups")
        );
    }
}
