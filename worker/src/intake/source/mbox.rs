//! TODO(h-sources): replaced by the sources helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MboxFormat {
    #[default]
    Mboxrd,
    Mboxo,
}
pub struct MboxSource;
impl MboxSource {
    pub fn new(_p: std::path::PathBuf, _f: MboxFormat, _m: u64) -> Self {
        MboxSource
    }
}
impl super::MailSource for MboxSource {
    fn key(&self) -> String {
        String::new()
    }
    fn fetch(
        &mut self,
        _r: &super::Resume<'_>,
        _s: &mut super::Sink<'_>,
    ) -> Result<super::FetchStats, super::Error> {
        Ok(Default::default())
    }
}
