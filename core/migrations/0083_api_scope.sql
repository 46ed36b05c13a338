-- Issue 20: scope follows the registry, and messages carry signed links.

-- An admin token may be limited to some communities (a community's own admin); a token without rows here sees
-- every community (a street office). Written by the API (api/repo.py), like api_token itself.
CREATE TABLE api_token_community (
    token_id      bigint NOT NULL REFERENCES api_token (id) ON DELETE CASCADE,
    community_id  text NOT NULL REFERENCES community (id),
    PRIMARY KEY (token_id, community_id)
);
CREATE INDEX api_token_community_community ON api_token_community (community_id);

-- The alarm links in messages (core/actionlink.py) are signed, not stored. A recipient's links signed before
-- not_before are refused (a lost phone): one row per recipient, moved forward by each revocation.
CREATE TABLE alarm_link_revocation (
    recipient_kind  text NOT NULL CHECK (recipient_kind IN ('worker', 'merchant')),
    recipient_id    text NOT NULL,
    not_before      timestamptz NOT NULL,
    revoked_by      text,
    PRIMARY KEY (recipient_kind, recipient_id)
);

