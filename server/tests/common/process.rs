//! The server binary as a child process: for what only a real process
//! shows (signals, `kill -9`, a restart).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bilten-analytics");
pub const TOKEN: &str = "cli-token";

pub fn cmd(data: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("BILTEN_DATA_DIR", data)
        .env("BILTEN_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info");
    c
}

/// Runs to the end; success and everything it printed.
pub fn run(c: &mut Command) -> (bool, String) {
    let (code, text) = run_code(c);
    (code == Some(0), text)
}

/// Runs to the end; its exit code and everything it printed.
pub fn run_code(c: &mut Command) -> (Option<i32>, String) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts `serve` on port 0; the address comes from its log.
pub fn serve(data: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut c = cmd(data);
    c.args(["serve", "--listen", "127.0.0.1:0"])
        .envs(extra.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = c.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // The API's address (`addr=`), not the interface's
            // (`clickhouse_addr=`).
            if let Some(i) = line.find(" addr=") {
                let addr: String = line[i + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(addr);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
    Server {
        child,
        base: format!("http://{addr}"),
        log,
    }
}

impl Server {
    /// SIGTERM, then waits up to 30 s for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill().unwrap();
        panic!("server did not stop within 30 s of SIGTERM");
    }

    /// `kill -9`: no drain, no cleanup.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub async fn query(&self, sql: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("{}/admin/query", self.base))
            .bearer_auth(TOKEN)
            .body(sql.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn flush(&self) {
        let r = reqwest::Client::new()
            .post(format!("{}/admin/flush", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
