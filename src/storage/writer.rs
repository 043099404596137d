//! The write path of messages: group commit behind a bounded queue.
//!
//! Senders put their message in a bounded queue and wait for its outcome. A task per node takes
//! whatever has arrived (up to `max_batch`) and stores it with one [`Store::send_batch`]: a lone
//! message is written at once, and under load a batch of N costs about what one message does.
//! Under load (a batch's first message arrived within `linger` of the previous batch's last),
//! the batch waits until `linger` after its first message for company: one commit then serves
//! several messages, which is most of what a message costs the database. At low load nothing
//! waits.
//! Up to `writers` batches are in flight at once (Postgres overlaps their round trips and
//! commits; the rooms they share serialize on their row locks); while all are busy, the queue
//! fills and the next batch takes everything that gathered.
//! Nothing waits without bound: a full queue refuses at once, and a message that waited longer
//! than `max_wait` for its turn is refused without being written (both
//! [`StorageError::Overloaded`]; the client may resend with the same `clientId`).
//!
//! After a commit, the stored messages go, in commit order, to the `committed` channel for
//! delivery, and only then are the senders answered; neither waits for any other node.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::{NewMessage, SendOutcome, StorageError, Store};
use crate::metrics::Metrics;
use crate::model::Message;

/// Bounds of the write path, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct WriteSettings {
    /// Messages that may wait for the writer; beyond, sends are refused at once.
    pub queue: usize,
    /// Most messages per transaction.
    pub max_batch: usize,
    /// Longest a message may wait for its turn before it is refused unwritten.
    pub max_wait: Duration,
    /// Batches in flight at once (1 for SQLite, which has one writer connection).
    pub writers: usize,
    /// Under load, how long after its first message a batch waits for more (zero: never).
    pub linger: Duration,
}

/// A message that was stored by this node, for delivery, with what its sender attached.
pub struct Committed<T> {
    pub message: Message,
    pub tag: T,
    /// The span of the send, so the delivery (and its backplane publish) joins its trace.
    pub span: tracing::Span,
}

/// Called once with a message's outcome, from the task that wrote its batch.
type Answer = Box<dyn FnOnce(SendOutcome) + Send>;

struct Pending<T> {
    message: NewMessage,
    tag: T,
    span: tracing::Span,
    enqueued: Instant,
    answer: Answer,
}

/// The sending side of the write path; cheap to clone.
pub struct WriteQueue<T> {
    queue: mpsc::Sender<Pending<T>>,
    metrics: Arc<Metrics>,
}

impl<T> Clone for WriteQueue<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T: Send + 'static> WriteQueue<T> {
    /// Starts the writer task; it ends when every `WriteQueue` clone is dropped and the queue
    /// is empty.
    pub fn start(
        store: Arc<dyn Store>,
        settings: WriteSettings,
        committed: mpsc::Sender<Committed<T>>,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, pending) = mpsc::channel(settings.queue.max(1));
        let writer = Arc::new(Writer {
            store,
            settings,
            committed,
            metrics: metrics.clone(),
        });
        (Self { queue, metrics }, tokio::spawn(writer.run(pending)))
    }

    /// Stores `message` (in the next batch) and returns its outcome once committed. `tag` goes
    /// with the message to the `committed` channel if it is newly stored.
    pub async fn send(&self, message: NewMessage, tag: T) -> SendOutcome {
        let (reply, outcome) = oneshot::channel();
        self.submit(message, tag, move |outcome| {
            let _ = reply.send(outcome);
        });
        outcome.await.unwrap_or(Err(StorageError::Overloaded))
    }

    /// Like [`send`](Self::send), but `answer` gets the outcome on the task that wrote the
    /// batch (right away when the queue is full), so the caller's task need not wait for it.
    /// `answer` should be quick: the batch's other answers wait behind it.
    pub fn submit(
        &self,
        message: NewMessage,
        tag: T,
        answer: impl FnOnce(SendOutcome) + Send + 'static,
    ) {
        let pending = Pending {
            message,
            tag,
            span: tracing::Span::current(),
            enqueued: Instant::now(),
            answer: Box::new(answer),
        };
        if let Err(refused) = self.queue.try_send(pending) {
            self.metrics.write_refused.inc();
            (refused.into_inner().answer)(Err(StorageError::Overloaded));
        }
    }
}

