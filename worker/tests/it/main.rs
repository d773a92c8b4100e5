mod am;
mod collect;
mod dovecot;
mod imap_source;
mod util;
