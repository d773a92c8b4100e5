//! Builds: one row per run, repository, branch and target.

#[allow(unused_imports)]
use super::{Error, Store, now};

impl Store {}
