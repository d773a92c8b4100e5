mod am;
mod apply;
mod build;
mod collect;
mod dovecot;
mod imap_source;
mod publish;
mod util;
