//! patchline: mailing list to RPM repository pipeline.
//!
//! The library does all the work; `main.rs` only parses arguments and maps
//! errors to exit codes. `docs/architecture.md` is the map: `stage` is the
//! one state machine and owns one thin module per stage; the heavy parts
//! (`mail`, `patch`, `rpm`, `yum`, `checks`, `notify`) know nothing of it;
//! `store` owns every SQL statement; `cli` and `server` are the two ways in.

pub mod checks;
pub mod cli;
pub mod config;
pub mod gitfetch;
pub mod junit;
pub mod live_log;
pub mod mail;
pub mod notify;
pub mod patch;
pub mod rpm;
pub mod server;
pub mod stage;
pub mod store;
#[cfg(test)]
mod testkit;
pub mod vocabulary;
pub mod yum;
