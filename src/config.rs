//! Configuration: one typed structure read from flags and `CONFAB_*` environment variables,
//! validated before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::http::cors::{AllowedOrigins, CorsPolicy};

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for development.
    Pretty,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Every setting, as flags and environment variables of the same name.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "confab",
    version,
    about = "A realtime chat server speaking Socket.IO v4"
)]
pub struct Config {
    /// Address and port to serve HTTP and Socket.IO on.
    #[arg(long, env = "CONFAB_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Pending TCP connections the kernel may queue before confab accepts them: a reconnect
    /// storm lands all at once, and a short queue drops SYNs that then wait a second to retry.
    /// Capped by the kernel's `net.core.somaxconn`.
    #[arg(long, env = "CONFAB_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// `postgres://…` or `sqlite://…`.
    #[arg(
        long,
        env = "CONFAB_DATABASE_URL",
        default_value = "sqlite://confab-data/confab.db"
    )]
    pub database_url: String,

    /// Database pool size (Postgres; SQLite uses one writer and a few readers).
    #[arg(long, env = "CONFAB_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Longest wait for a free database connection, in milliseconds: how long a burst (a
    /// reconnect storm's reads of users' rooms) may queue on the pool. A database that refuses
    /// connections fails requests at once, whatever this is.
    #[arg(long, env = "CONFAB_DATABASE_TIMEOUT_MS", default_value_t = 10000)]
    pub database_timeout_ms: u64,

    /// Messages that may wait for the writer on this node; beyond, sends get `unavailable` at once.
    #[arg(long, env = "CONFAB_WRITE_QUEUE", default_value_t = 4096)]
    pub write_queue: usize,

    /// Most messages stored by one transaction (group commit).
    #[arg(long, env = "CONFAB_WRITE_BATCH", default_value_t = 256)]
    pub write_batch: usize,

    /// Longest a message may wait for the writer, in milliseconds, before it is refused with
    /// `unavailable` unwritten (so an overloaded node answers fast rather than late).
    #[arg(long, env = "CONFAB_WRITE_MAX_WAIT_MS", default_value_t = 500)]
    pub write_max_wait_ms: u64,

    /// Message batches written at once (Postgres; SQLite writes one at a time), 1-64; each has a
    /// Postgres connection of its own, besides the pool.
    #[arg(long, env = "CONFAB_WRITE_CONCURRENCY", default_value_t = 1)]
    pub write_concurrency: usize,

    /// Under load, how long a batch waits for company after its first message, in microseconds
    /// (0: never). Only when messages are arriving closer together than this: a lone message is
    /// written at once. Bigger batches mean fewer commits, so less database CPU per message.
    #[arg(long, env = "CONFAB_WRITE_LINGER_US", default_value_t = 2000)]
    pub write_linger_us: u64,

    /// Redis for the cluster backplane; unset means a single node with an in-process backplane.
    #[arg(long, env = "CONFAB_REDIS_URL")]
    pub redis_url: Option<Secret>,

    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    #[arg(long, env = "CONFAB_REDIS_PREFIX", default_value = "confab")]
    pub redis_prefix: String,

    /// This node's name in the cluster; a random one when unset.
    #[arg(long, env = "CONFAB_NODE_ID")]
    pub node_id: Option<String>,

    /// HS256 secret for client tokens; unset means a random secret and dev tokens on, which is
    /// only allowed on a loopback address unless `CONFAB_DEV_TOKENS=on` asks for it.
    #[arg(long, env = "CONFAB_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,

    /// Serve `POST /api/dev/token` (`on`/`off`, also `true`/`false`); defaults to on only when no
    /// secret is set.
    #[arg(long, env = "CONFAB_DEV_TOKENS", value_parser = clap::builder::BoolishValueParser::new())]
    pub dev_tokens: Option<bool>,

    /// Origins (`scheme://host[:port]`, comma-separated) whose pages may call the HTTP API and
    /// Socket.IO's polling transport with credentials; unset means the node's own origin, plus
    /// loopback origins while dev tokens are on.
    #[arg(long, env = "CONFAB_CORS_ORIGINS")]
    pub cors_origins: Option<AllowedOrigins>,

    /// Message text limit in Unicode scalar values, after trimming.
    #[arg(long, env = "CONFAB_MAX_MESSAGE_CHARS", default_value_t = 1000)]
    pub max_message_chars: usize,

    /// Socket.IO sockets per node before `server at capacity`.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Sockets per client address; 0 means no limit.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Connections reading their rooms from storage at once during admission; the others wait
    /// their turn for at most `CONFAB_ADMISSION_WAIT_MS`, then are shed with `server busy`: a
    /// reconnect storm against slow storage is answered in bounded time instead of queueing
    /// sockets until the clients' own timeouts fire.
    #[arg(long, env = "CONFAB_MAX_PENDING_ADMISSIONS", default_value_t = 512)]
    pub max_pending_admissions: usize,

    /// How long a connection waits for its turn to read its rooms before `server busy`.
    #[arg(long, env = "CONFAB_ADMISSION_WAIT_MS", default_value_t = 5000)]
    pub admission_wait_ms: u64,

    /// Largest Socket.IO packet accepted, in bytes.
    #[arg(long, env = "CONFAB_MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    pub max_payload_bytes: u64,

    /// Initial websocket read buffer per socket, in bytes: every idle socket holds one, and chat
    /// frames are small (a larger frame grows that socket's buffer as needed).
    #[arg(long, env = "CONFAB_WS_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub ws_read_buffer_bytes: usize,

    /// Sustained `message:send` rate per socket.
    #[arg(long, env = "CONFAB_SEND_RATE_PER_SEC", default_value_t = 10)]
    pub send_rate_per_sec: u32,

    /// Burst of `message:send` allowed above the sustained rate.
    #[arg(long, env = "CONFAB_SEND_BURST", default_value_t = 20)]
    pub send_burst: u32,

    /// Sustained `typing:start`/`typing:stop` rate per socket. Clients send `typing:start` on
    /// every keystroke (the 2 s re-broadcast throttle keeps rooms quiet), so this only stops floods.
    #[arg(long, env = "CONFAB_TYPING_RATE_PER_SEC", default_value_t = 10)]
    pub typing_rate_per_sec: u32,

    /// Burst of typing events allowed above the sustained rate.
    #[arg(long, env = "CONFAB_TYPING_BURST", default_value_t = 20)]
    pub typing_burst: u32,

    /// Seconds a drain may take on SIGTERM before the process exits anyway.
    #[arg(long, env = "CONFAB_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Seconds within which a crashed node's users are announced offline (cluster only): its
    /// heartbeats (every 500 ms) must stop for this minus one second (the sweep period and time
    /// to announce) before it counts as dead.
    #[arg(long, env = "CONFAB_NODE_TIMEOUT", default_value_t = 5)]
    pub node_timeout: u64,

    /// Log output format.
    #[arg(long, env = "CONFAB_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Bearer key of the HTTP API (`/api/v1/`) and the dashboard, allowing every call (at least
    /// 16 bytes); with neither key set every `/api/v1/` route answers 404.
    #[arg(long, env = "CONFAB_API_KEY")]
    pub api_key: Option<Secret>,

    /// Bearer key of the HTTP API allowing only `GET` calls (at least 16 bytes; optional).
    #[arg(long, env = "CONFAB_API_READ_KEY")]
    pub api_read_key: Option<Secret>,

    /// Sustained HTTP API calls per second per key, on each node.
    #[arg(long, env = "CONFAB_API_RATE_PER_SEC", default_value_t = 1000)]
    pub api_rate_per_sec: u32,

    /// Burst of HTTP API calls per key allowed above the sustained rate, on each node.
    #[arg(long, env = "CONFAB_API_RATE_BURST", default_value_t = 2000)]
    pub api_rate_burst: u32,

    /// Webhooks and forwarded calls (`hooks/config.rs`).
    #[command(flatten)]
    pub hooks: crate::hooks::HookArgs,
}

