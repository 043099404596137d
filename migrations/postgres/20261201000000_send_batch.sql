-- Group commit: a batch of messages stored in one round trip and one transaction.
--
-- 1. The batch's rooms are locked in id order, so concurrent batches on any number of nodes
--    queue on shared rooms instead of deadlocking; holding a room's lock is what makes its seqs
--    gapless. The senders' member rows are locked next, so a concurrent leave either commits
--    first (and the message is refused) or waits for this commit (and the message is stored
--    before the leave).
-- 2. One statement then classifies every message (room missing, sender not a member, clientId
--    already used before or earlier in the batch, replyTo not in the room), numbers the accepted
--    ones per room in batch order, inserts them, bumps each room's last_seq by its count and
--    moves the senders' read marks. It runs after the locks, in a fresh snapshot, so it sees
--    every send committed before them.
--
-- One row per input message, in input order: its outcome ('ok', 'duplicate', 'repeat',
-- 'not_found', 'forbidden', 'invalid_reply') and, for 'ok' and 'duplicate', the stored message.
CREATE FUNCTION confab_send_batch(
    p_ids uuid[], p_rooms uuid[], p_users text[], p_names text[], p_texts text[],
    p_client_ids text[], p_reply_to uuid[]
) RETURNS TABLE (
    o_ord bigint, o_outcome text, o_id uuid, o_room_id uuid, o_seq bigint, o_user_id text,
    o_name text, o_text text, o_client_id text, o_reply_to uuid, o_created_at timestamptz
) LANGUAGE plpgsql AS $fn$
DECLARE
    -- Read after the locks, so created_at does not decrease as seq grows.
    v_now timestamptz;
BEGIN
    PERFORM 1 FROM rooms r WHERE r.id = ANY (p_rooms) ORDER BY r.id FOR NO KEY UPDATE;
    PERFORM 1 FROM members m
     WHERE (m.room_id, m.user_id) IN (
           SELECT t.r, t.u COLLATE "C" FROM unnest(p_rooms, p_users) AS t(r, u))
     ORDER BY m.room_id, m.user_id
       FOR NO KEY UPDATE;
    v_now := clock_timestamp();
    RETURN QUERY
    WITH input AS (
        SELECT t.id, t.room_id, t.user_id COLLATE "C" AS user_id, t.name, t.text, t.client_id,
               t.reply_to, t.ord
          FROM unnest(p_ids, p_rooms, p_users, p_names, p_texts, p_client_ids, p_reply_to)
               WITH ORDINALITY AS t(id, room_id, user_id, name, text, client_id, reply_to, ord)
    ),
    checked AS (
        SELECT i.*, r.last_seq, GREATEST(v_now, r.last_message_at) AS at, d.id AS dup_id,
               CASE
                 WHEN r.id IS NULL THEN 'not_found'
                 WHEN NOT EXISTS (SELECT 1 FROM members m
                                   WHERE m.room_id = i.room_id AND m.user_id = i.user_id)
                   THEN 'forbidden'
                 WHEN d.id IS NOT NULL THEN 'duplicate'
                 WHEN i.client_id IS NOT NULL AND i.ord > min(i.ord) OVER (
                        PARTITION BY i.room_id, i.user_id, i.client_id) THEN 'repeat'
                 WHEN i.reply_to IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM messages x WHERE x.id = i.reply_to AND x.room_id = i.room_id)
                   THEN 'invalid_reply'
                 ELSE 'ok'
               END AS outcome
          FROM input i
          LEFT JOIN rooms r ON r.id = i.room_id
          LEFT JOIN messages d
            ON d.room_id = i.room_id AND d.user_id = i.user_id AND d.client_id = i.client_id
    ),
    numbered AS (
        SELECT c.*, c.last_seq + row_number() OVER (PARTITION BY c.room_id ORDER BY c.ord) AS seq
          FROM checked c
         WHERE c.outcome = 'ok'
    ),
    inserted AS (
        INSERT INTO messages (id, room_id, seq, user_id, name, text, client_id, reply_to,
                              created_at)
        SELECT n.id, n.room_id, n.seq, n.user_id, n.name, n.text, n.client_id, n.reply_to, n.at
          FROM numbered n
        RETURNING 1
    ),
    bumped AS (
        UPDATE rooms r SET last_seq = r.last_seq + b.n, last_message_at = b.at
          FROM (SELECT room_id, count(*) AS n, max(at) AS at FROM numbered GROUP BY room_id) b
         WHERE r.id = b.room_id
        RETURNING 1
    ),
    marked AS (
        UPDATE members m SET read_seq = GREATEST(m.read_seq, s.seq)
          FROM (SELECT room_id, user_id, max(seq) AS seq FROM numbered
                 GROUP BY room_id, user_id) s
         WHERE m.room_id = s.room_id AND m.user_id = s.user_id
        RETURNING 1
    )
    SELECT c.ord, c.outcome, COALESCE(n.id, d.id), c.room_id, COALESCE(n.seq, d.seq),
           c.user_id::text, COALESCE(n.name, d.name), COALESCE(n.text, d.text),
           COALESCE(n.client_id, d.client_id), COALESCE(n.reply_to, d.reply_to),
           COALESCE(n.at, d.created_at)
      FROM checked c
      LEFT JOIN numbered n ON n.ord = c.ord
      LEFT JOIN messages d ON d.id = c.dup_id
     ORDER BY c.ord;
END
$fn$;
