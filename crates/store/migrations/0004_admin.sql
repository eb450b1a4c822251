-- Operator state (module `admin`).

-- Per-account storage quota in bytes; NULL: the relay's default.
ALTER TABLE accounts ADD COLUMN quota INTEGER;

-- Addresses nobody may log in as or re-create: banned accounts (their row
-- and mail stay) and deleted ones (their name stays taken).
CREATE TABLE blocklist (
    address TEXT    PRIMARY KEY,
    reason  TEXT    NOT NULL,
    created INTEGER NOT NULL
);

-- Invite tokens: each admits up to `max_uses` new accounts while the relay
-- is closed, until `expires` (Unix seconds; NULL: never).
CREATE TABLE invites (
    token    TEXT    PRIMARY KEY,
    max_uses INTEGER NOT NULL,
    uses     INTEGER NOT NULL DEFAULT 0,
    expires  INTEGER,
    comment  TEXT    NOT NULL DEFAULT '',
    created  INTEGER NOT NULL
);

-- Addresses handed out by `/new?token=` and not yet logged in: the first
-- login of such an address before `expires` consumes one use of its token.
CREATE TABLE invite_reservations (
    address TEXT    PRIMARY KEY,
    token   TEXT    NOT NULL REFERENCES invites (token) ON DELETE CASCADE,
    expires INTEGER NOT NULL
);

-- Settings the operator changed at run time; they override the file.
CREATE TABLE admin_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
