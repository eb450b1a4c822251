-- The push notification queue (docs/specifications.md §4). One row per (account,
-- device token) with a notification still to send; several messages for the
-- same device while a row is pending collapse into that row. Times are
-- Unix milliseconds.
CREATE TABLE push_queue (
    account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (account_id, token)
);
CREATE INDEX push_queue_due ON push_queue (next_attempt);
