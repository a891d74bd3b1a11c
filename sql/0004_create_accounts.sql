-- People, their roles and their sessions. Session tokens are stored only as SHA-256 hashes.
CREATE TABLE users (
    id                bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT users_pkey PRIMARY KEY,
    email             text        NOT NULL CONSTRAINT users_email_check CHECK (length(email) BETWEEN 3 AND 320),
    password_hash     text        NOT NULL,
    name              text        NOT NULL DEFAULT '',
    role              text        NOT NULL DEFAULT 'user'
                                  CONSTRAINT users_role_check CHECK (role IN ('user', 'support', 'admin')),
    status            text        NOT NULL DEFAULT 'active'
                                  CONSTRAINT users_status_check CHECK (status IN ('active', 'suspended', 'deleted')),
    timezone          text        NOT NULL DEFAULT 'UTC',
    email_verified_at timestamptz,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT sessions_pkey PRIMARY KEY,
    user_id      bigint      NOT NULL CONSTRAINT sessions_user_id_fkey REFERENCES users (id),
    token_hash   bytea       NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    expire_time  timestamptz NOT NULL,
    revoke_time  timestamptz,
    client_ip    text        NOT NULL DEFAULT '',
    user_agent   text        NOT NULL DEFAULT '',
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
