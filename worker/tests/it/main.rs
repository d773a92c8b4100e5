mod am;
mod apply;
mod collect;
mod dovecot;
mod imap_source;
mod util;
