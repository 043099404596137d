-- The write path stores a whole batch with one statement (STORE_WHOLE in
-- src/storage/postgres/send.rs) and falls back to confab_send_batch when some message of it
-- cannot be stored. The statement raises this to undo what it did: a batch is stored whole
-- or not at all, so no seq is ever used by a message that was not stored.
CREATE FUNCTION confab_batch_incomplete(stored bigint, expected int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF stored <> expected THEN
        RAISE EXCEPTION 'batch not stored whole (% of % messages)', stored, expected
            USING ERRCODE = 'CF001';
    END IF;
    RETURN true;
END
$$;

-- Only messages with a clientId need the idempotency index: most messages have none, and each
-- index entry is a btree insert and WAL record per message. Lookups by clientId (the batch
-- function's duplicate check) compare client_id with '=', which implies the predicate.
CREATE UNIQUE INDEX messages_client_id_key ON messages (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;
ALTER TABLE messages DROP CONSTRAINT messages_room_id_user_id_client_id_key;
