//! The outbox: composed reports until they are sent.

#[allow(unused_imports)]
use super::{Error, Store, now};

impl Store {}
