//! Presence writes coalesced: one task sends whatever writes gathered while the previous batch
//! was in flight as one `presence_many` script, so a reconnect storm's thousands of connects
//! cost a handful of round trips (and of Lua runs on Redis) rather than one each. A write waits
//! at most for the batch ahead of it; alone, it goes at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Core;
use crate::backplane::BackplaneError;

/// Most writes in one script: bounds a script's run on Redis (which serves nothing else
/// meanwhile) and its argument list.
const MAX_BATCH: usize = 256;
/// Writes that may wait for the task; beyond, callers wait for room (backpressure, not loss).
const QUEUE: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub(super) enum Write {
    Connect,
    Disconnect,
}

struct Job {
    write: Write,
    user: String,
    socket: String,
    /// True when it was the user's first (connect) or last (disconnect) socket.
    reply: oneshot::Sender<Result<bool, BackplaneError>>,
}

/// The handle of the coalescing task; the task ends when this is dropped.
pub(super) struct PresenceBatcher {
    jobs: mpsc::Sender<Job>,
}

impl PresenceBatcher {
    /// Starts the task (needs a tokio runtime).
    pub(super) fn start(core: Arc<Core>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(core, rx));
        Self { jobs }
    }

    pub(super) async fn write(
        &self,
        write: Write,
        user: &str,
        socket: &str,
    ) -> Result<bool, BackplaneError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            write,
            user: user.to_owned(),
            socket: socket.to_owned(),
            reply,
        };
        let gone = || BackplaneError::Unexpected("presence writer stopped".to_owned());
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(core: Arc<Core>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        send(&core, &mut batch).await;
    }
}

/// Sends one batch and answers each of its writes.
async fn send(core: &Core, batch: &mut Vec<Job>) {
    let mut args: Vec<&str> = Vec::with_capacity(batch.len() * 3);
    for job in batch.iter() {
        args.push(match job.write {
            Write::Connect => "c",
            Write::Disconnect => "d",
        });
        args.push(&job.user);
        args.push(&job.socket);
    }
    let mut with_node = Vec::with_capacity(args.len() + 1);
    with_node.push(core.node_id.as_str());
    with_node.extend(args);
    let outcome = core.run::<Vec<i64>>("presence_many", &with_node).await;
    if outcome.is_err() {
        core.need_resync();
    }
    let outcome = outcome.and_then(|flags| {
        if flags.len() == batch.len() {
            Ok(flags)
        } else {
            Err(BackplaneError::Unexpected(format!(
                "{} presence results for {} writes",
                flags.len(),
                batch.len()
            )))
        }
    });
    for (n, job) in batch.drain(..).enumerate() {
        let result = match &outcome {
            Ok(flags) => Ok(flags[n] == 1),
            Err(e) => Err(e.clone()),
        };
        // The caller may have gone (its socket task ended): nothing to tell then.
        let _ = job.reply.send(result);
    }
}
