-- Issue 22: a building's floor plans for the map, one image per floor (PNG or JPEG, checked by its bytes), uploaded
-- by an admin. `building` is the map's building key (a site's `building`, or a site on its own). Written by api only.
CREATE TABLE floor_plan (
    building      text NOT NULL,
    floor         integer NOT NULL CHECK (floor BETWEEN -10 AND 200),
    content_type  text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg')),
    data          bytea NOT NULL,
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    uploaded_by   text NOT NULL,
    PRIMARY KEY (building, floor)
);
