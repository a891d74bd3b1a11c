-- API keys: stored only as SHA-256 hashes; a rotated key keeps working until expire_time.
CREATE TABLE api_keys (
    id             bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT api_keys_pkey PRIMARY KEY,
    user_id        bigint      NOT NULL CONSTRAINT api_keys_user_id_fkey REFERENCES users (id),
    name           text        NOT NULL CONSTRAINT api_keys_name_check CHECK (length(name) BETWEEN 1 AND 100),
    prefix         text        NOT NULL,
    token_hash     bytea       NOT NULL,
    allowed_ips    text[]      NOT NULL DEFAULT '{}',
    create_time    timestamptz NOT NULL DEFAULT now(),
    last_used_time timestamptz,
    expire_time    timestamptz,
    revoke_time    timestamptz,
    CONSTRAINT api_keys_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id, id);
