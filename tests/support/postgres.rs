//! A Postgres server of the test's own (initdb in a temporary directory, a free port), so a test
//! can stop and restart its database without disturbing the machine's shared one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PostgresServer {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

/// Where Debian keeps the server binaries (`/usr/lib/postgresql/<major>/bin`), else `PATH`.
fn server_bin() -> PathBuf {
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    majors.sort();
    majors
        .pop()
        .filter(|bin| bin.join("pg_ctl").exists())
        .unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PostgresServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self {
            dir,
            port,
            bin: server_bin(),
        };
        if is_root() {
            // Postgres refuses to run as root; its own user owns the cluster.
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status();
            assert!(chown.is_ok_and(|s| s.success()), "chown of the data dir");
        }
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` from the server binaries, as the postgres user when we are root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = self.command(tool);
        let output = command.args(args).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): these tests need the Postgres server binaries \
                 (apt-get install postgresql)",
                program.display()
            )
        });
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again, after [`stop`](Self::stop)) and waits until it accepts
    /// connections.
    pub fn start_again(&self) {
        let data = self.data();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: sessions are cut off).
    pub fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// Waits (up to 10 s) until a query of `database` waits on a lock: whatever the test set off has
/// reached the database and is queued behind a lock the test holds. `stop_if` ends the wait
/// with a failure when the queued work finished instead (it did not wait).
pub async fn until_a_query_waits_on_a_lock(
    admin: &mut sqlx::PgConnection,
    database: &str,
    stop_if: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(database)
        .fetch_one(&mut *admin)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(!stop_if(), "it finished without waiting for the lock");
        assert!(
            std::time::Instant::now() < deadline,
            "it never reached the database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
