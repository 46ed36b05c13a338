-- Issue 22: where a site is, for the map (optional). WGS-84 degrees as a local map or a phone gives them; both or
-- neither. Written by core (the registry) only.
ALTER TABLE site
    ADD COLUMN lat double precision,
    ADD COLUMN lon double precision,
    ADD CONSTRAINT site_coordinates CHECK (
        (lat IS NULL) = (lon IS NULL) AND (lat IS NULL OR (lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180))
    );
