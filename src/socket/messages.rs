//! Message events: send, history, read.

use serde_json::{Value, json};

use super::handler::{Ctx, Outcome, Responder};
use super::payload;
use super::rooms::require_joined;
use crate::error::ChatError;
use crate::metrics::EventNameLabel;
use crate::storage::{HistoryQuery, NewMessage};

/// Checks and queues the message; the write path answers through `responder` once the batch
/// holding it is committed (or refused), from the task that wrote it: the handler's task is not
/// woken again for the ack.
pub async fn send(ctx: Ctx, payload: Value, responder: Responder) {
    let message = match prepare(&ctx, payload).await {
        Ok(message) => message,
        Err(error) => return responder.finish(Err(error)),
    };
    // `message:new` goes out from the delivery task (socket/delivery.rs).
    let origin = Some(ctx.socket.clone());
    ctx.app.writes.submit(message, origin, move |outcome| {
        let outcome = outcome.map_err(ChatError::from).map(|sent| {
            let (room, seq) = (sent.message.room_id, sent.message.seq);
            tracing::debug!(%room, seq, duplicate = sent.duplicate, "message stored");
            json!({ "ok": true, "message": sent.message })
        });
        responder.finish(outcome);
    });
}

/// The message to store, once the payload, the rate limit and membership allow it.
async fn prepare(ctx: &Ctx, payload: Value) -> Result<NewMessage, ChatError> {
    let parsed = payload::send(payload, ctx.app.settings.limits.max_message_chars)?;
    if !ctx.session.send_rate.allow() {
        ctx.app
            .metrics
            .rate_limited
            .get_or_create(&EventNameLabel {
                event: "message:send".into(),
            })
            .inc();
        return Err(ChatError::RateLimited);
    }
    // The fast check; storage checks membership again inside the write.
    require_joined(ctx, parsed.room).await?;
    let user = ctx.user();
    Ok(NewMessage {
        room: parsed.room,
        user: user.user_id.clone(),
        name: user.name.clone(),
        text: parsed.text,
        client_id: parsed.client_id,
        reply_to: parsed.reply_to,
    })
}

pub async fn history(ctx: Ctx, payload: Value) -> Outcome {
    let parsed = payload::history(payload)?;
    require_joined(&ctx, parsed.room).await?;
    let query = HistoryQuery {
        before_seq: parsed.before_seq,
        after_seq: parsed.after_seq,
        limit: parsed.limit,
    };
    let page = ctx.app.store.history(parsed.room, query).await?;
    Ok(json!({ "ok": true, "messages": page.messages, "hasMore": page.has_more }))
}

pub async fn read(ctx: Ctx, payload: Value) -> Outcome {
    let (room, seq) = payload::read(payload)?;
    require_joined(&ctx, room).await?;
    let user = &ctx.user().user_id;
    let mark = ctx.app.store.mark_read(room, user, seq).await?;
    if mark.moved {
        let update = json!({ "roomId": room, "seq": mark.seq });
        if let Err(e) = ctx
            .socket
            .to(user.socket_room())
            .emit("room:read", &update)
            .await
        {
            tracing::warn!(room = %room, error = %e, "room:read not delivered");
        }
    }
    Ok(json!({ "ok": true, "seq": mark.seq }))
}
