//! Presence: a user is online while they have at least one socket anywhere.

use crate::backplane::SocketIo;
use crate::backplane::SocketRef;
use serde_json::{Value, json};
use socketioxide_core::adapter::Room;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::handler::{Ctx, Outcome};
use super::payload;
use crate::auth::Identity;
use crate::backplane::{Liveness, keep_heartbeat};
use crate::domain::UserId;
use crate::state::AppState;

/// `presence:get`: any user may ask about any user.
pub async fn get(ctx: Ctx, payload: Value) -> Outcome {
    let users = payload::presence(payload)?;
    let online = ctx.app.backplane.presence.online(&users).await?;
    let presence: serde_json::Map<String, Value> = users
        .iter()
        .zip(online)
        .map(|(user, on)| {
            (
                user.to_string(),
                json!(if on { "online" } else { "offline" }),
            )
        })
        .collect();
    Ok(json!({ "ok": true, "presence": presence }))
}

/// Records a new socket in the cluster's presence before its `session` is sent, so that once a
/// client has its session every node answers `presence:get` with "online" for it. True when it is
/// the user's first socket anywhere: the caller then announces it (after `session`, which must be
/// the socket's first event).
pub async fn socket_connected(app: &AppState, socket: &SocketRef, user: &Identity) -> bool {
    let presence = &app.backplane.presence;
    match presence
        .connected(&user.user_id, &socket.id.to_string())
        .await
    {
        Ok(first) => first,
        // Registered by the resync once the backplane is back.
        Err(e) if e.is_outage() => {
            tracing::debug!(user = %user.user_id, error = %e, "presence not recorded yet");
            false
        }
        Err(e) => {
            tracing::error!(user = %user.user_id, error = %e, "presence not recorded");
            false
        }
    }
}

/// Tells the user's rooms (and the user's own sockets) that the user came online.
pub async fn announce_online(app: &AppState, io: &SocketIo, socket: &SocketRef, user: &Identity) {
    announce_from(app, io, socket, &user.user_id, "online").await;
}

pub async fn socket_disconnected(
    app: &AppState,
    io: &SocketIo,
    socket: &SocketRef,
    user: &Identity,
) {
    let presence = &app.backplane.presence;
    let last = match presence
        .disconnected(&user.user_id, &socket.id.to_string())
        .await
    {
        Ok(last) => last,
        Err(e) => {
            tracing::warn!(user = %user.user_id, error = %e, "presence not updated until the resync");
            return;
        }
    };
    if !last {
        return;
    }
    super::typing::stop_everywhere(app, io, &user.user_id).await;
    announce_from(app, io, socket, &user.user_id, "offline").await;
}

/// Announces to the rooms `socket` is in: its user room and every chat room of the user, the
/// audience of the update, known without asking storage. A socket that is no longer in its user
/// room (already removed from its rooms) falls back to storage; an empty list of rooms would
/// mean everyone.
async fn announce_from(
    app: &AppState,
    io: &SocketIo,
    socket: &SocketRef,
    user: &UserId,
    status: &str,
) {
    let rooms = socket.rooms();
    let own = user.socket_room();
    if rooms.iter().any(|room| room.as_ref() == own.as_str()) {
        // The webhook too comes from here, once: this node saw the cluster-wide change.
        app.hooks.presence(user, status == "online");
        announce_to(io, user, status, rooms).await;
    } else {
        announce(app, io, user, status).await;
    }
}

/// Background task of every node: keeps this node's heartbeat going and, separately (so that
/// reaping and announcing never delay a heartbeat), sweeps for dead nodes, announces the departure
/// of their users, and re-registers local sockets after a backplane outage.
pub async fn keep_cluster_presence(app: AppState, io: SocketIo, stop: CancellationToken) {
    let liveness = Liveness::for_timeout(app.settings.node_timeout);
    let membership = app.backplane.membership.clone();
    let beats = keep_heartbeat(membership.as_ref(), liveness, &stop);
    let sweeps = async {
        let mut tick = tokio::time::interval(liveness.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => sweep(&app, &io).await,
            }
        }
    };
    tokio::join!(beats, sweeps);
}

