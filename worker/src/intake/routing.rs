//! Routing a patch to a repository and branch (pure) when the subject does
//! not name them, for lists that carry several projects.
//! OWNER: subject/mail helper. The types below are the contract.

/// One condition on the subject's bracket tags.
#[derive(Debug, Clone)]
pub enum TagMatcher {
    /// `word`: a tag equal to it (case-insensitive) must appear.
    Required(String),
    /// `/regex`: some tag must match.
    Pattern(regex::Regex),
    /// `!word`: no tag may equal it.
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
        if rule.is_empty() {
            return Err(Error::Empty);
        }
        Ok(TagMatcher::Required(rule.to_owned()))
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
pub fn route(_rules: &[RouteRule], _list_id: Option<&str>, _tags: &[String]) -> Option<Route> {
    None
}
