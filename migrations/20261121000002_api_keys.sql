-- API keys managed with `analytics-api keys create|list|revoke`. Only the
-- SHA-256 of a key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id            bigserial PRIMARY KEY,
    key_hash      text NOT NULL UNIQUE,
    -- First characters of the key, so operators can tell keys apart.
    key_prefix    text NOT NULL,
    tenant        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);
