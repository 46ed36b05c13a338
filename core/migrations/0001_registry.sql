-- Registry: community -> grid -> micro_grid; workers cover micro-grids; merchants own sites; devices sit in sites.
CREATE TABLE community (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai',
    address     text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grid (
    id            text PRIMARY KEY,
    community_id  text NOT NULL REFERENCES community (id),
    name          text NOT NULL
);

CREATE TABLE micro_grid (
    id       text PRIMARY KEY,
    grid_id  text NOT NULL REFERENCES grid (id),
    name     text NOT NULL
);

CREATE TABLE worker (
    id            text PRIMARY KEY,
    community_id  text NOT NULL REFERENCES community (id),
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('micro_grid_worker', 'grid_leader', 'community_duty', 'fire_station')),
    phone         text NOT NULL DEFAULT '',
    locale        text NOT NULL DEFAULT 'zh-CN',
    notify_urls   text[] NOT NULL DEFAULT '{}',
    roster        text,
    on_call       boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true
);

CREATE TABLE worker_micro_grid (
    worker_id      text NOT NULL REFERENCES worker (id) ON DELETE CASCADE,
    micro_grid_id  text NOT NULL REFERENCES micro_grid (id),
    PRIMARY KEY (worker_id, micro_grid_id)
);
CREATE INDEX worker_micro_grid_mg ON worker_micro_grid (micro_grid_id);

CREATE TABLE worker_grid (
    worker_id  text NOT NULL REFERENCES worker (id) ON DELETE CASCADE,
    grid_id    text NOT NULL REFERENCES grid (id),
    PRIMARY KEY (worker_id, grid_id)
);

CREATE TABLE merchant (
    id            text PRIMARY KEY,
    community_id  text NOT NULL REFERENCES community (id),
    name          text NOT NULL,
    contact       text NOT NULL DEFAULT '',
    phone         text NOT NULL DEFAULT '',
    notify_urls   text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE site (
    id             text PRIMARY KEY,
    micro_grid_id  text NOT NULL REFERENCES micro_grid (id),
    merchant_id    text REFERENCES merchant (id),
    kind           text NOT NULL CHECK (kind IN ('building', 'shop', 'storage', 'charging_shed')),
    name           text NOT NULL DEFAULT '',
    address        text NOT NULL DEFAULT '',
    floor          integer,
    flags          text[] NOT NULL DEFAULT '{}',
    lpg            boolean NOT NULL DEFAULT false
);
CREATE INDEX site_micro_grid ON site (micro_grid_id);
CREATE INDEX site_merchant ON site (merchant_id);

CREATE TABLE device (
    id                 text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('gas_detector', 'co_alarm', 'smoke_detector', 'charging_port',
                                                     'smart_socket', 'gas_valve', 'gateway')),
    site_id            text NOT NULL REFERENCES site (id),
    location           text NOT NULL CHECK (location IN ('kitchen', 'room', 'corridor', 'stairwell', 'storage',
                                                         'charging_shed', 'outdoor')),
    adapter            text NOT NULL DEFAULT 'native' CHECK (adapter IN ('native', 'zigbee2mqtt', 'shelly', 'tasmota')),
    foreign_id         text,
    battery            boolean NOT NULL DEFAULT false,
    report_interval_s  integer NOT NULL DEFAULT 300 CHECK (report_interval_s > 0),
    gateway_id         text REFERENCES device (id) DEFERRABLE INITIALLY DEFERRED,
    model              text NOT NULL DEFAULT '',
    active             boolean NOT NULL DEFAULT true,
    installed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_site ON device (site_id);
CREATE UNIQUE INDEX device_foreign ON device (adapter, foreign_id) WHERE foreign_id IS NOT NULL;
