-- Single-use links sent by email (verification, password reset, email change), stored only as
-- SHA-256 hashes; two-factor secrets (encrypted), recovery codes (hashed); pending email changes;
-- per-day API key usage.
CREATE TABLE account_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT account_tokens_pkey PRIMARY KEY,
    user_id     bigint      NOT NULL CONSTRAINT account_tokens_user_id_fkey REFERENCES users (id),
    purpose     text        NOT NULL
                            CONSTRAINT account_tokens_purpose_check
                            CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
    token_hash  bytea       NOT NULL,
    -- For change_email: the address the link confirms.
    email       text        NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    used_time   timestamptz,
    CONSTRAINT account_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX account_tokens_user_purpose_idx ON account_tokens (user_id, purpose) WHERE used_time IS NULL;

ALTER TABLE users
    ADD COLUMN pending_email    text NOT NULL DEFAULT '',
    -- AES-GCM ciphertext of the TOTP secret ("<key id>:<base64>"); enabled once confirmed.
    ADD COLUMN totp_secret      text NOT NULL DEFAULT '',
    ADD COLUMN totp_enabled_at  timestamptz,
    -- The last accepted time step: a code is never accepted twice.
    ADD COLUMN totp_last_step   bigint NOT NULL DEFAULT 0;

CREATE TABLE recovery_codes (
    id         bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT recovery_codes_pkey PRIMARY KEY,
    user_id    bigint NOT NULL CONSTRAINT recovery_codes_user_id_fkey REFERENCES users (id),
    code_hash  bytea  NOT NULL,
    used_time  timestamptz,
    CONSTRAINT recovery_codes_user_code_key UNIQUE (user_id, code_hash)
);

-- Counted in memory by each server copy and added here every few seconds.
CREATE TABLE api_key_usage_days (
    api_key_id bigint NOT NULL CONSTRAINT api_key_usage_days_api_key_id_fkey REFERENCES api_keys (id),
    day        date   NOT NULL,
    calls      bigint NOT NULL DEFAULT 0,
    CONSTRAINT api_key_usage_days_pkey PRIMARY KEY (api_key_id, day)
);
