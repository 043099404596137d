-- messages.room_id loses its foreign key; a room's deletion still takes its messages with it.
--
-- The key checked each inserted message against rooms with a per-row trigger (an index lookup and
-- a FOR KEY SHARE lock, through SPI): about a quarter of what a message costs Postgres in
-- confab_send_batch (pgbench, 20-message batches: 1,120 -> 800-930 us of CPU per batch). The
-- check is redundant there: the batch reads and locks each of its rooms before inserting, and a
-- room whose id it does not find gets no message ('not_found'). Nothing else inserts messages.
--
-- What the key also gave, ON DELETE CASCADE, is kept by a statement-level trigger: confab never
-- deletes rooms, but an operator may. A room locked by a batch in flight cannot be deleted until
-- the batch commits (DELETE needs the lock the batch holds), so the trigger then removes the
-- batch's messages too.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_room_id_fkey;

CREATE FUNCTION confab_delete_rooms_messages() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM messages m USING gone WHERE m.room_id = gone.id;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER rooms_delete_messages
    AFTER DELETE ON rooms
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION confab_delete_rooms_messages();