async fn sweep(app: &AppState, io: &SocketIo) {
    let membership = &app.backplane.membership;
    match membership.sweep().await {
        Ok(departures) => {
            app.metrics.presence_sweeps.inc();
            app.metrics.users_reaped.inc_by(departures.len() as u64);
            announce_departures(app, io, departures).await;
        }
        // The heartbeat reports outages; a failed sweep is retried by the next one.
        Err(e) => tracing::debug!(error = %e, "backplane sweep failed"),
    }
    if membership.take_resync_needed() {
        resync_local_sockets(app, io).await;
    }
}

/// Announces users left without sockets by a dead node (or this node leaving).
pub async fn announce_departures(
    app: &AppState,
    io: &SocketIo,
    departures: Vec<crate::backplane::Departure>,
) {
    for departure in departures {
        tracing::info!(user = %departure.user_id, "user reaped from a departed node");
        for room in departure.typing_rooms {
            super::typing::announce_stop(io, room, &departure.user_id).await;
        }
        announce(app, io, &departure.user_id, "offline").await;
    }
}

/// After an outage (or after being presumed dead), make this node's presence entries match its
/// live sockets again: register the sockets Redis does not know, forget the ones that are gone,
/// and announce whoever came online or went offline meanwhile.
async fn resync_local_sockets(app: &AppState, io: &SocketIo) {
    let registered = match app.backplane.membership.node_sockets().await {
        Ok(registered) => registered,
        Err(e) => {
            tracing::warn!(error = %e, "presence resync postponed");
            app.backplane.membership.request_resync();
            return;
        }
    };
    let live: HashMap<String, (SocketRef, Arc<super::Session>)> = io
        .local()
        .sockets()
        .into_iter()
        .filter_map(|s| {
            let session = s.extensions.get::<Arc<super::Session>>()?;
            Some((s.id.to_string(), (s, session)))
        })
        .collect();
    tracing::info!(
        live = live.len(),
        registered = registered.len(),
        "resynchronising presence"
    );
    let mut known = HashSet::with_capacity(registered.len());
    for (user, socket_id) in &registered {
        if live.contains_key(socket_id) {
            known.insert(socket_id.as_str());
            continue;
        }
        match app.backplane.presence.disconnected(user, socket_id).await {
            Ok(true) => {
                super::typing::stop_everywhere(app, io, user).await;
                announce(app, io, user, "offline").await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence resync incomplete"),
        }
    }
    for (id, (socket, session)) in &live {
        if !known.contains(id.as_str()) && socket_connected(app, socket, &session.identity).await {
            announce_online(app, io, socket, &session.identity).await;
        }
    }
}

/// Sends `presence:update` to every room of the user and to the user's own sockets, for a user
/// with no local socket to learn the rooms from (reaped, or gone during an outage).
async fn announce(app: &AppState, io: &SocketIo, user: &UserId, status: &str) {
    app.hooks.presence(user, status == "online");
    let rooms = match app.store.room_ids_of(user).await {
        Ok(rooms) => rooms,
        Err(e) => {
            tracing::error!(user = %user, error = %e, "presence not announced: storage");
            return;
        }
    };
    let mut targets: Vec<Room> = rooms.iter().map(|r| Room::from(r.socket_room())).collect();
    targets.push(Room::from(user.socket_room()));
    announce_to(io, user, status, targets).await;
}

/// Sends `presence:update` to `targets`: the user's own room and chat rooms.
async fn announce_to(io: &SocketIo, user: &UserId, status: &str, targets: Vec<Room>) {
    let update = json!({ "userId": user, "status": status });
    if let Err(e) = io.to(targets).emit("presence:update", &update).await {
        tracing::warn!(user = %user, error = %e, "presence:update not delivered");
    }
}
