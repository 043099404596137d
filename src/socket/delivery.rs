//! Delivery of stored messages: `message:new` to the room's Socket.IO room, in commit order, by
//! one task per node, off the ack path (a slow or absent Redis never delays an ack).

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backplane::{SocketIo, SocketRef};
use crate::storage::writer::Committed;

/// Where a message came from: the socket that sent it (which `message:new` skips), or `None`
/// for a message that no socket sent.
pub type Origin = Option<SocketRef>;

/// Runs until the writer stops (its channel closes).
pub async fn deliver(io: SocketIo, mut committed: mpsc::Receiver<Committed<Origin>>) {
    while let Some(Committed { message, tag, span }) = committed.recv().await {
        let room = message.room_id.socket_room();
        let sent = async {
            match &tag {
                Some(sender) => sender.to(room).emit("message:new", &message).await,
                None => io.to(room).emit("message:new", &message).await,
            }
        }
        .instrument(span)
        .await;
        if let Err(e) = sent {
            tracing::warn!(room = %message.room_id, error = %e, "message:new not delivered");
        }
    }
}
