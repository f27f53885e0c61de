//! Real ingresses (nginx, Traefik, Caddy, Envoy) started by the tests that run the README's
//! "Behind your ingress" blocks as written: the process handle, its scratch directory, and reading
//! the README block under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An ingress process listening on `port` on 127.0.0.1, in its own directory; killed (by pid),
/// waited for and its directory removed on drop.
pub struct Ingress {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// The file in `dir` the process logs to (what a failure message shows).
    log_file: &'static str,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        // Child::kill signals this child's own pid; nothing else is touched.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Ingress {
    /// Runs `cmd` in `dir` (prepared by the caller) with its output in `dir/out.log` and `HOME` /
    /// `XDG_*` pointing at `dir` (nothing of the machine's home is read or written), and waits at
    /// most `within` until `port` accepts connections. `log_file` is the file of `dir` the process
    /// logs to.
    pub fn spawn(
        mut cmd: Command,
        dir: PathBuf,
        port: u16,
        log_file: &'static str,
        within: Duration,
    ) -> Ingress {
        let out = std::fs::File::create(dir.join("out.log")).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn ingress");
        let ingress = Ingress {
            child,
            dir,
            port,
            log_file,
        };
        let deadline = Instant::now() + within;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ingress did not listen: {}",
                ingress.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ingress
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(self.log_file)).unwrap_or_default()
    }
}

/// A fresh scratch directory for the ingress `name` on `port`.
pub fn workdir(name: &str, port: u16) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sessiongate-{name}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("ingress dir");
    dir
}

/// The code block of the README after `<!-- tested: {marker} -->`.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once(&format!("<!-- tested: {marker} -->"))
        .unwrap_or_else(|| panic!("README marks the tested {marker} block"));
    let (_, block) = after.split_once("```").expect("a code block");
    let (_, block) = block.split_once('\n').expect("the block's language line");
    let (block, _) = block.split_once("```").expect("the block ends");
    block.to_string()
}

/// `text` with `from` replaced by `to`, which must occur exactly once (the README drifting from
/// what a test substitutes fails here).
pub fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "README block: `{from}`");
    text.replacen(from, to, 1)
}
