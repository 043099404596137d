//! The Socket.IO adapter every node runs: socketioxide-redis's adapter over our own driver.
//!
//! One adapter type for both modes keeps the handlers free of generics: a single node uses the
//! in-process driver (publishing goes nowhere, so every emit is local), a cluster uses the
//! reconnecting Redis driver.

use socketioxide::adapter::Emitter;
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
}

impl BackplaneDriver {
    /// The adapter's constructor state, with channel names under `prefix`.
    pub fn into_adapter_state(self, prefix: &str) -> RedisAdapterCtr<Self> {
        let config = RedisAdapterConfig::new().with_prefix(prefix.to_owned());
        RedisAdapterCtr::new_with_driver(self, config)
    }
}

impl Driver for BackplaneDriver {
    type Error = DriverError;

    async fn publish(&self, _chan: String, _val: Vec<u8>) -> Result<(), DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(()),
        }
    }

    async fn subscribe(
        &self,
        _chan: String,
        _size: usize,
    ) -> Result<MessageStream<ChanItem>, DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(MessageStream::new_empty()),
        }
    }

    async fn unsubscribe(&self, _chan: String) -> Result<(), DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(()),
        }
    }

    async fn num_serv(&self, _chan: &str) -> Result<u16, DriverError> {
        match self {
            BackplaneDriver::InProcess => Ok(1),
        }
    }
}
