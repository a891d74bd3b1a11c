-- name: insert_user(email, password_hash, name)^
INSERT INTO users (email, password_hash, name) VALUES (:email, :password_hash, :name)
RETURNING id, email, name, role, status, timezone, email_verified_at, create_time, password_hash;

-- name: get_user_by_email(email)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash
FROM users WHERE lower(email) = lower(:email);

-- name: get_user(id)^
SELECT id, email, name, role, status, timezone, email_verified_at, create_time, password_hash
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
