//! What the stages tell while they work, for whoever watches: the CLI
//! draws it on a terminal (stage lines, bars), the HTTP worker logs some
//! of it. The stages call a [`Progress`]; they never print.

use super::{Failure, Stage, StageState, Summary};
use std::time::Duration;

/// Progress callbacks. Every method does nothing by default; all are
/// called on the stage's own thread, in order: `stage_begins`, then any
/// number of steps (`step`, `advance`/`mail`, `done`), then `stage_ends`.
pub trait Progress {
    /// A stage of `run` begins.
    fn stage_begins(&self, _run: i64, _stage: Stage) {}
    /// The stage ended and its end is recorded.
    fn stage_ends(&self, _end: &StageEnded<'_>) {}
    /// A long step of the stage begins: `total` of `unit`, when known
    /// (an mbox's size; the series, branches, targets or tests to do).
    fn step(&self, _unit: Unit, _total: Option<u64>) {}
    /// `at` of the step's `unit` are done; `current` is what is in hand.
    fn advance(&self, _at: u64, _current: &str) {}
    /// Collect: the `stored`th mail of this intake was read, from
    /// `origin` (told with every mail; an mbox's step also advances).
    fn mail(&self, _stored: u64, _origin: &str) {}
    /// The step is over.
    fn done(&self) {}
}

/// A stage's end, as [`Progress::stage_ends`] is told it.
pub struct StageEnded<'a> {
    pub run: i64,
    pub stage: Stage,
    /// As recorded: `ok`, `failed`, `skipped`.
    pub state: StageState,
    /// What it did, or the error that stopped it (not completed).
    pub outcome: &'a Result<Summary, Failure>,
    pub elapsed: Duration,
}

/// What a step counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of a source read (an mbox file).
    Bytes,
    Mails,
    Series,
    /// Branches made into source RPMs.
    Branches,
    /// Target builds.
    Targets,
    Tests,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Mails => "mails",
            Unit::Series => "series",
            Unit::Branches => "source RPMs",
            Unit::Targets => "targets",
            Unit::Tests => "tests",
        }
    }
}
