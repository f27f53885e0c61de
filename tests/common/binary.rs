//! The real `sessiongate` binary as a child process, for tests of signals, memory and descriptors.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::free_port;

pub struct Binary {
    pub child: Child,
    /// Everything the binary wrote to stderr, drained continuously so a full pipe never blocks it.
    log: Arc<std::sync::Mutex<Vec<u8>>>,
    pub listen: String,
    pub admin: String,
    pub config: std::path::PathBuf,
}

impl Binary {
    pub fn start(config_body: &str) -> Binary {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-ops-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("sessiongate.toml");
        std::fs::write(&config, with_listeners(config_body, &listen, &admin))
            .expect("write config");
        let child = Command::new(bin_path())
            .args(["--config", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiongate");
        let mut child = child;
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(mut err) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = log.lock() {
                        l.extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
        let b = Binary {
            child,
            log,
            listen,
            admin,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&b.listen).is_err() {
            if Instant::now() >= deadline {
                let log = b.log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!(
                    "binary did not start; its stderr:\n{}",
                    String::from_utf8_lossy(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn rewrite(&self, config_body: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, with_listeners(config_body, &self.listen, &self.admin))
            .expect("write");
        std::fs::rename(&tmp, &self.config).expect("rename");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn stderr(self) -> String {
        let bytes = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: cargo's, or `SESSIONGATE_TEST_BIN` when set (several work trees that
/// share one target directory overwrite each other's `target/debug/sessiongate`; point this at
/// the hashed copy in `target/debug/deps/` that `cargo build --message-format=json` names).
pub fn bin_path() -> std::ffi::OsString {
    static SAID: std::sync::Once = std::sync::Once::new();
    match std::env::var_os("SESSIONGATE_TEST_BIN") {
        Some(path) => {
            SAID.call_once(|| {
                eprintln!("SESSIONGATE_TEST_BIN: testing {}", path.to_string_lossy())
            });
            path
        }
        None => env!("CARGO_BIN_EXE_sessiongate").into(),
    }
}

pub fn with_listeners(body: &str, listen: &str, admin: &str) -> String {
    format!("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nthreads = 2\n{body}")
}

impl Binary {
    /// Resident set size of the child, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Open file descriptors of the child.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
