-- Issue 23: every API token expires. Tokens made before without a lifetime get 90 days from this upgrade (time to
-- hand out new ones); new tokens always get one (api.auth.DEFAULT_TOKEN_TTL when none is asked for).
UPDATE api_token SET expires_at = now() + interval '90 days' WHERE expires_at IS NULL AND revoked_at IS NULL;
