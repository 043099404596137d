//! The Socket.IO adapter every node runs: socketioxide-redis's adapter over our own driver.
//!
//! One adapter type for both modes keeps the handlers free of generics: a single node uses the
//! in-process driver (publishing goes nowhere, so every emit is local), a cluster uses the
//! reconnecting Redis driver.

use socketioxide::adapter::Emitter;
use socketioxide::operators::BroadcastOperators;

use super::ReconnectingDriver;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

/// The adapter of every confab node.
pub type Adapter = CustomRedisAdapter<Emitter, BackplaneDriver>;
/// The Socket.IO handle with confab's adapter.
pub type SocketIo = socketioxide::SocketIo<Adapter>;
/// A socket with confab's adapter.
pub type SocketRef = socketioxide::extract::SocketRef<Adapter>;

#[derive(Debug, thiserror::Error)]
#[error("backplane driver: {0}")]
pub struct DriverError(String);

/// Where emits for other nodes go.
#[derive(Clone)]
pub enum BackplaneDriver {
    /// A single node: there is no other node to tell.
    InProcess,
    /// A cluster: Redis pub/sub on a connection that reconnects and resubscribes.
    Redis(ReconnectingDriver),
}

impl BackplaneDriver {
    /// The adapter's constructor state, with channel names under `prefix`.
    pub fn into_adapter_state(self, prefix: &str) -> RedisAdapterCtr<Self> {
        let config = RedisAdapterConfig::new().with_prefix(prefix.to_owned());
        RedisAdapterCtr::new_with_driver(self, config)
    }

    /// Narrows a broadcast to this node's sockets when there is no other node: the adapter
    /// would otherwise encode every broadcast (msgpack) for a publish that goes nowhere.
    pub fn scope(&self, broadcast: BroadcastOperators<Adapter>) -> BroadcastOperators<Adapter> {
        match self {
            BackplaneDriver::InProcess => broadcast.local(),
            BackplaneDriver::Redis(_) => broadcast,
        }
    }

    /// Whether emits reach the other nodes right now.
    pub fn is_healthy(&self) -> bool {
        match self {
            BackplaneDriver::InProcess => true,
            BackplaneDriver::Redis(driver) => driver.is_healthy(),
        }
    }
}

fn never(e: std::convert::Infallible) -> DriverError {
    match e {}
}

impl Driver for BackplaneDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(()),
            BackplaneDriver::Redis(driver) => driver.publish(chan, val).await.map_err(never),
        }
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(MessageStream::new_empty()),
            BackplaneDriver::Redis(driver) => driver.subscribe(chan, size).await.map_err(never),
        }
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(()),
            BackplaneDriver::Redis(driver) => driver.unsubscribe(chan).await.map_err(never),
        }
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(1),
            BackplaneDriver::Redis(driver) => driver.num_serv(chan).await.map_err(never),
        }
    }
}
