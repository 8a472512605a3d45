-- Keys that seal service tokens, each wrapped (AES-256-GCM) under a key derived from the
-- platform's secret key. The newest is the current one; older ones stay for decryption.
CREATE TABLE token_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX token_keys_created_at_idx ON token_keys (created_at);
