//! What an idle socket costs the node: 1,000 websocket clients connect and authenticate, and the
//! heap bytes the server keeps for them, counted by a wrapper around the system allocator, must
//! stay under a per-socket budget; once they close, the bytes must be given back. Not timed.
//!
//! The clients run on a thread of their own whose allocations are not counted, so the count is
//! the server's alone (the two sides share nothing but the loopback TCP connections).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use confab::auth::{Identity, TokenKeys};
use confab::config::Secret;
use confab::domain::{DisplayName, UserId};
use futures::{SinkExt, StreamExt};
use support::{Backend, TestApp};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Heap bytes the server may keep per idle authenticated websocket. Measured at 13,181 bytes in
/// the test (debug) build with the patched engineioxide, stable to a few bytes from run to run; what it is made of is in
/// `docs/footprint.md`. The margin is smaller than any of the costs removed so far (the 16 KB
/// hyper read buffer kept by the stored request, the 4 KB websocket read buffer, the ~1 KB map
/// of per-event handlers, the 5.4 KB unboxed packet queue), so none of them can come back unnoticed.
const BUDGET_PER_SOCKET: isize = 14 * 1024;
const SOCKETS: usize = 1_000;
/// Connected before the baseline, so that lazily built state is not charged to the sockets.
const WARM: usize = 50;
const SECRET: &str = "footprint-test-secret-0123456789";

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set on the clients' thread: what they allocate is not the server's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: isize) {
    if !UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Waits until the count stops moving (the server finishes the work a connect or close set
/// off, such as presence), within a deadline; returns the settled count.
async fn settled() -> isize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = live();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = live();
        if (now - last).abs() < 4 * 1024 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The clients' side, on its own thread and runtime.
struct Clients {
    /// Sockets that received `session`.
    ready: Arc<AtomicUsize>,
    /// Sockets whose connection has ended.
    closed: Arc<AtomicUsize>,
    close: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Clients {
    fn start(addr: String, first: usize, count: usize) -> Self {
        let ready = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        let (r, c, stop) = (ready.clone(), closed.clone(), close.clone());
        let thread = std::thread::spawn(move || {
            UNCOUNTED.with(|u| u.set(true));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime");
            runtime.block_on(async move {
                let keys = TokenKeys::new(&Secret::new(SECRET));
                let mut tasks = tokio::task::JoinSet::new();
                for n in first..first + count {
                    let user = UserId::parse(&format!("fp{n}")).expect("valid user id");
                    let identity = Identity {
                        name: DisplayName::from_user_id(&user),
                        user_id: user,
                    };
                    let token = keys.issue(&identity, 600).expect("token");
                    let (addr, r, c, stop) = (addr.clone(), r.clone(), c.clone(), stop.clone());
                    tasks.spawn(async move {
                        hold(&addr, &token, &r, &stop).await;
                        c.fetch_add(1, Ordering::SeqCst);
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
        });
        Self {
            ready,
            closed,
            close,
            thread,
        }
    }

    async fn wait_ready(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ready.load(Ordering::SeqCst) < count {
            assert!(
                self.closed.load(Ordering::SeqCst) == 0,
                "a client lost its connection during the handshake"
            );
            assert!(
                Instant::now() < deadline,
                "only {} of {count} sockets got their session",
                self.ready.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn close_all(self) {
        self.close.cancel();
        tokio::task::spawn_blocking(move || self.thread.join().expect("client thread"))
            .await
            .expect("join");
    }
}

/// One raw Engine.IO v4 websocket client: handshake, CONNECT with the token, wait for `session`,
/// then answer pings until told to close.
async fn hold(addr: &str, token: &str, ready: &AtomicUsize, close: &CancellationToken) {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket handshake");
    let mut connected = false;
    loop {
        let frame = tokio::select! {
            () = close.cancelled() => break,
            frame = ws.next() => frame,
        };
        let Some(Ok(Message::Text(text))) = frame else {
            return;
        };
        let text = text.as_str();
        if text.starts_with('0') && !connected {
            connected = true;
            let auth = format!(r#"40{{"token":"{token}"}}"#);
            ws.send(Message::text(auth)).await.expect("send CONNECT");
        } else if text.starts_with("42[\"session\"") {
            ready.fetch_add(1, Ordering::SeqCst);
        } else if text == "2" {
            let _ = ws.send(Message::text("3")).await;
        } else if text.starts_with("44") {
            panic!("connection refused: {text}");
        }
    }
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_costs_the_node_less_than_its_budget_and_gives_it_back_on_close() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.jwt_secret = Secret::new(SECRET);
        s.limits.max_connections = SOCKETS + WARM + 10;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let warm = Clients::start(addr.clone(), 0, WARM);
    warm.wait_ready(WARM).await;
    let baseline = settled().await;

    let clients = Clients::start(addr, WARM, SOCKETS);
    clients.wait_ready(SOCKETS).await;
    let connected = settled().await;
    let per_socket = (connected - baseline) / SOCKETS as isize;
    eprintln!("server heap per idle socket: {per_socket} bytes (budget {BUDGET_PER_SOCKET})");
    assert!(
        per_socket <= BUDGET_PER_SOCKET,
        "an idle socket holds {per_socket} heap bytes on the server, over the budget of \
         {BUDGET_PER_SOCKET}: something per-socket grew"
    );

    clients.close_all().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept = settled().await - baseline;
        // Maps keep the capacity they grew to: a few hundred bytes per socket at most.
        if kept < (connected - baseline) / 10 || Instant::now() > deadline {
            break kept;
        }
    };
    eprintln!("heap kept after the sockets closed: {kept} bytes");
    assert!(
        kept < (connected - baseline) / 10,
        "{kept} bytes of {} stayed after every socket closed: per-socket state leaks",
        connected - baseline
    );
    warm.close_all().await;
    app.stop().await;
}
