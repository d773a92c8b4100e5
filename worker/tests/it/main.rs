mod collect;
mod util;