struct Writer<T> {
    store: Arc<dyn Store>,
    settings: WriteSettings,
    committed: mpsc::Sender<Committed<T>>,
    metrics: Arc<Metrics>,
}

impl<T: Send + 'static> Writer<T> {
    async fn run(self: Arc<Self>, mut pending: mpsc::Receiver<Pending<T>>) {
        let slots = Arc::new(Semaphore::new(self.settings.writers.max(1)));
        let mut in_flight = JoinSet::new();
        let max_batch = self.settings.max_batch.max(1);
        // When the newest message of the previous batch was enqueued.
        let mut last_arrival: Option<Instant> = None;
        loop {
            // A free slot first, then whatever has gathered: while every slot is busy the
            // queue fills, and the next batch takes it all.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::with_capacity(self.settings.max_batch);
            // Waits for the first message only: whatever else arrived meanwhile joins it.
            if pending.recv_many(&mut batch, max_batch).await == 0 {
                break;
            }
            self.linger(&mut pending, &mut batch, last_arrival).await;
            last_arrival = batch.last().map(|p| p.enqueued);
            let now = Instant::now();
            let (fresh, stale): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|p: &Pending<T>| now - p.enqueued <= self.settings.max_wait);
            for late in stale {
                self.metrics.write_refused.inc();
                (late.answer)(Err(StorageError::Overloaded));
            }
            while in_flight.try_join_next().is_some() {}
            if !fresh.is_empty() {
                let writer = self.clone();
                in_flight.spawn(async move {
                    writer.write(fresh).await;
                    drop(slot);
                });
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Under load, lets the batch gather until `linger` after its first message. One timer
    /// wake-up, then whatever arrived is taken at once (not a wake-up per message).
    async fn linger(
        &self,
        pending: &mut mpsc::Receiver<Pending<T>>,
        batch: &mut Vec<Pending<T>>,
        last_arrival: Option<Instant>,
    ) {
        let linger = self.settings.linger;
        let max_batch = self.settings.max_batch.max(1);
        let Some(first) = batch.first().map(|p| p.enqueued) else {
            return;
        };
        let busy = last_arrival.is_some_and(|last| first.saturating_duration_since(last) < linger);
        let deadline = first + linger;
        if !busy || batch.len() >= max_batch || deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline).await;
        while batch.len() < max_batch {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
    }

    async fn write(&self, batch: Vec<Pending<T>>) {
        let span = tracing::info_span!(
            parent: &batch[0].span,
            "write_batch",
            messages = batch.len()
        );
        for other in &batch[1..] {
            span.follows_from(&other.span);
        }
        self.metrics.write_batch_size.observe(batch.len() as f64);
        let messages: Vec<NewMessage> = batch.iter().map(|p| p.message.clone()).collect();
        let outcomes = match self.store.send_batch(&messages).instrument(span).await {
            Ok(outcomes) => outcomes,
            Err(e) if batch.len() > 1 && !e.is_unreachable() => {
                // Something in the batch broke the statement: one at a time, so that one bad
                // message cannot fail the others.
                tracing::warn!(error = %e, messages = batch.len(), "batch failed; retrying one by one");
                let mut outcomes = Vec::with_capacity(batch.len());
                for message in messages {
                    outcomes.push(self.store.send_message(message).await);
                }
                outcomes
            }
            Err(e) => {
                let unreachable = e.is_unreachable();
                tracing::error!(error = %e, messages = batch.len(), "messages not stored");
                (0..batch.len())
                    .map(|_| {
                        Err(if unreachable {
                            StorageError::Unreachable
                        } else {
                            StorageError::WriteFailed
                        })
                    })
                    .collect()
            }
        };
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            if let Ok(sent) = &outcome
                && !sent.duplicate
            {
                self.metrics.messages_stored.inc();
                let committed = Committed {
                    message: sent.message.clone(),
                    tag: pending.tag,
                    span: pending.span,
                };
                // Bounded: a slow delivery slows the writer, which fills the queue, which
                // refuses new sends; nothing grows without bound.
                if self.committed.send(committed).await.is_err() {
                    tracing::warn!("delivery has stopped; stored message not broadcast");
                }
            }
            (pending.answer)(outcome);
        }
    }
}
