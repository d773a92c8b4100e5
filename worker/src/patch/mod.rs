//! The patch engine: parsing mailed diffs and applying them to git trees
//! with `git am` semantics. This part reads patches; it never touches a
//! repository.

pub mod apply;
pub mod hunks;
pub mod mailinfo;
pub mod pack;
pub mod parse;
pub mod pull;
