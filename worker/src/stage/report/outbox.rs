//! The outbox: every composed report is kept in the state database until it
//! is sent; a send that fails is retried with backoff and stays queued for
//! the next report stage.

use super::Error;
use crate::config;
use crate::notify::send::{Transport, envelope};
use crate::store::{self, Store, now};
use rusqlite::params;
use std::time::Duration;

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
    store: &Store,
    transport: &Transport,
    cfg: &config::Report,
) -> Result<Vec<Delivery>, Error> {
    type Row = (i64, i64, String, String, String, Vec<u8>, u32);
    let queued: Vec<Row> = {
        let conn = store.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, run_id, key, sender, recipients, raw, attempts FROM outbox
                 WHERE state = 'queued' ORDER BY id",
            )
            .map_err(|e| store.err(e))?;
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .map_err(|e| store.err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| store.err(e))?
    };
    let mut out = Vec::new();
    let mut unreachable = false;
    for (id, run, key, sender, recipients, raw, mut attempts) in queued {
        let mut delivery = Delivery {
            run,
            key,
            sent: false,
            attempts,
            error: None,
        };
        let envelope = envelope(&sender, &recipients);
        let envelope = match envelope {
            Ok(e) => e,
            Err(message) => {
                record(store, id, false, attempts, Some(&message))?;
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
            match transport.send(&envelope, &raw) {
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
        record(
            store,
            id,
            delivery.sent,
            attempts,
            delivery.error.as_deref(),
        )?;
        out.push(delivery);
    }
    Ok(out)
}

fn record(
    store: &Store,
    id: i64,
    sent: bool,
    attempts: u32,
    error: Option<&str>,
) -> Result<(), store::Error> {
    store
        .conn()
        .execute(
            "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4, sent_at = ?5 WHERE id = ?1",
            params![
                id,
                if sent { "sent" } else { "queued" },
                attempts,
                error,
                sent.then(now)
            ],
        )
        .map(drop)
        .map_err(|e| store.err(e))
}
