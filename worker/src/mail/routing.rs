//! Routing a patch to a repository and branch (pure) when the subject does
//! not name them, for lists that carry several projects.

/// One condition on the subject's bracket tags.
#[derive(Debug, Clone)]
pub enum TagMatcher {
    /// `word`: a tag equal to it (case-insensitive) must appear.
    Required(String),
    /// `/regex`: some tag must match.
    Pattern(regex::Regex),
    /// `!word`: no tag may equal it (case-insensitive).
    Forbidden(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tag rule {rule:?} is not a valid regex: {source}")]
    BadPattern {
        rule: String,
        #[source]
        source: regex::Error,
    },
    #[error("tag rule is empty")]
    Empty,
}

impl TagMatcher {
    pub fn parse(rule: &str) -> Result<Self, Error> {
        let rule = rule.trim();
        if let Some(re) = rule.strip_prefix('/') {
            let re = re.strip_suffix('/').unwrap_or(re);
            if re.is_empty() {
                return Err(Error::Empty);
            }
            return regex::Regex::new(re)
                .map(TagMatcher::Pattern)
                .map_err(|source| Error::BadPattern {
                    rule: rule.to_owned(),
                    source,
                });
        }
        if let Some(word) = rule.strip_prefix('!') {
            if word.is_empty() {
                return Err(Error::Empty);
            }
            return Ok(TagMatcher::Forbidden(word.to_owned()));
        }
        if rule.is_empty() {
            return Err(Error::Empty);
        }
        Ok(TagMatcher::Required(rule.to_owned()))
    }

    pub fn holds(&self, tags: &[String]) -> bool {
        match self {
            TagMatcher::Required(w) => tags.iter().any(|t| t.eq_ignore_ascii_case(w)),
            TagMatcher::Pattern(re) => tags.iter().any(|t| re.is_match(t)),
            TagMatcher::Forbidden(w) => !tags.iter().any(|t| t.eq_ignore_ascii_case(w)),
        }
    }
}

/// A rule of `[[repos]].routes`: all given conditions must hold.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub repo: String,
    pub branch: Option<String>,
    pub list_id: Option<String>,
    pub tags: Vec<TagMatcher>,
}

/// Where a patch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub repo: String,
    pub branch: Option<String>,
}

/// First rule that matches wins; `None` when no rule matches.
pub fn route(rules: &[RouteRule], list_id: Option<&str>, tags: &[String]) -> Option<Route> {
    rules
        .iter()
        .find(|rule| {
            let list_ok = match (&rule.list_id, list_id) {
                (None, _) => true,
                (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                (Some(_), None) => false,
            };
            list_ok && rule.tags.iter().all(|m| m.holds(tags))
        })
        .map(|rule| Route {
            repo: rule.repo.clone(),
            branch: rule.branch.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repo: &str, list: Option<&str>, tags: &[&str]) -> RouteRule {
        RouteRule {
            repo: repo.into(),
            branch: None,
            list_id: list.map(str::to_owned),
            tags: tags.iter().map(|t| TagMatcher::parse(t).unwrap()).collect(),
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            rule("qemu", Some("qemu-devel.nongnu.org"), &["!RFC"]),
            rule("libvirt", None, &["libvirt"]),
            rule("kimchi", None, &["/^kimchi(-ui)?$/"]),
            rule("fallback", Some("virt.example.org"), &[]),
        ];
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (Some("qemu-devel.nongnu.org"), &[], Some("qemu")),
            (Some("QEMU-devel.nongnu.org"), &["resend"], Some("qemu")),
            (Some("qemu-devel.nongnu.org"), &["rfc"], None),
            (None, &["LIBVIRT"], Some("libvirt")),
            (None, &["kimchi-ui"], Some("kimchi")),
            (None, &["kimchi-uix"], None),
            (Some("virt.example.org"), &["anything"], Some("fallback")),
            (None, &[], None),
        ];
        for (list, t, want) in cases {
            let got = route(&rules, *list, &tags(t)).map(|r| r.repo);
            assert_eq!(got.as_deref(), *want, "{list:?} {t:?}");
        }
    }

    #[test]
    fn bad_rules_are_named() {
        let e = TagMatcher::parse("/(x").unwrap_err().to_string();
        assert!(e.contains("/(x") && e.contains("regex"), "{e}");
        assert!(TagMatcher::parse("").is_err());
        assert!(TagMatcher::parse("!").is_err());
        assert!(TagMatcher::parse("/").is_err());
    }
}
