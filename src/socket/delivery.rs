//! Delivery of stored messages: `message:new` to the room's Socket.IO room, in commit order, by
//! one task per node, off the ack path (a slow or absent Redis never delays an ack).
//!
//! The Redis adapter publishes to the other nodes before it delivers locally, so one emit can
//! take a Redis round trip (or a publish timeout while Redis is away). Emits are therefore
//! started in commit order and run [`IN_FLIGHT`] at a time: publishes queue on the multiplexed
//! connection in order, and local sockets keep receiving at full rate during an outage.

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backplane::{BackplaneDriver, SocketIo, SocketRef};
use crate::storage::writer::Committed;

/// Where a message came from: the socket that sent it (which `message:new` skips), or `None`
/// for a message that no socket sent.
pub type Origin = Option<SocketRef>;

/// Emits under way at once.
const IN_FLIGHT: usize = 64;

/// Runs until the writer stops (its channel closes).
pub async fn deliver(
    io: SocketIo,
    driver: BackplaneDriver,
    mut committed: mpsc::Receiver<Committed<Origin>>,
) {
    futures::stream::poll_fn(|cx| committed.poll_recv(cx))
        .map(|committed| emit(&io, &driver, committed))
        .buffered(IN_FLIGHT)
        .for_each(|()| async {})
        .await;
}

async fn emit(
    io: &SocketIo,
    driver: &BackplaneDriver,
    Committed { message, tag, span }: Committed<Origin>,
) {
    let room = message.room_id.socket_room();
    let broadcast = match &tag {
        Some(sender) => sender.to(room),
        None => io.to(room),
    };
    let sent = driver
        .scope(broadcast)
        .emit("message:new", &message)
        .instrument(span)
        .await;
    if let Err(e) = sent {
        tracing::warn!(room = %message.room_id, error = %e, "message:new not delivered");
    }
}
