mod dovecot;
mod imap_source;
