-- confab schema for Postgres.
--
-- User ids are compared bytewise (COLLATE "C") so that "members ordered by user id" and the
-- direct-room key agree with Rust's string order and with the SQLite backend, whatever the
-- database's default collation is.

CREATE TABLE users (
    id          text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- NULL until the user connects: users named in a room before they ever connected exist too.
    seen_at     timestamptz
);

CREATE TABLE rooms (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    -- "minUser\nmaxUser" for direct rooms: the unique index is what makes concurrent
    -- room:direct calls for one pair converge on a single room.
    direct_key       text COLLATE "C" UNIQUE,
    created_by       text COLLATE "C" NOT NULL REFERENCES users (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- The seq of the newest message. Senders increment it under the row lock, which is what
    -- makes seqs gapless across nodes.
    last_seq         bigint NOT NULL DEFAULT 0,
    last_message_at  timestamptz,
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE members (
    room_id    uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id),
    -- Seqs up to and including read_seq count as read; unread = rooms.last_seq - read_seq.
    read_seq   bigint NOT NULL DEFAULT 0,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

-- rooms_of / room_ids_of look members up by user.
CREATE INDEX members_user_id_idx ON members (user_id);

CREATE TABLE messages (
    id          uuid PRIMARY KEY,
    room_id     uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    -- No foreign key to users: a message keeps its sender's id and name as they were.
    user_id     text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    text        text NOT NULL,
    client_id   text,
    -- Checked by the store to be a message of the same room.
    reply_to    uuid,
    created_at  timestamptz NOT NULL,
    -- Also serves history paging (room_id, seq range scans).
    UNIQUE (room_id, seq),
    -- Idempotent sends; NULL client ids never conflict.
    UNIQUE (room_id, user_id, client_id)
);
