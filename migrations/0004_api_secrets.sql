-- Secrets the API instances share through the database, so that any instance behind a load balancer
-- accepts what another one issued, with nothing to configure.
--
-- cursor_hmac: signs pagination cursors, so that a forged or tampered cursor is rejected instead of
-- quietly returning a wrong page. gen_random_uuid() draws from PostgreSQL's strong random source;
-- two of them give 244 random bits.
CREATE TABLE IF NOT EXISTS api_secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL CHECK (length(value) >= 16)
);

INSERT INTO api_secrets (name, value)
VALUES ('cursor_hmac', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
ON CONFLICT (name) DO NOTHING;
