//! The settings of webhooks and forwarded calls: flags and `CONFAB_*` variables, flattened into
//! [`crate::config::Config`] and validated with it.

use std::time::Duration;

use clap::Args;

use crate::config::{ConfigError, Secret};

#[derive(Debug, Clone, Args)]
pub struct HookArgs {
    /// Where webhooks are POSTed (`http://` or `https://`); unset means no webhooks (and no
    /// outbox rows written).
    #[arg(long, env = "CONFAB_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Where `rpc:call` is forwarded; unset means `rpc:call` answers `not_found`.
    #[arg(long, env = "CONFAB_RPC_URL")]
    pub rpc_url: Option<String>,

    /// HMAC secret of the signature headers (at least 16 bytes); required with either URL.
    #[arg(long, env = "CONFAB_WEBHOOK_SECRET")]
    pub webhook_secret: Option<Secret>,

    /// Longest wait for the backend's answer to a forwarded call, in milliseconds.
    #[arg(long, env = "CONFAB_RPC_TIMEOUT_MS", default_value_t = 5000)]
    pub rpc_timeout_ms: u64,

    /// Sustained `rpc:call` rate per socket.
    #[arg(long, env = "CONFAB_RPC_RATE_PER_SEC", default_value_t = 10)]
    pub rpc_rate_per_sec: u32,

    /// Burst of `rpc:call` allowed above the sustained rate.
    #[arg(long, env = "CONFAB_RPC_BURST", default_value_t = 20)]
    pub rpc_burst: u32,

    /// Forwarded calls in flight on this node; beyond, `unavailable` at once.
    #[arg(long, env = "CONFAB_RPC_MAX_IN_FLIGHT", default_value_t = 256)]
    pub rpc_max_in_flight: usize,

    /// Consecutive failed calls (timeout, refused, non-2xx) that open the circuit breaker.
    #[arg(long, env = "CONFAB_RPC_BREAKER_FAILURES", default_value_t = 5)]
    pub rpc_breaker_failures: u32,

    /// How long an open breaker answers `unavailable` without calling, in milliseconds, before
    /// one trial call is let through.
    #[arg(long, env = "CONFAB_RPC_BREAKER_COOLDOWN_MS", default_value_t = 5000)]
    pub rpc_breaker_cooldown_ms: u64,

    /// Longest wait for the webhook receiver's answer, in milliseconds.
    #[arg(long, env = "CONFAB_WEBHOOK_TIMEOUT_MS", default_value_t = 5000)]
    pub webhook_timeout_ms: u64,

    /// Most events per webhook request.
    #[arg(long, env = "CONFAB_WEBHOOK_BATCH", default_value_t = 100)]
    pub webhook_batch: usize,

    /// How often an idle node looks for due events, in milliseconds.
    #[arg(long, env = "CONFAB_WEBHOOK_POLL_MS", default_value_t = 250)]
    pub webhook_poll_ms: u64,

    /// First retry delay of a failed delivery, in milliseconds; doubled per attempt, with jitter.
    #[arg(long, env = "CONFAB_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,

    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "CONFAB_WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000)]
    pub webhook_retry_max_ms: u64,

    /// How long an event is retried before it is marked failed, in seconds (24 hours; shorter
    /// only for tests).
    #[arg(long, env = "CONFAB_WEBHOOK_RETRY_FOR_SECS", default_value_t = 86_400)]
    pub webhook_retry_for_secs: u64,
}

/// Forwarded calls, when `CONFAB_RPC_URL` is set.
#[derive(Debug, Clone)]
pub struct RpcSettings {
    pub url: String,
    pub timeout: Duration,
    pub rate_per_sec: u32,
    pub burst: u32,
    pub max_in_flight: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// Webhooks, when `CONFAB_WEBHOOK_URL` is set.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    pub timeout: Duration,
    pub batch: usize,
    pub poll: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retry_for: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct HookSettings {
    pub rpc: Option<RpcSettings>,
    pub webhooks: Option<WebhookSettings>,
    /// Present whenever either of the above is.
    pub secret: Option<Secret>,
}

fn http_url(name: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::new(format!(
            "{name} must start with http:// or https://"
        )))
    }
}