/// What `validate` found wrong; startup stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The validated settings the node runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Length of the kernel's queue of connections not yet accepted.
    pub listen_backlog: u32,
    pub database_url: String,
    pub database_max_connections: u32,
    /// Longest wait for a database connection.
    pub database_timeout: Duration,
    /// Bounds of the message write path.
    pub write: crate::storage::WriteSettings,
    /// The cluster backplane, when there is one.
    pub redis: Option<RedisSettings>,
    pub node_id: String,
    pub jwt_secret: Secret,
    /// True when the secret was generated at start (tokens die with the process).
    pub jwt_secret_generated: bool,
    pub dev_tokens: bool,
    /// True when dev tokens serve beyond loopback because `CONFAB_DEV_TOKENS=on` asked for it.
    pub dev_tokens_exposed: bool,
    /// Origins allowed by CORS, besides the node's own.
    pub cors: CorsPolicy,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    /// Bound on announcing a crashed node's users offline; the heartbeat timing derives from it
    /// (`backplane::Liveness`).
    pub node_timeout: Duration,
    pub log_format: LogFormat,
    /// Bearer key of the HTTP API allowing every call.
    pub api_key: Option<Secret>,
    /// Bearer key of the HTTP API allowing `GET` calls only. With neither key the API is off
    /// (404).
    pub api_read_key: Option<Secret>,
    /// Webhooks and forwarded calls, each present when its URL is set.
    pub hooks: crate::hooks::HookSettings,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: Secret,
    /// Prefix of keys and pub/sub channels.
    pub prefix: String,
}

