-- Addresses are stored in Unicode NFC (canonical_email in server/common/text.py): "é" typed as one
-- character or as "e" and a combining accent is one mailbox, so one account. Addresses stored in
-- another form before are rewritten, except where two accounts hold two spellings of one address:
-- which of them keeps it is staff's call (docs/DEPLOYMENT.md gives the query that lists them).
-- normalize() needs a UTF8 database; a database in another encoding holds no such address.
DO $$
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        UPDATE users u SET email = normalize(u.email, NFC)
        WHERE u.email IS NOT NFC NORMALIZED
          AND NOT EXISTS (
              SELECT 1 FROM users other
              WHERE other.id <> u.id AND lower(normalize(other.email, NFC)) = lower(normalize(u.email, NFC))
          );
        UPDATE users SET pending_email = normalize(pending_email, NFC) WHERE pending_email IS NOT NFC NORMALIZED;
        UPDATE account_tokens SET email = normalize(email, NFC) WHERE email IS NOT NFC NORMALIZED;
    END IF;
END
$$;
