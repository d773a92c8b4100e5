//! TODO
pub struct MaildirSource;
impl MaildirSource {
    pub fn new(_p: std::path::PathBuf, _m: u64) -> Self {
        MaildirSource
    }
}
impl super::MailSource for MaildirSource {
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
