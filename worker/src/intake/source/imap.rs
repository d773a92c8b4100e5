//! TODO(h-imap): replaced by the IMAP helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapSecurity {
    Tls,
    StartTls,
    Plain,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    Login,
    Plain,
}
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: ImapSecurity,
    pub user: String,
    pub password: secrecy::SecretString,
    pub auth: ImapAuth,
    pub mailbox: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub timeout: std::time::Duration,
    pub max_mail_size: u64,
    pub batch: u32,
}
pub struct ImapSource;
impl ImapSource {
    pub fn new(_s: ImapSettings) -> Self {
        ImapSource
    }
    pub fn wait_for_mail(&mut self, _t: std::time::Duration) -> Result<bool, super::Error> {
        Ok(false)
    }
}
impl super::MailSource for ImapSource {
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
