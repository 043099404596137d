//! confab nodes as real processes (the built binary), for what one process cannot show: several
//! nodes each with their own telemetry, or a node killed without a word.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct NodeProcess {
    pub base: String,
    pub node_id: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts `target/debug/confab` on an ephemeral port with `env`, and waits until it listens.
    pub async fn start(node_id: &str, env: &HashMap<String, String>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .envs(env)
            .env("CONFAB_LISTEN", "127.0.0.1:0")
            .env("CONFAB_NODE_ID", node_id)
            .env("CONFAB_LOG_FORMAT", "pretty")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the confab binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (tx, output) = (tx.clone(), output.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line.clone());
                    output.lock().unwrap().push(line);
                }
            });
        }
        let base = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = rx.recv().await {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    return Some(format!("http://{addr}"));
                }
            }
            None
        })
        .await;
        match base {
            Ok(Some(base)) => Self {
                base,
                node_id: node_id.to_owned(),
                child,
                output,
            },
            _ => panic!(
                "{node_id} did not start:\n{}",
                output.lock().unwrap().join("\n")
            ),
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// SIGKILL: the node dies without a word (no drain, no goodbye), and this waits until it
    /// is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}
