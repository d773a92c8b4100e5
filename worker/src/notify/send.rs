//! Turning a composed report into an RFC 5322 message and delivering the
//! outbox: SMTP (STARTTLS, implicit TLS or plain on loopback, with
//! authentication) or a local `sendmail`, both through lettre.

use super::Error;
use super::Report;
use crate::config::{self, Config, ReportTransport, SmtpSecurity};
use lettre::Transport as _;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, SendmailTransport, SmtpTransport};
use secrecy::ExposeSecret;
use std::time::Duration;

pub struct Built {
    pub message: Message,
    pub message_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
}

fn mailbox(subject: &str, address: &str) -> Result<Mailbox, Error> {
    address.parse().map_err(|source| Error::Address {
        subject: subject.to_owned(),
        address: address.to_owned(),
        source,
    })
}

/// The message for `report`; its Message-ID is new (the outbox keeps it).
pub fn build_message(config: &Config, run: i64, report: &Report) -> Result<Built, Error> {
    let cfg = &config.report;
    let from = mailbox(
        &report.subject,
        cfg.from
            .as_deref()
            .unwrap_or("patchline <patchline@localhost>"),
    )?;
    let domain = from.email.domain().to_owned();
    let unique = format!("{}.{}", chrono::Utc::now().timestamp(), std::process::id());
    let message_id = format!(
        "patchline.run{run}.{}.{unique}@{domain}",
        report
            .key
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(report.subject.clone())
        .message_id(Some(format!("<{message_id}>")))
        .date_now()
        .user_agent(format!("patchline {}", env!("CARGO_PKG_VERSION")))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Patchline-Run"),
            run.to_string(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    let mut recipients = Vec::new();
    for a in &report.to {
        let m = mailbox(&report.subject, a)?;
        recipients.push(m.email.to_string());
        builder = builder.to(m);
    }
    for a in &report.cc {
        let m = mailbox(&report.subject, a)?;
        recipients.push(m.email.to_string());
        builder = builder.cc(m);
    }
    if recipients.is_empty() {
        // Written to the run's directory only: a message still needs a
        // recipient to be well-formed.
        builder = builder.to(from.clone());
    }
    if let Some(parent) = &report.in_reply_to {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    if !report.references.is_empty() {
        let refs: Vec<String> = report.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(refs.join(" "));
    }
    let built = match &report.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            report.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(SinglePart::plain(report.text.clone())),
    }
    .map_err(|source| Error::Message {
        subject: report.subject.clone(),
        source,
    })?;
    Ok(Built {
        message: built,
        message_id,
        sender: from.email.to_string(),
        recipients,
    })
}

pub enum Transport {
    Smtp(Box<SmtpTransport>, String),
    Sendmail(SendmailTransport, String),
}

impl Transport {
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let cfg = &config.report;
        match cfg.transport {
            ReportTransport::Smtp => {
                let Some(smtp) = &cfg.smtp else {
                    return Err(not_configured("report.smtp is missing"));
                };
                smtp_transport(smtp)
            }
            ReportTransport::Sendmail => Ok(Transport::Sendmail(
                SendmailTransport::new_with_command(&cfg.sendmail),
                format!("sendmail {}", cfg.sendmail.display()),
            )),
            ReportTransport::None => Err(not_configured("no report transport configured")),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Transport::Smtp(_, n) | Transport::Sendmail(_, n) => n,
        }
    }

    pub fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), SendError> {
        match self {
            Transport::Smtp(t, _) => t.send_raw(envelope, raw).map(drop).map_err(SendError::Smtp),
            Transport::Sendmail(t, _) => t.send_raw(envelope, raw).map_err(SendError::Sendmail),
        }
    }
}

/// Why one message was not delivered (the outbox records its text).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// lettre's own text plus its causes (refused, timed out...): its
    /// SMTP error says little by itself.
    #[error("{}", with_causes(.0))]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error(transparent)]
    Sendmail(lettre::transport::sendmail::Error),
}

fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Why an envelope cannot be made for a stored report.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("sender {address:?}: {source}")]
    Sender {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("recipient {address:?}: {source}")]
    Recipient {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("envelope: {0}")]
    Envelope(#[source] lettre::error::Error),
}

fn not_configured(message: &str) -> Error {
    Error::NotSent {
        queued: 0,
        message: message.into(),
        source: None,
    }
}

/// A transport that cannot be set up: `what` failed, `source` says why.
fn setup_failed(
    what: String,
    source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> Error {
    Error::NotSent {
        queued: 0,
        message: what,
        source: Some(source.into()),
    }
}

fn smtp_transport(smtp: &config::Smtp) -> Result<Transport, Error> {
    let port = smtp.port.unwrap_or(match smtp.security {
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    });
    let tls = || -> Result<TlsParameters, Error> {
        let mut params = TlsParameters::builder(smtp.host.clone());
        if let Some(ca) = &smtp.ca_file {
            let ca_file = || format!("report.smtp.ca_file {}", ca.display());
            let pem = std::fs::read(ca).map_err(|e| setup_failed(ca_file(), e))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| setup_failed(ca_file(), e))?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| setup_failed(format!("TLS for {}", smtp.host), e))
    };
    let mut builder = SmtpTransport::builder_dangerous(&smtp.host)
        .port(port)
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)))
        .tls(match smtp.security {
            SmtpSecurity::Starttls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
            SmtpSecurity::None => Tls::None,
        });
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(Transport::Smtp(
        Box::new(builder.build()),
        format!("SMTP server {}:{port}", smtp.host),
    ))
}

/// The SMTP envelope of a stored report; the error says which address
/// does not parse (or that there is no recipient).
pub fn envelope(sender: &str, recipients: &[String]) -> Result<Envelope, EnvelopeError> {
    let from: Address = sender.parse().map_err(|source| EnvelopeError::Sender {
        address: sender.to_owned(),
        source,
    })?;
    let to = recipients
        .iter()
        .map(|a| {
            a.parse::<Address>()
                .map_err(|source| EnvelopeError::Recipient {
                    address: a.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(Some(from), to).map_err(EnvelopeError::Envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_bad_address_is_named_and_its_parse_error_kept() {
        let e = envelope("patchline@localhost", &["not an address".into()]).unwrap_err();
        assert!(
            e.to_string().starts_with("recipient \"not an address\": "),
            "{e}"
        );
        assert!(e.source().is_some(), "{e:?}");
        assert!(matches!(
            envelope("patchline@localhost", &[]),
            Err(EnvelopeError::Envelope(_))
        ));
    }
}
