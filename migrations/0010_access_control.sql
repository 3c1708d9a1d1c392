-- Access control: API keys, daily export quotas shared by every instance, and the audit log of every
-- export and every admin action.

-- API keys for servers and dashboards (`prospect-api keys create|list|revoke`). Only a hash of each
-- key is kept: the key is shown once, when it is created. A revoked key stays listed.
CREATE TABLE api_keys (
    name         TEXT        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role         TEXT        NOT NULL,
    -- SHA-256 of the whole key: keys carry 256 random bits, so a fast hash is enough.
    key_hash     BYTEA       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- CSV rows each credential exported per day (UTC), reserved before an export's first byte.
CREATE TABLE export_quota (
    credential TEXT   NOT NULL,
    day        DATE   NOT NULL,
    rows       BIGINT NOT NULL CHECK (rows >= 0),
    PRIMARY KEY (credential, day)
);

-- Reserves `p_rows` of `p_credential`'s export allowance for today: true when they fit under
-- `p_limit` (the rows then count as exported), false when they do not (nothing is reserved). One
-- statement: concurrent reservations of one credential wait for each other on its row, so two
-- exports that only one fits cannot both pass.
CREATE FUNCTION reserve_export_rows(p_credential TEXT, p_rows BIGINT, p_limit BIGINT) RETURNS BOOLEAN
LANGUAGE sql AS $$
    WITH reserved AS (
        INSERT INTO export_quota AS q (credential, day, rows)
        SELECT p_credential, (now() AT TIME ZONE 'UTC')::date, p_rows WHERE p_rows <= p_limit
        ON CONFLICT (credential, day) DO UPDATE SET rows = q.rows + EXCLUDED.rows
        WHERE q.rows + EXCLUDED.rows <= p_limit
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM reserved)
$$;

-- Every export and every admin action: who (credential and role), what (endpoint, normalised
-- filters and fields), how much (rows and bytes sent), from where, and how it ended. An export
-- writes a row before its first byte ('started': the export is refused if it cannot) and one when
-- it ends ('completed' or 'failed'). Append-only: rows are never changed, and only
-- prune_audit_log() deletes them (AUDIT_LOG_RETENTION).
CREATE TABLE audit_log (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    request_id TEXT,
    credential TEXT        NOT NULL,
    role       TEXT        NOT NULL,
    action     TEXT        NOT NULL CHECK (action IN ('export', 'admin')),
    endpoint   TEXT        NOT NULL,
    filters    JSONB,
    fields     TEXT,
    rows       BIGINT,
    bytes      BIGINT,
    client     TEXT,
    outcome    TEXT        NOT NULL CHECK (outcome IN ('started', 'completed', 'failed', 'refused', 'ok', 'error')),
    detail     TEXT
);
CREATE INDEX audit_log_recent ON audit_log (at DESC);
CREATE INDEX audit_log_by_credential ON audit_log (credential, at DESC);

CREATE FUNCTION refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('prospect_api.pruning_audit_log', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_log_never_truncated BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();

-- Deletes audit rows older than p_keep; the number deleted.
CREATE FUNCTION prune_audit_log(p_keep INTERVAL) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    deleted BIGINT;
BEGIN
    PERFORM set_config('prospect_api.pruning_audit_log', 'on', true);
    DELETE FROM audit_log WHERE at < clock_timestamp() - p_keep;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('prospect_api.pruning_audit_log', 'off', true);
    RETURN deleted;
END
$$;
