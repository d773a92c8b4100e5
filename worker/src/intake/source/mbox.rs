//! TODO(h-sources): replaced by the sources helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MboxFormat {
    #[default]
    Mboxrd,
    Mboxo,
}
