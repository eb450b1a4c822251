-- The outbound queue (docs/specifications.md §6). One row per queued message (the
-- DKIM-signed body as sent; `sender` is '' for the null sender of bounces)
-- and one row per recipient. Times are Unix milliseconds.
CREATE TABLE queue_messages (
    id      INTEGER PRIMARY KEY,
    sender  TEXT    NOT NULL,
    body    BLOB    NOT NULL,
    created INTEGER NOT NULL
);

-- `state` is 'pending', 'delivered' or 'failed'. A message and its
-- recipients are deleted together once no recipient is pending.
CREATE TABLE queue_recipients (
    message_id   INTEGER NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    recipient    TEXT    NOT NULL,
    domain       TEXT    NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX queue_recipients_due ON queue_recipients (state, next_attempt);
