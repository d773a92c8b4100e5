//! The outbox: every composed report is kept in the state database until it
//! is sent; a send that fails is retried with backoff and stays queued for
//! the next report stage.

use super::Error;
use crate::config;
use crate::notify::send::{Transport, envelope};
use crate::store::Store;
use std::time::Duration;

/// What happened to one outbox message in a flush.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub run: i64,
    pub key: String,
    pub sent: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Sends every queued message of the outbox, oldest first, each with up to
/// `attempts` tries and a doubling delay; a message that still fails stays
/// queued with its error.
pub fn flush_outbox(
    store: &mut Store,
    transport: &Transport,
    cfg: &config::Report,
) -> Result<Vec<Delivery>, Error> {
    let queued = store.queued_reports()?;
    let mut out = Vec::new();
    let mut unreachable = false;
    for report in queued {
        let mut attempts = report.attempts;
        let mut delivery = Delivery {
            run: report.run,
            key: report.key,
            sent: false,
            attempts,
            error: None,
        };
        let envelope = match envelope(&report.sender, &report.recipients) {
            Ok(e) => e,
            Err(e) => {
                // The outbox keeps why as text.
                let message = e.to_string();
                store.record_delivery(report.id, false, attempts, Some(&message))?;
                delivery.error = Some(message);
                out.push(delivery);
                continue;
            }
        };
        // Once the server is known to be down, later messages wait for the
        // next stage instead of each waiting through every retry.
        let tries = if unreachable { 1 } else { cfg.attempts.max(1) };
        let mut delay = Duration::from_millis(cfg.retry_delay_ms);
        for attempt in 0..tries {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            attempts += 1;
            match transport.send(&envelope, &report.raw) {
                Ok(()) => {
                    delivery.sent = true;
                    delivery.error = None;
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        attempt = attempts,
                        "sending a report via {} failed: {e}",
                        transport.name()
                    );
                    delivery.error = Some(format!("{}: {e}", transport.name()));
                }
            }
        }
        unreachable |= !delivery.sent;
        delivery.attempts = attempts;
        store.record_delivery(
            report.id,
            delivery.sent,
            attempts,
            delivery.error.as_deref(),
        )?;
        out.push(delivery);
    }
    Ok(out)
}
