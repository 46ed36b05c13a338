-- API tokens, stored as HMAC-SHA256 digests only.
CREATE TABLE api_token (
    id           bigserial PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('admin', 'worker', 'merchant')),
    worker_id    text REFERENCES worker (id),
    merchant_id  text REFERENCES merchant (id),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK (role <> 'worker' OR worker_id IS NOT NULL),
    CHECK (role <> 'merchant' OR merchant_id IS NOT NULL)
);
