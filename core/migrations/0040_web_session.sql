-- Web page sessions: a person logs in with an API token; the browser keeps only a random session id in an
-- HttpOnly, SameSite=Strict cookie. Stored as an HMAC digest like tokens; revoking the token ends its sessions.
CREATE TABLE web_session (
    id           bigserial PRIMARY KEY,
    session_hash bytea NOT NULL UNIQUE,
    token_id     bigint NOT NULL REFERENCES api_token (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX web_session_token ON web_session (token_id);

-- The live stream (SSE) asks "which alarms changed since t" in the caller's scope.
CREATE INDEX alarm_updated ON alarm (updated_at);
