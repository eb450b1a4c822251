-- Accounts: one row per address. Only the day of the last login is kept
-- (privacy, docs/specifications.md §1).
CREATE TABLE accounts (
    id             INTEGER PRIMARY KEY,
    address        TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    created_day    INTEGER NOT NULL,
    last_login_day INTEGER
);

-- Mailboxes. `INBOX` is always stored with that spelling, so the unique
-- index makes it case-insensitive while other names stay case-sensitive
-- (RFC 3501 §5.1). `uidvalidity` never changes; `uidnext` never decreases.
CREATE TABLE mailboxes (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext     INTEGER NOT NULL DEFAULT 1,
    special_use TEXT
);
CREATE UNIQUE INDEX mailboxes_by_name ON mailboxes (account_id, name);

-- Messages. `flags` holds the flags separated by single spaces (flags are
-- IMAP atoms and never contain spaces).
CREATE TABLE messages (
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    flags         TEXT    NOT NULL DEFAULT '',
    size          INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);

-- Per-account metadata (RFC 5464), several values per key (one per device).
CREATE TABLE user_metadata (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated    INTEGER NOT NULL,
    PRIMARY KEY (account_id, key, value)
);

-- Server-wide values (RFC 5464 server metadata, internal counters).
CREATE TABLE server_metadata (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
