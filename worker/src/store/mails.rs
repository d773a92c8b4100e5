//! Mails: source cursors, every item a source delivered, the stored mails
//! and their duplicates.

use super::{Error, Store, now};
use rusqlite::{OptionalExtension, params};

impl Store {
    pub fn source_cursor(&self, key: &str) -> Result<Option<String>, Error> {
        self.conn
            .query_row("SELECT cursor FROM sources WHERE key = ?1", [key], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    pub fn set_source_cursor(&mut self, key: &str, cursor: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO sources (key, cursor, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                params![key, cursor, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a source's position (after its mailbox was replaced). Items
    /// already stored stay de-duplicated by Message-ID.
    pub fn reset_source(&mut self, key: &str) -> Result<bool, Error> {
        let n = self
            .conn
            .execute("DELETE FROM sources WHERE key = ?1", [key])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn item_seen(&self, source_key: &str, item: &str) -> Result<bool, Error> {
        self.conn
            .query_row(
                "SELECT 1 FROM source_items WHERE source_key = ?1 AND item = ?2",
                [source_key, item],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }
}
