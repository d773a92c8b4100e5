//! patchline: mailing list to RPM repository pipeline.
//!
//! The library does all the work; `main.rs` only parses arguments and maps
//! errors to exit codes.

pub mod build;
pub mod cli;
pub mod config;
pub mod intake;
pub mod junit;
pub mod patch;
pub mod pipeline;
pub mod publish;
pub mod report;
pub mod server;
pub mod store;
pub mod test;
#[cfg(test)]
mod testkit;
