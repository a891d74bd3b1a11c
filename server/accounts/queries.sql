-- name: insert_user(email, password_hash, name, role)^
INSERT INTO users (email, password_hash, name, role) VALUES (:email, :password_hash, :name, :role)
RETURNING id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps;

-- name: get_user_by_email(email)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps
FROM users WHERE lower(email) = lower(:email);

-- name: get_user(id)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps
FROM users WHERE id = :id;

-- name: update_password_hash(id, password_hash)!
UPDATE users SET password_hash = :password_hash, update_time = now() WHERE id = :id;

-- name: insert_session(user_id, token_hash, expire_time, client_ip, user_agent)^
INSERT INTO sessions (user_id, token_hash, expire_time, client_ip, user_agent)
VALUES (:user_id, :token_hash, :expire_time, :client_ip, :user_agent)
RETURNING id;

-- name: get_live_session(token_hash)^
-- The session and its user, if the session is neither expired nor revoked and the user is active.
SELECT s.id AS session_id, u.id AS user_id, u.email, u.role
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = :token_hash AND s.revoke_time IS NULL AND s.expire_time > now() AND u.status = 'active';

-- name: revoke_session(id)!
UPDATE sessions SET revoke_time = now() WHERE id = :id AND revoke_time IS NULL;

-- name: insert_api_key(user_id, name, prefix, token_hash, allowed_ips)^
INSERT INTO api_keys (user_id, name, prefix, token_hash, allowed_ips)
VALUES (:user_id, :name, :prefix, :token_hash, :allowed_ips)
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: list_api_keys(user_id)
SELECT id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time
FROM api_keys WHERE user_id = :user_id ORDER BY id;

-- name: lock_api_key(id, user_id)^
SELECT id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time
FROM api_keys WHERE id = :id AND user_id = :user_id FOR UPDATE;

-- name: expire_api_key(id, grace_s)^
-- Rotation: the old key ends after the grace period (or sooner, if it already ended sooner).
UPDATE api_keys
SET expire_time = least(coalesce(expire_time, 'infinity'), now() + make_interval(secs => :grace_s))
WHERE id = :id
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: revoke_api_key(id)^
UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE id = :id
RETURNING id, user_id, name, prefix, allowed_ips, create_time, last_used_time, expire_time, revoke_time;

-- name: get_live_api_key(token_hash)^
SELECT k.id AS key_id, k.allowed_ips, u.id AS user_id, u.email, u.role
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.token_hash = :token_hash AND k.revoke_time IS NULL
  AND (k.expire_time IS NULL OR k.expire_time > now()) AND u.status = 'active';

-- name: touch_api_key(id)!
-- At most one write a minute per key: last-used time without a durable write per request.
UPDATE api_keys SET last_used_time = now()
WHERE id = :id AND (last_used_time IS NULL OR last_used_time < now() - interval '1 minute');

-- name: get_profile(id)^
SELECT email, name, timezone, notification_preferences FROM users WHERE id = :id;

-- name: update_profile(id, name, timezone, notification_preferences)^
UPDATE users SET name = :name, timezone = :timezone, notification_preferences = :notification_preferences,
                 update_time = now()
WHERE id = :id
RETURNING email, name, timezone, notification_preferences;

-- name: list_live_sessions(user_id)
SELECT id, create_time, expire_time, client_ip, user_agent
FROM sessions WHERE user_id = :user_id AND revoke_time IS NULL AND expire_time > now()
ORDER BY id;

-- name: revoke_user_session(id, user_id)^
UPDATE sessions SET revoke_time = now()
WHERE id = :id AND user_id = :user_id AND revoke_time IS NULL
RETURNING id;

-- name: revoke_all_sessions(user_id)!
UPDATE sessions SET revoke_time = now() WHERE user_id = :user_id AND revoke_time IS NULL;

-- name: list_users(query, query_id, role, status, before_id, limit)
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps
FROM users
WHERE (:query = '' OR id = :query_id OR email ILIKE '%%' || :query || '%%' OR name ILIKE '%%' || :query || '%%')
  AND (:role = '' OR role = :role)
  AND (:status = '' OR status = :status)
  AND id < :before_id
ORDER BY id DESC
LIMIT :limit;

-- name: lock_user(id)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps
FROM users WHERE id = :id FOR UPDATE;

-- name: update_user(id, email, name, role, status, discount_bps, password_hash)^
UPDATE users
SET email = :email, name = :name, role = :role, status = :status, discount_bps = :discount_bps,
    password_hash = :password_hash, update_time = now()
WHERE id = :id
RETURNING id, email, name, role, status, timezone, email_verified_at, create_time, password_hash, discount_bps;

-- name: revoke_all_api_keys(user_id)!
UPDATE api_keys SET revoke_time = now() WHERE user_id = :user_id AND revoke_time IS NULL;
