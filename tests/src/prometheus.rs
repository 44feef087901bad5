//! A real Prometheus (the Debian `prometheus` package) on loopback,
//! scraping given targets every second, for the analysis plugins' tests.
//! A test that needs it fails loudly when it is missing.

use crate::process::Tied;
use std::time::{Duration, Instant};

/// A running Prometheus.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Tied,
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
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let child = Tied::spawn("prometheus", &args, &[])
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
            if let Some(status) = self.child.exited() {
                panic!(
                    "Prometheus exited ({status}) before it was ready: is the Debian package `prometheus` installed (scripts/test installs it), and its port free?"
                );
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

    /// The value of an instant query that gives one number, if it does.
    /// Blocking.
    pub fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = get(&self.url, &path)?;
        if status != 200 {
            return None;
        }
        let parsed: serde_json::Value = serde_json::from_str(&body).ok()?;
        parsed["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
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
