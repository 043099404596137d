-- Membership in confab_send_batch is checked under the room's lock, not the member row's.
--
-- The function used to lock each sender's member row (FOR NO KEY UPDATE) so that a concurrent
-- leave either committed first (message refused) or waited for the batch (message stored before
-- the leave). That lock rewrote the member tuple's header and added a WAL record for every
-- message. Leaves are rare and sends are the hot path, so the exclusion moves to the leave:
-- removing a member now locks the room's row first (REMOVE_MEMBER in storage/postgres.rs), the
-- lock a batch already holds for the room's seqs. A batch and a leave of the same room therefore
-- serialize on the room; the membership read that follows the batch's room lock takes a fresh
-- snapshot (each statement of a plpgsql function does), so it sees a leave that committed while
-- the batch waited.
--
-- Same signature and result, so CREATE OR REPLACE. During a rolling deploy, a leave handled by a
-- node of the previous version does not take the room lock: until every node runs this version,
-- a send racing such a leave can be stored just after it.
CREATE OR REPLACE FUNCTION confab_send_batch(
    p_ids uuid[], p_rooms uuid[], p_users text[], p_names text[], p_texts text[],
    p_client_ids text[], p_reply_to uuid[], p_outbox boolean DEFAULT false
) RETURNS TABLE (
    o_ord bigint, o_outcome text, o_id uuid, o_room_id uuid, o_seq bigint, o_user_id text,
    o_name text, o_text text, o_client_id text, o_reply_to uuid, o_created_at timestamptz
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_rooms uuid[];
    v_seqs bigint[];
    v_ats timestamptz[];
    v_now timestamptz;
    v_at int;
    -- The accepted messages, as columns.
    a_ids uuid[] := '{}';
    a_rooms uuid[] := '{}';
    a_seqs bigint[] := '{}';
    a_users text[] := '{}';
    a_names text[] := '{}';
    a_texts text[] := '{}';
    a_cids text[] := '{}';
    a_replies uuid[] := '{}';
    -- "room user clientId" of accepted messages that have a clientId.
    a_keys text[] := '{}';
    v_key text;
    v_ms bigint;
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(last_seq ORDER BY id),
           array_agg(last_message_at ORDER BY id)
      INTO v_rooms, v_seqs, v_ats
      FROM (SELECT id, last_seq, last_message_at FROM rooms
             WHERE id = ANY (p_rooms) ORDER BY id FOR NO KEY UPDATE) locked;
    -- Read after the locks, so created_at does not decrease as seq grows.
    v_now := clock_timestamp();
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        o_ord := i;
        o_room_id := p_rooms[i];
        o_user_id := p_users[i];
        o_client_id := p_client_ids[i];
        o_id := NULL; o_seq := NULL; o_name := NULL; o_text := NULL; o_reply_to := NULL;
        o_created_at := NULL;
        v_at := array_position(v_rooms, p_rooms[i]);
        IF v_at IS NULL THEN
            o_outcome := 'not_found';
            RETURN NEXT;
            CONTINUE;
        END IF;
        PERFORM 1 FROM members WHERE room_id = p_rooms[i] AND user_id = p_users[i];
        IF NOT FOUND THEN
            o_outcome := 'forbidden';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF p_client_ids[i] IS NOT NULL THEN
            SELECT m.id, m.seq, m.name, m.text, m.reply_to, m.created_at
              INTO o_id, o_seq, o_name, o_text, o_reply_to, o_created_at
              FROM messages m
             WHERE m.room_id = p_rooms[i] AND m.user_id = p_users[i]
               AND m.client_id = p_client_ids[i];
            IF FOUND THEN
                o_outcome := 'duplicate';
                RETURN NEXT;
                CONTINUE;
            END IF;
            v_key := p_rooms[i]::text || ' ' || p_users[i] || ' ' || p_client_ids[i];
            IF v_key = ANY (a_keys) THEN
                o_outcome := 'repeat';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF p_reply_to[i] IS NOT NULL THEN
            PERFORM 1 FROM messages WHERE id = p_reply_to[i] AND room_id = p_rooms[i];
            IF NOT FOUND THEN
                o_outcome := 'invalid_reply';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        v_seqs[v_at] := v_seqs[v_at] + 1;
        v_ats[v_at] := GREATEST(v_now, v_ats[v_at]);
        IF p_client_ids[i] IS NOT NULL THEN
            a_keys := a_keys || v_key;
        END IF;
        a_ids := a_ids || p_ids[i];
        a_rooms := a_rooms || p_rooms[i];
        a_seqs := a_seqs || v_seqs[v_at];
        a_users := a_users || p_users[i];
        a_names := a_names || p_names[i];
        a_texts := a_texts || p_texts[i];
        a_cids := a_cids || p_client_ids[i];
        a_replies := a_replies || p_reply_to[i];
        o_outcome := 'ok';
        o_id := p_ids[i];
        o_seq := v_seqs[v_at];
        o_name := p_names[i];
        o_text := p_texts[i];
        o_reply_to := p_reply_to[i];
        o_created_at := v_ats[v_at];
        RETURN NEXT;
    END LOOP;
    IF array_length(a_ids, 1) IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO messages (id, room_id, seq, user_id, name, text, client_id, reply_to, created_at)
    SELECT t.id, t.room_id, t.seq, t.user_id, t.name, t.text, t.client_id, t.reply_to,
           v_ats[array_position(v_rooms, t.room_id)]
      FROM unnest(a_ids, a_rooms, a_seqs, a_users, a_names, a_texts, a_cids, a_replies)
           AS t(id, room_id, seq, user_id, name, text, client_id, reply_to);
    UPDATE rooms r SET last_seq = t.seq, last_message_at = t.at
      FROM unnest(v_rooms, v_seqs, v_ats) AS t(id, seq, at)
     WHERE r.id = t.id AND r.last_seq < t.seq;
    UPDATE members m SET read_seq = GREATEST(m.read_seq, t.seq)
      FROM (SELECT room_id, user_id, max(seq) AS seq
              FROM unnest(a_rooms, a_users, a_seqs) AS u(room_id, user_id, seq)
             GROUP BY room_id, user_id) t
     WHERE m.room_id = t.room_id AND m.user_id = t.user_id COLLATE "C";
    IF p_outbox THEN
        -- The event names its message, which the delivery reads: the row stays small and the
        -- message's JSON is made by the same code as every other copy of it. A message has one
        -- message.created, so the message's id (a UUIDv7, in batch order) is the event's id.
        v_ms := (extract(epoch FROM v_now) * 1000)::bigint;
        INSERT INTO webhook_outbox (id, type, message_id, created_at, due_at)
        SELECT t.id, 'message.created', t.id, v_ms, v_ms FROM unnest(a_ids) AS t(id);
    END IF;
END
$fn$;
