//! Mail: everything about list traffic short of the state database.
//! Sources hand over raw bytes, the archive stores them durably before
//! anything else looks at them, then mails are parsed, classified by the
//! subject grammar, routed and grouped into series (pure).
//!
//! It never changes a repository and knows nothing of the store or the
//! stages: the collect stage (`crate::stage::collect`) records what it
//! finds.

pub mod archive;
pub mod base;
pub mod classify;
pub mod parse;
pub mod pull;
pub mod routing;
pub mod series;
pub mod source;
pub mod subject;
pub mod trailers;
