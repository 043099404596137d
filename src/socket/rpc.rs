//! `rpc:call`: a client's call forwarded to the backend (`hooks/rpc.rs`).

use serde_json::Value;

use super::handler::{Ctx, Outcome};
use super::payload;
use crate::config::Settings;
use crate::error::ChatError;
use crate::hooks::rpc::{RpcRequest, RpcUser};
use crate::limits::Rate;

/// The per-socket budget of `rpc:call`.
pub fn rate(settings: &Settings) -> Rate {
    match &settings.hooks.rpc {
        Some(rpc) => Rate::new(rpc.rate_per_sec, rpc.burst),
        // Never consulted: without a URL every call is `not_found`.
        None => Rate::new(1, 1),
    }
}

pub async fn call(ctx: Ctx, payload: Value) -> Outcome {
    let call = payload::rpc_call(payload)?;
    let Some(rpc) = &ctx.app.hooks.rpc else {
        return Err(ChatError::NotFound("rpc is not configured"));
    };
    if !ctx.session.rpc_rate.allow() {
        ctx.app.metrics.hooks.rpc("rate_limited");
        return Err(ChatError::RateLimited);
    }
    let user = ctx.user();
    let socket_id = ctx.socket.id.to_string();
    let request = RpcRequest {
        id: format!("rpc_{}", uuid::Uuid::now_v7().simple()),
        method: &call.method,
        data: &call.data,
        user: RpcUser {
            id: user.user_id.as_str(),
            name: user.name.as_str(),
        },
        node: &ctx.app.settings.node_id,
        socket_id: &socket_id,
    };
    rpc.call(&request).await
}
