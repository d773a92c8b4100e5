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
    address.parse().map_err(|e| Error::Message {
        subject: subject.to_owned(),
        message: format!("{address:?} is not a mail address: {e}"),
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
    .map_err(|e| Error::Message {
        subject: report.subject.clone(),
        message: e.to_string(),
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

    pub fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), String> {
        match self {
            Transport::Smtp(t, _) => t.send_raw(envelope, raw).map(drop).map_err(|e| {
                // lettre's own text plus its cause (refused, timed out...).
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            }),
            Transport::Sendmail(t, _) => t.send_raw(envelope, raw).map_err(|e| e.to_string()),
        }
    }
}

fn not_configured(message: &str) -> Error {
    Error::NotSent {
        queued: 0,
        message: message.into(),
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
            let pem = std::fs::read(ca).map_err(|e| {
                not_configured(&format!("report.smtp.ca_file {}: {e}", ca.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                not_configured(&format!("report.smtp.ca_file {}: {e}", ca.display()))
            })?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| not_configured(&format!("TLS for {}: {e}", smtp.host)))
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
pub fn envelope(sender: &str, recipients: &[String]) -> Result<Envelope, String> {
    let from: Address = sender
        .parse()
        .map_err(|e| format!("sender {sender:?}: {e}"))?;
    let to = recipients
        .iter()
        .map(|a| {
            a.parse::<Address>()
                .map_err(|e| format!("recipient {a:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(Some(from), to).map_err(|e| format!("envelope: {e}"))
}
