//! A real Prometheus (the Debian `prometheus` package) on loopback,
//! scraping given targets every second, for the analysis plugins' tests.
//! A test that needs it fails loudly when it is missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`127.0.0.1:PORT`) every second
    /// and waits until it is ready. Blocking: call it from a blocking task.
    pub fn start(targets: &[String]) -> Self {
        Self::start_on(free_port(), targets)
    }

    /// [`Prometheus::start`] on a given loopback port.
    pub fn start_on(port: u16, targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = dir.path().join("prometheus.yml");
        let quoted: Vec<String> = targets.iter().map(|target| format!("'{target}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sample\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ),
        )
        .expect("write the config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("Prometheus is needed for the metric tests and could not start ({error}); install the Debian package `prometheus` (scripts/test does)")
            });
        let mut prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Prometheus exited ({status}) before it was ready");
            }
            if get(&self.url, "/-/ready").is_some_and(|(status, _)| status == 200) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Prometheus was not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `query` returns a series (the first scrapes of a new
    /// target take a few seconds). Blocking.
    pub fn wait_for(&self, query: &str) {
        Self::wait_for_at(&self.url, query);
    }

    /// [`Prometheus::wait_for`] on the Prometheus at `url`.
    pub fn wait_for_at(url: &str, query: &str) {
        let started = Instant::now();
        let path = format!("/api/v1/query?query={}", encode(query));
        loop {
            if let Some((200, body)) = get(url, &path)
                && body.contains("\"value\"")
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no data for `{query}` within 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A plain HTTP GET: status and body.
fn get(base: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}