impl HookArgs {
    pub fn validate(self) -> Result<HookSettings, ConfigError> {
        let err = |m: &str| Err(ConfigError::new(m));
        if self.webhook_url.is_none() && self.rpc_url.is_none() {
            return Ok(HookSettings::default());
        }
        match &self.webhook_secret {
            None => {
                return err(
                    "CONFAB_WEBHOOK_SECRET is required when CONFAB_WEBHOOK_URL or CONFAB_RPC_URL is set",
                );
            }
            Some(s) if s.expose().len() < 16 => {
                return err("CONFAB_WEBHOOK_SECRET must be at least 16 bytes");
            }
            Some(_) => {}
        }
        if !(100..=60_000).contains(&self.rpc_timeout_ms)
            || !(100..=60_000).contains(&self.webhook_timeout_ms)
        {
            return err("CONFAB_RPC_TIMEOUT_MS and CONFAB_WEBHOOK_TIMEOUT_MS must be 100-60000");
        }
        if self.rpc_rate_per_sec == 0 || self.rpc_burst == 0 || self.rpc_max_in_flight == 0 {
            return err(
                "CONFAB_RPC_RATE_PER_SEC, CONFAB_RPC_BURST and CONFAB_RPC_MAX_IN_FLIGHT must be at least 1",
            );
        }
        if self.rpc_breaker_failures == 0 {
            return err("CONFAB_RPC_BREAKER_FAILURES must be at least 1");
        }
        if !(1..=1000).contains(&self.webhook_batch)
            || !(10..=60_000).contains(&self.webhook_poll_ms)
        {
            return err("CONFAB_WEBHOOK_BATCH must be 1-1000 and CONFAB_WEBHOOK_POLL_MS 10-60000");
        }
        if self.webhook_retry_base_ms == 0 || self.webhook_retry_max_ms < self.webhook_retry_base_ms
        {
            return err(
                "CONFAB_WEBHOOK_RETRY_BASE_MS must be at least 1 and at most CONFAB_WEBHOOK_RETRY_MAX_MS",
            );
        }
        if !(1..=30 * 86_400).contains(&self.webhook_retry_for_secs) {
            return err("CONFAB_WEBHOOK_RETRY_FOR_SECS must be 1-2592000");
        }
        if let Some(url) = &self.webhook_url {
            http_url("CONFAB_WEBHOOK_URL", url)?;
        }
        if let Some(url) = &self.rpc_url {
            http_url("CONFAB_RPC_URL", url)?;
        }
        Ok(HookSettings {
            rpc: self.rpc_url.map(|url| RpcSettings {
                url,
                timeout: Duration::from_millis(self.rpc_timeout_ms),
                rate_per_sec: self.rpc_rate_per_sec,
                burst: self.rpc_burst,
                max_in_flight: self.rpc_max_in_flight,
                breaker_failures: self.rpc_breaker_failures,
                breaker_cooldown: Duration::from_millis(self.rpc_breaker_cooldown_ms),
            }),
            webhooks: self.webhook_url.map(|url| WebhookSettings {
                url,
                timeout: Duration::from_millis(self.webhook_timeout_ms),
                batch: self.webhook_batch,
                poll: Duration::from_millis(self.webhook_poll_ms),
                retry_base: Duration::from_millis(self.webhook_retry_base_ms),
                retry_max: Duration::from_millis(self.webhook_retry_max_ms),
                retry_for: Duration::from_secs(self.webhook_retry_for_secs),
            }),
            secret: self.webhook_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<super::HookSettings, String> {
        let mut argv = vec!["confab"];
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).map_err(|e| e.to_string())?;
        config
            .validate()
            .map(|s| s.hooks)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_url_needs_a_secret_of_sixteen_bytes() {
        assert!(parse(&[]).unwrap().secret.is_none());
        let missing = parse(&["--webhook-url", "http://x/hook"]).unwrap_err();
        assert!(missing.contains("CONFAB_WEBHOOK_SECRET"), "{missing}");
        assert!(parse(&["--rpc-url", "http://x/rpc"]).is_err());
        let short = ["--rpc-url", "http://x/rpc", "--webhook-secret", "short"];
        assert!(parse(&short).is_err());
        let ok = [
            "--rpc-url",
            "http://x/rpc",
            "--webhook-secret",
            "0123456789abcdef",
        ];
        let hooks = parse(&ok).unwrap();
        assert_eq!(hooks.rpc.unwrap().timeout.as_millis(), 5000);
        assert!(hooks.webhooks.is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        let base = [
            "--webhook-url",
            "http://x/h",
            "--webhook-secret",
            "0123456789abcdef",
        ];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            parse(&args)
        };
        assert!(with(&[]).unwrap().webhooks.unwrap().retry_for.as_secs() >= 86_400);
        assert!(with(&["--webhook-batch", "0"]).is_err());
        assert!(with(&["--rpc-timeout-ms", "5"]).is_err());
        assert!(with(&["--webhook-retry-base-ms", "0"]).is_err());
        assert!(
            parse(&[
                "--webhook-url",
                "ftp://x",
                "--webhook-secret",
                "0123456789abcdef"
            ])
            .is_err()
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let args = [
            "--webhook-url",
            "http://x/h",
            "--webhook-secret",
            "very-secret-value-42",
        ];
        assert!(!format!("{:?}", parse(&args).unwrap()).contains("very-secret-value-42"));
    }
}
