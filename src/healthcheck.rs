//! `confab healthcheck [HOST:PORT]`: asks a node's `/readyz` and exits 0 when it answers 200, 1
//! otherwise. Container images run it as their health check, so it needs no shell and no curl: a
//! plain HTTP/1.1 request over TCP with a short deadline.
//!
//! Without an argument it asks the address this process would listen on (`CONFAB_LISTEN`, default
//! `127.0.0.1:3000`), with an unspecified address (`0.0.0.0`, `[::]`) replaced by loopback. An
//! argument may name another host (`confab:3000`, resolved by DNS), as the Helm test hook does.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long the whole check may take: connect, request and status line.
const DEADLINE: Duration = Duration::from_secs(3);
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Whether `args` (without the program name) ask for the health check.
pub fn requested(mut args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.nth(1).is_some_and(|a| a == "healthcheck")
}

/// Runs the check named by the command line and returns the process exit code.
pub fn run() -> i32 {
    let target = std::env::args()
        .nth(2)
        .or_else(|| std::env::var("CONFAB_LISTEN").ok())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    match check(&target, DEADLINE) {
        Ok(()) => {
            println!("ready: GET http://{target}/readyz answered 200");
            0
        }
        Err(e) => {
            eprintln!("not ready: {e}");
            1
        }
    }
}

/// Why the node does not count as ready.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0} is not a HOST:PORT address")]
    BadAddress(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("GET /readyz answered {0}")]
    Status(String),
    #[error("no HTTP status line from {0} within the deadline")]
    NoAnswer(String),
}

/// Asks `http://{target}/readyz` and succeeds on a 200.
pub fn check(target: &str, deadline: Duration) -> Result<(), CheckError> {
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|_| CheckError::BadAddress(target.to_owned()))?
        .map(loopback_if_unspecified)
        .collect();
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return ask(stream, target, deadline.saturating_sub(started.elapsed())),
            Err(e) => last = Some(e),
        }
    }
    Err(CheckError::Unreachable(
        target.to_owned(),
        last.unwrap_or_else(|| std::io::Error::other("no address")),
    ))
}

fn ask(mut stream: TcpStream, target: &str, left: Duration) -> Result<(), CheckError> {
    let no_answer = || CheckError::NoAnswer(target.to_owned());
    let left = left.max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(left))
        .map_err(|_| no_answer())?;
    stream
        .set_write_timeout(Some(left))
        .map_err(|_| no_answer())?;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {target}\r\nUser-Agent: confab-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| CheckError::Unreachable(target.to_owned(), e))?;
    // The status line is all we need; read until its end (or the deadline).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().ok_or_else(no_answer)?;
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/1.") => Ok(()),
        (Some(version), Some(code)) if version.starts_with("HTTP/") => {
            Err(CheckError::Status(code.to_owned()))
        }
        _ => Err(no_answer()),
    }
}

/// A server bound to `0.0.0.0` or `[::]` is reached on loopback from inside its own container.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server that answers the first request with `reply` and reports what it got.
    fn serve_once(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = [0u8; 512];
            let n = stream.read(&mut got).unwrap();
            stream.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&got[..n]).into_owned()
        });
        (addr, handle)
    }

    #[test]
    fn a_200_from_readyz_is_healthy() {
        let (addr, server) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        check(&addr, DEADLINE).unwrap();
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /readyz HTTP/1.1\r\n")
        );
    }

    #[test]
    fn a_503_is_not() {
        let (addr, server) = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = check(&addr, DEADLINE).unwrap_err();
        assert!(
            matches!(err, CheckError::Status(ref c) if c == "503"),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn nothing_listening_is_not() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check(&format!("127.0.0.1:{port}"), DEADLINE).unwrap_err();
        assert!(matches!(err, CheckError::Unreachable(..)), "{err}");
    }

    #[test]
    fn a_silent_server_fails_within_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let started = Instant::now();
        let err = check(&addr, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, CheckError::NoAnswer(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        assert_eq!(loopback_if_unspecified(any).to_string(), "127.0.0.1:3000");
        let any6: SocketAddr = "[::]:3000".parse().unwrap();
        assert_eq!(loopback_if_unspecified(any6).to_string(), "[::1]:3000");
    }

    #[test]
    fn only_the_healthcheck_word_asks_for_it() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(requested(args(&["confab", "healthcheck"]).into_iter()));
        assert!(!requested(args(&["confab"]).into_iter()));
        assert!(!requested(args(&["confab", "--listen", "x"]).into_iter()));
    }

    #[test]
    fn a_bad_address_is_named() {
        let err = check("not an address", DEADLINE).unwrap_err();
        assert!(matches!(err, CheckError::BadAddress(_)), "{err}");
    }
}
