//! The write path's own connections, kept outside sqlx's pool.
//!
//! The pool pings every connection given back to it (sqlx 0.8 `return_to_pool`: a `Sync` and
//! its answer, from a task spawned for it), which made every batch two round trips and woke
//! its backend twice. A batch here takes a connection and puts it back itself; a connection
//! whose batch failed in a way that may have broken it is dropped instead, and the next batch
//! opens a new one. At most as many connections as batches in flight (the writer's `writers`
//! slots) ever exist.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use super::super::StorageError;

/// Run once on each new connection, as a statement rather than startup `options`, which
/// connection poolers such as PgBouncer refuse by default.
///
/// `plan_cache_mode`: the batch statement is planned once per connection. Left to choose,
/// Postgres kept planning it afresh for every batch of one or two messages (two nodes at 1000
/// msg/s: 53 % of each writer backend's CPU in `GetCachedPlan`, 16 % executing).
///
/// `enable_seqscan`: a batch touches a few rows of each table by key. On a small table (a new
/// site's `rooms` and `members`) the planner would rather read the whole table, every version
/// of every row the batches keep updating included: index lookups cost Postgres less there
/// (`sioload fanout` 20 rooms x 10 members: ~0.21 -> ~0.19 cores), and are what it picks on a
/// large table anyway.
const SESSION_SETUP: &str = "SELECT set_config('plan_cache_mode', 'force_generic_plan', false), \
     set_config('enable_seqscan', 'off', false)";

pub(super) struct Writers {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    connect_timeout: Duration,
}

impl Writers {
    /// Opens `count` connections now, so the first batches find them ready.
    pub(super) async fn open(
        options: PgConnectOptions,
        count: usize,
        connect_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let writers = Self {
            options,
            idle: Mutex::new(Vec::with_capacity(count)),
            connect_timeout,
        };
        for _ in 0..count {
            let conn = writers.connect().await?;
            writers.give_back(conn);
        }
        Ok(writers)
    }

    /// An idle connection, or a new one (failing within the connect timeout: with Postgres
    /// down, a batch fails fast and its senders hear `unavailable`).
    pub(super) async fn take(&self) -> Result<PgConnection, StorageError> {
        let idle = self.lock().pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect().await,
        }
    }

    /// Returns the connection after a batch: kept unless `outcome` says it may be broken.
    pub(super) fn finish<T>(&self, conn: PgConnection, outcome: &Result<T, StorageError>) {
        match outcome {
            Err(e) if e.is_unreachable() => drop(conn),
            _ => self.give_back(conn),
        }
    }

    /// Closes the idle connections (those of batches still in flight close when dropped).
    pub(super) async fn close(&self) {
        let idle = std::mem::take(&mut *self.lock());
        for conn in idle {
            let _ = conn.close().await;
        }
    }

    fn give_back(&self, conn: PgConnection) {
        self.lock().push(conn);
    }

    async fn connect(&self) -> Result<PgConnection, StorageError> {
        match tokio::time::timeout(self.connect_timeout, open(&self.options)).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(StorageError::Unreachable),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn open(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut conn = options.connect().await?;
    conn.execute(SESSION_SETUP).await?;
    Ok(conn)
}
