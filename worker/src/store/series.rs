//! Series and their patches.

#[allow(unused_imports)]
use super::{Error, Store, now};

impl Store {}