/// Per-node and per-socket limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_chars: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Connections reading their rooms from storage at once during admission.
    pub max_pending_admissions: usize,
    /// How long a connection waits for that turn before it is shed.
    pub admission_wait: Duration,
    pub max_payload_bytes: u64,
    /// Initial websocket read buffer of each socket.
    pub ws_read_buffer_bytes: usize,
    pub send_rate_per_sec: u32,
    pub send_burst: u32,
    pub typing_rate_per_sec: u32,
    pub typing_burst: u32,
    /// HTTP API calls per second and burst, per key and node.
    pub api_rate_per_sec: u32,
    pub api_rate_burst: u32,
    /// How long a `typing:start` lasts without a refresh (the contract's 5 s).
    pub typing_ttl: Duration,
    /// Minimum spacing of re-broadcast `typing:start` events (the contract's 2 s).
    pub typing_rebroadcast: Duration,
}

impl Config {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        if let Some(url) = &self.redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return err("CONFAB_REDIS_URL must start with redis:// or rediss://");
        }
        // Below 3 s a node would be reaped after missing only a few heartbeats.
        if !(3..=3600).contains(&self.node_timeout) {
            return err("CONFAB_NODE_TIMEOUT must be 3-3600 seconds");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.len() > 64 {
            return err("CONFAB_REDIS_PREFIX must be 1-64 characters");
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("sqlite:"))
        {
            return err("CONFAB_DATABASE_URL must start with postgres:// or sqlite://");
        }
        if self.max_message_chars == 0 || self.max_connections == 0 {
            return err("CONFAB_MAX_MESSAGE_CHARS and CONFAB_MAX_CONNECTIONS must be at least 1");
        }
        if self.send_rate_per_sec == 0 || self.send_burst == 0 {
            return err("CONFAB_SEND_RATE_PER_SEC and CONFAB_SEND_BURST must be at least 1");
        }
        if self.typing_rate_per_sec == 0 || self.typing_burst == 0 {
            return err("CONFAB_TYPING_RATE_PER_SEC and CONFAB_TYPING_BURST must be at least 1");
        }
        if self.max_payload_bytes < 1024 {
            return err("CONFAB_MAX_PAYLOAD_BYTES must be at least 1024");
        }
        if !(1..=1_000_000).contains(&self.max_pending_admissions) {
            return err("CONFAB_MAX_PENDING_ADMISSIONS must be 1-1000000");
        }
        if !(1..=60_000).contains(&self.admission_wait_ms) {
            return err("CONFAB_ADMISSION_WAIT_MS must be 1-60000");
        }
        if !(256..=1024 * 1024).contains(&self.ws_read_buffer_bytes) {
            return err("CONFAB_WS_READ_BUFFER_BYTES must be 256-1048576");
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            return err("CONFAB_LISTEN_BACKLOG must be 1-65535");
        }
        if self.database_max_connections == 0 {
            return err("CONFAB_DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        if !(100..=60_000).contains(&self.database_timeout_ms) {
            return err("CONFAB_DATABASE_TIMEOUT_MS must be 100-60000");
        }
        if self.write_queue == 0 || !(1..=10_000).contains(&self.write_batch) {
            return err("CONFAB_WRITE_QUEUE must be at least 1 and CONFAB_WRITE_BATCH 1-10000");
        }
        if !(1..=64).contains(&self.write_concurrency) {
            return err("CONFAB_WRITE_CONCURRENCY must be 1-64");
        }
        if !(10..=60_000).contains(&self.write_max_wait_ms) {
            return err("CONFAB_WRITE_MAX_WAIT_MS must be 10-60000");
        }
        if self.write_linger_us > 100_000 || self.write_linger_us >= self.write_max_wait_ms * 1000 {
            return err(
                "CONFAB_WRITE_LINGER_US must be 0-100000 and below CONFAB_WRITE_MAX_WAIT_MS",
            );
        }
        let node_id = match self.node_id {
            Some(id) if id.trim().is_empty() || id.len() > 64 => {
                return err("CONFAB_NODE_ID must be 1-64 characters");
            }
            Some(id) => id,
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        let (jwt_secret, generated) = match self.jwt_secret {
            Some(secret) if secret.expose().len() < 16 => {
                return err("CONFAB_JWT_SECRET must be at least 16 bytes");
            }
            Some(secret) => (secret, false),
            None => (Secret::new(random_secret()), true),
        };
        // Protected mode, as Redis has it: without a secret anyone who reaches the port can mint a
        // token for any user, so beyond loopback that must be asked for explicitly.
        let loopback = self.listen.ip().is_loopback();
        if generated && !loopback && self.dev_tokens != Some(true) {
            return Err(ConfigError(format!(
                "CONFAB_LISTEN is {}, beyond loopback, and CONFAB_JWT_SECRET is not set: anyone \
                 who can reach the port could get a token for any user. Set CONFAB_JWT_SECRET \
                 (at least 16 bytes), listen on 127.0.0.1, or set CONFAB_DEV_TOKENS=on to serve \
                 dev tokens to everyone anyway (development only)",
                self.listen
            )));
        }
        let dev_tokens = self.dev_tokens.unwrap_or(generated);
        if self.api_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            return err("CONFAB_API_KEY must be at least 16 bytes");
        }
        if self
            .api_read_key
            .as_ref()
            .is_some_and(|k| k.expose().len() < 16)
        {
            return err("CONFAB_API_READ_KEY must be at least 16 bytes");
        }
        if let (Some(full), Some(read)) = (&self.api_key, &self.api_read_key)
            && full.expose() == read.expose()
        {
            return err("CONFAB_API_READ_KEY must differ from CONFAB_API_KEY");
        }
        if self.api_rate_per_sec == 0 || self.api_rate_burst == 0 {
            return err("CONFAB_API_RATE_PER_SEC and CONFAB_API_RATE_BURST must be at least 1");
        }
        let hooks = self.hooks.validate()?;
        Ok(Settings {
            hooks,
            listen: self.listen,
            listen_backlog: self.listen_backlog,
            database_url: self.database_url,
            database_max_connections: self.database_max_connections,
            database_timeout: Duration::from_millis(self.database_timeout_ms),
            write: crate::storage::WriteSettings {
                queue: self.write_queue,
                max_batch: self.write_batch,
                max_wait: Duration::from_millis(self.write_max_wait_ms),
                linger: Duration::from_micros(self.write_linger_us),
                writers: self.write_concurrency,
            },
            redis: self.redis_url.map(|url| RedisSettings {
                url,
                prefix: self.redis_prefix,
            }),
            node_id,
            dev_tokens,
            dev_tokens_exposed: dev_tokens && !loopback,
            cors: CorsPolicy::new(self.cors_origins, dev_tokens),
            jwt_secret,
            jwt_secret_generated: generated,
            limits: Limits {
                max_message_chars: self.max_message_chars,
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                max_pending_admissions: self.max_pending_admissions,
                admission_wait: Duration::from_millis(self.admission_wait_ms),
                max_payload_bytes: self.max_payload_bytes,
                ws_read_buffer_bytes: self.ws_read_buffer_bytes,
                send_rate_per_sec: self.send_rate_per_sec,
                send_burst: self.send_burst,
                typing_rate_per_sec: self.typing_rate_per_sec,
                typing_burst: self.typing_burst,
                api_rate_per_sec: self.api_rate_per_sec,
                api_rate_burst: self.api_rate_burst,
                typing_ttl: Duration::from_secs(5),
                typing_rebroadcast: Duration::from_secs(2),
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            node_timeout: Duration::from_secs(self.node_timeout),
            log_format: self.log_format,
            api_key: self.api_key,
            api_read_key: self.api_read_key,
        })
    }
}

impl Settings {
    /// Settings for tests and embedding: the defaults, on an ephemeral port.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        let mut settings = Config::parse_from(["confab"])
            .validate()
            .expect("default configuration is valid");
        settings.listen = "127.0.0.1:0".parse().expect("valid address");
        settings.database_url = database_url.into();
        settings
    }
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["confab"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
            .expect("flags parse")
            .validate()
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:3000");
        assert!(settings.database_url.starts_with("sqlite://"));
        assert!(settings.dev_tokens && settings.jwt_secret_generated);
        assert!(settings.node_id.starts_with("node-"));
        assert_eq!(settings.limits.max_message_chars, 1000);
    }

    #[test]
    fn a_configured_secret_turns_dev_tokens_off_unless_asked() {
        let settings = parse(&["--jwt-secret", "0123456789abcdef0123"]).unwrap();
        assert!(!settings.dev_tokens);
        let settings = parse(&[
            "--jwt-secret",
            "0123456789abcdef0123",
            "--dev-tokens",
            "true",
        ])
        .unwrap();
        assert!(settings.dev_tokens);
    }

    #[test]
    fn bad_values_are_refused_before_start() {
        assert!(parse(&["--jwt-secret", "short"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--database-url", "mysql://x"]).is_err());
        assert!(parse(&["--send-rate-per-sec", "0"]).is_err());
        assert!(parse(&["--redis-url", "http://x"]).is_err());
        assert!(parse(&["--node-timeout", "2"]).is_err());
        assert_eq!(parse(&[]).unwrap().node_timeout, Duration::from_secs(5));
        assert!(parse(&["--api-key", "short"]).is_err());
        assert!(parse(&["--api-key", "0123456789abcdef"]).is_ok());
        assert!(parse(&["--api-read-key", "short"]).is_err());
        let same = [
            "--api-key",
            "0123456789abcdef",
            "--api-read-key",
            "0123456789abcdef",
        ];
        assert!(parse(&same).is_err());
        assert!(parse(&["--api-rate-per-sec", "0"]).is_err());
        assert!(parse(&["--write-batch", "0"]).is_err());
        assert!(parse(&["--write-queue", "0"]).is_err());
        assert!(parse(&["--write-concurrency", "0"]).is_err());
        assert!(parse(&["--write-concurrency", "65"]).is_err());
        assert_eq!(
            parse(&["--write-concurrency", "64"]).unwrap().write.writers,
            64
        );
        assert!(parse(&["--database-timeout-ms", "5"]).is_err());
        assert!(parse(&["--ws-read-buffer-bytes", "16"]).is_err());
        assert!(parse(&["--listen-backlog", "0"]).is_err());
        assert_eq!(parse(&[]).unwrap().listen_backlog, 4096);
    }

    #[test]
    fn typing_defaults_allow_keystroke_rate() {
        // A `typing:start` every 300 ms is 3.3 a second: well under the sustained rate.
        let limits = parse(&[]).unwrap().limits;
        assert!(
            limits.typing_rate_per_sec >= 4 && limits.typing_burst >= limits.typing_rate_per_sec
        );
    }

    #[test]
    fn beyond_loopback_without_a_secret_is_refused_unless_dev_tokens_are_asked_for() {
        for listen in ["0.0.0.0:3999", "[::]:3999", "192.168.1.5:3000"] {
            let refused = parse(&["--listen", listen]).unwrap_err().to_string();
            assert!(refused.contains("CONFAB_JWT_SECRET"), "{refused}");
            assert!(refused.contains("CONFAB_DEV_TOKENS=on"), "{refused}");
            assert!(parse(&["--listen", listen, "--dev-tokens", "off"]).is_err());
            let asked = parse(&["--listen", listen, "--dev-tokens", "on"]).unwrap();
            assert!(asked.dev_tokens && asked.dev_tokens_exposed);
            let secret = parse(&["--listen", listen, "--jwt-secret", "0123456789abcdef0123"]);
            let secret = secret.unwrap();
            assert!(!secret.dev_tokens && !secret.dev_tokens_exposed);
        }
        for listen in ["127.0.0.1:3999", "[::1]:3999", "127.0.0.2:80"] {
            let dev = parse(&["--listen", listen]).unwrap();
            assert!(dev.dev_tokens && !dev.dev_tokens_exposed, "{listen}");
        }
    }

    #[test]
    fn cors_origins_are_validated_and_loopback_ones_are_for_development() {
        let argv = ["confab", "--cors-origins", "*"];
        assert!(
            Config::try_parse_from(argv).is_err(),
            "a wildcard is refused"
        );
        let argv = ["confab", "--cors-origins", "chat.example.com"];
        assert!(
            Config::try_parse_from(argv).is_err(),
            "an origin needs a scheme"
        );
        let dev = parse(&[]).unwrap().cors;
        assert!(dev.allows("http://localhost:5173", None));
        let listed = parse(&["--cors-origins", "https://a.example, https://b.example"]).unwrap();
        assert!(listed.cors.allows("https://b.example", None));
        assert!(!listed.cors.allows("http://localhost:5173", None));
        let production = parse(&["--jwt-secret", "0123456789abcdef0123"])
            .unwrap()
            .cors;
        assert!(!production.allows("http://localhost:5173", None));
        assert!(production.allows("https://chat.example", Some("chat.example")));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = parse(&[
            "--jwt-secret",
            "0123456789abcdef0123",
            "--api-key",
            "fedcba9876543210fedcba",
        ])
        .unwrap();
        assert!(!format!("{settings:?}").contains("0123456789abcdef0123"));
        assert!(!format!("{settings:?}").contains("fedcba9876543210fedcba"));
    }
}
