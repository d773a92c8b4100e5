//! Mail intake: everything between a mailbox and the `series`/`patches`
//! tables. Sources hand over raw bytes, the archive stores them durably
//! before anything else looks at them, then mails are parsed, classified by
//! the subject grammar and grouped into series.
//!
//! Intake never changes a repository; it only records what arrived.

pub mod archive;
pub mod classify;
pub mod parse;
pub mod routing;
pub mod series;
pub mod source;
pub mod subject;
