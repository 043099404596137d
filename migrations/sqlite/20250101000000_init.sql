-- confab schema for SQLite.
--
-- UUIDs are stored as lowercase hyphenated TEXT (so they sort like Postgres uuids) and
-- timestamps as INTEGER unix microseconds, the precision Postgres keeps, so both backends order
-- rooms and messages the same way.

CREATE TABLE users (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- NULL until the user connects: users named in a room before they ever connected exist too.
    seen_at     INTEGER
);

CREATE TABLE rooms (
    id               TEXT NOT NULL PRIMARY KEY,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    -- "minUser\nmaxUser" for direct rooms: one direct room per pair of users.
    direct_key       TEXT UNIQUE,
    created_by       TEXT NOT NULL REFERENCES users (id),
    created_at       INTEGER NOT NULL,
    -- The seq of the newest message; incremented in the same transaction that stores it.
    last_seq         INTEGER NOT NULL DEFAULT 0,
    last_message_at  INTEGER,
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE members (
    room_id    TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id),
    -- Seqs up to and including read_seq count as read; unread = rooms.last_seq - read_seq.
    read_seq   INTEGER NOT NULL DEFAULT 0,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

-- rooms_of / room_ids_of look members up by user.
CREATE INDEX members_user_id_idx ON members (user_id);

CREATE TABLE messages (
    id          TEXT NOT NULL PRIMARY KEY,
    room_id     TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    -- No foreign key to users: a message keeps its sender's id and name as they were.
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    text        TEXT NOT NULL,
    client_id   TEXT,
    -- Checked by the store to be a message of the same room.
    reply_to    TEXT,
    created_at  INTEGER NOT NULL,
    -- Also serves history paging (room_id, seq range scans).
    UNIQUE (room_id, seq),
    -- Idempotent sends; NULL client ids never conflict.
    UNIQUE (room_id, user_id, client_id)
);
