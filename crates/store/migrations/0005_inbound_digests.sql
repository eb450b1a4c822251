-- What each account received from other relays lately: the SHA-256 of the
-- stored bytes and when (Unix seconds). A peer that retries a delivery it
-- got no answer for (the connection broke after the commit) sends the same
-- bytes again; they are acknowledged and not stored twice. Rows older than
-- a day are pruned by the expiry pass.
CREATE TABLE inbound_digests (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    digest     BLOB    NOT NULL,
    received   INTEGER NOT NULL,
    PRIMARY KEY (account_id, digest)
) WITHOUT ROWID;
CREATE INDEX inbound_digests_by_age ON inbound_digests (received);
