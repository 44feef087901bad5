//! A throwaway PostgreSQL cluster (Debian's `postgresql`), made with
//! `initdb` in a temporary folder and served on a free loopback port for
//! one test. PostgreSQL refuses to run as root: as root, the cluster is
//! made and served as the package's `postgres` user. A test that needs it
//! fails loudly when it is missing; it never skips.

use crate::process::Tied;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running PostgreSQL.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The folder of its data, socket and log.
    pub dir: tempfile::TempDir,
    server: Option<Tied>,
    /// Settings beyond the defaults (`-c NAME=VALUE`), kept for a restart.
    settings: Vec<String>,
}

/// The folder of the newest PostgreSQL server programs Debian installed.
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|bin| bin.join("initdb").exists());
    versions.sort();
    versions.pop().expect(
        "PostgreSQL is installed (scripts/install-services installs the Debian package `postgresql`)",
    )
}

/// Whether this process runs as root.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `program` with `args`, as the `postgres` user when this process is root.
fn as_server_user(program: &Path, args: &[String]) -> (String, Vec<String>) {
    if is_root() {
        let mut all = vec!["-u".to_owned(), "postgres".to_owned(), "--".to_owned()];
        all.push(program.display().to_string());
        all.extend(args.iter().cloned());
        ("runuser".to_owned(), all)
    } else {
        (program.display().to_string(), args.to_vec())
    }
}

impl Postgres {
    /// Makes a cluster and starts it on a free port; waits until it takes
    /// connections.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        Self::start_on(port)
    }

    /// [`Postgres::start`] on `port` (the local estate's fixed one).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, None)
    }

    /// [`Postgres::start`] with TLS: the server certificate and key given
    /// (PEM), and connections over TCP refused unless they use TLS
    /// (`hostssl` only in `pg_hba.conf`).
    pub fn start_tls(certificate: &Path, key: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        Self::start_with(port, Some((certificate, key)))
    }

    fn start_with(port: u16, tls: Option<(&Path, &Path)>) -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("runbook-postgres-")
            .tempdir()
            .expect("a temporary folder");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand {} to postgres",
                dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let (program, args) = as_server_user(
            &bin.join("initdb"),
            &[
                "-D".into(),
                data.display().to_string(),
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "postgres".into(),
                "--no-sync".into(),
            ],
        );
        let made = Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|error| panic!("{program} runs: {error}"));
        assert!(
            made.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut settings = Vec::new();
        if let Some((certificate, key)) = tls {
            for (from, name) in [(certificate, "server.crt"), (key, "server.key")] {
                std::fs::copy(from, data.join(name)).expect("the TLS files are copied");
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("the key is private");
            if is_root() {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status()
                    .expect("chown runs");
                assert!(status.success(), "cannot hand the TLS files to postgres");
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf is written");
            settings.push("ssl=on".to_owned());
        }
        let mut postgres = Postgres {
            port,
            dir,
            server: None,
            settings,
        };
        postgres.serve();
        postgres
    }

    /// Starts the server on the cluster's folder and port, and waits until
    /// it takes connections.
    fn serve(&mut self) {
        let (port, data) = (self.port, self.dir.path().join("data"));
        let settings = self
            .settings
            .iter()
            .flat_map(|setting| ["-c".to_owned(), setting.clone()]);
        let (program, args) = as_server_user(
            &server_bin().join("postgres"),
            &[
                "-D".into(),
                data.display().to_string(),
                "-p".into(),
                port.to_string(),
                "-k".into(),
                self.dir.path().display().to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                "fsync=off".into(),
            ]
            .into_iter()
            .chain(settings)
            .collect::<Vec<String>>(),
        );
        self.server = Some(Tied::spawn(&program, &args, &[]).expect("postgres starts"));
        let postgres = &*self;
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening comes a moment before taking connections.
        while postgres.try_sql_in("postgres", "select 1").is_err() {
            assert!(
                Instant::now() < until,
                "PostgreSQL does not take connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once, as a crash or a pulled plug would
    /// (`pg_ctl stop -m immediate`): connections are cut mid-transaction.
    pub fn stop(&mut self) {
        let (program, args) = as_server_user(
            &server_bin().join("pg_ctl"),
            &[
                "stop".into(),
                "-D".into(),
                self.dir.path().join("data").display().to_string(),
                "-m".into(),
                "immediate".into(),
            ],
        );
        let stopped = Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|error| panic!("{program} runs: {error}"));
        assert!(
            stopped.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        drop(self.server.take());
    }

    /// Starts the server again after [`Postgres::stop`], on the same port
    /// and data.
    pub fn restart(&mut self) {
        self.serve();
    }

    /// `psql` itself, not Debian's `pg_wrapper` in front of it (which picks
    /// a version from `/etc/postgresql`).
    pub fn psql_program() -> PathBuf {
        server_bin().join("psql")
    }

    /// The URL of database `postgres` as its superuser.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of `database` as the superuser.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` with `psql`; its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs `sql` in `database`; its unaligned, tuples-only output.
    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        self.try_sql_in(database, sql)
            .unwrap_or_else(|error| panic!("{sql} (in {database}): {error}"))
    }

    /// [`Postgres::sql_in`], with psql's error instead of a panic.
    pub fn try_sql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(Self::psql_program())
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url_of(database))
            .args(["-c", sql])
            .output()
            .map_err(|error| format!("psql runs: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}
