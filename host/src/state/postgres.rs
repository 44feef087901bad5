//! The PostgreSQL state backend: a run's journal and audit lines, the
//! locks as leases with fencing tokens, and the deployment records, in
//! four tables a team shares. Every write is one transaction; the
//! journal's appends of the lock's holder carry its fencing token and
//! commit only while its lease is live by the server's clock.
//!
//! The `postgres` client blocks: it runs on a thread of its own, outside
//! the tokio runtime, and each call is a job sent to it. A connection that
//! dropped (the server restarted) is made again on the next call.

use super::remote::{Fence, LeaseTaken, Remote, RunLines, RunSummary};
use super::{LockHolder, LockState};
use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A team's state in a PostgreSQL database.
pub struct Postgres {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    shown: String,
}

struct Connection {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Option<postgres::Client>,
}

/// The tables, made once per database (under an advisory lock, as two
/// first runs may race to make them).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runbook_runs (
    run_id text PRIMARY KEY,
    runbook text NOT NULL,
    environment text,
    journal_lines bigint NOT NULL DEFAULT 0,
    audit_lines bigint NOT NULL DEFAULT 0,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS runbook_lines (
    run_id text NOT NULL REFERENCES runbook_runs (run_id),
    stream smallint NOT NULL,
    seq bigint NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (run_id, stream, seq)
);
CREATE TABLE IF NOT EXISTS runbook_locks (
    key text PRIMARY KEY,
    token bigint NOT NULL,
    holder text,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS runbook_records (
    run_id text PRIMARY KEY,
    record text NOT NULL,
    written timestamptz NOT NULL DEFAULT now()
);
";

const JOURNAL: i16 = 0;
const AUDIT: i16 = 1;

impl Connection {
    fn client(&mut self) -> Result<&mut postgres::Client, postgres::Error> {
        if self.client.as_ref().is_none_or(|client| client.is_closed()) {
            self.client = None;
            let mut client = self.config.connect(self.tls.clone())?;
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock(7246101)", &[])?;
            transaction.batch_execute(SCHEMA)?;
            transaction.commit()?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

fn io(error: postgres::Error) -> std::io::Error {
    // The server's own words (`db error: ...`) and, when it is one, the
    // reason a connection failed.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    std::io::Error::other(text)
}

impl Postgres {
    /// A backend at `url` (`postgres://user@host:port/db`; the password,
    /// when the URL has none, is `password`). Nothing is sent until the
    /// first call.
    pub fn new(url: &str, password: Option<&str>) -> std::io::Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|error| {
            std::io::Error::other(format!("`{}` is not a PostgreSQL URL: {error}", shown(url)))
        })?;
        if let (Some(password), None) = (password, config.get_password()) {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("runbook");
        // A call that hangs (a server stopped mid-query) must end: the run
        // then stops at its step boundary, as with a full disk.
        config.options("-c statement_timeout=15000 -c lock_timeout=10000");
        config.keepalives_idle(Duration::from_secs(10));
        let (sender, receiver) = mpsc::channel::<Job>();
        let mut connection = Connection {
            config,
            tls: tls()?,
            client: None,
        };
        std::thread::Builder::new()
            .name("runbook-postgres".into())
            .spawn(move || {
                for job in receiver {
                    job(&mut connection);
                }
            })?;
        Ok(Postgres {
            jobs: std::sync::Mutex::new(sender),
            shown: shown(url),
        })
    }

    /// Runs `work` on the connection's thread and waits for it.
    fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> std::io::Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection: &mut Connection| {
            let result = connection.client().and_then(work);
            if result.is_err() {
                // Start the next call on a fresh connection: this one may
                // be in an aborted transaction or talking to a dead server.
                if connection
                    .client
                    .as_ref()
                    .is_some_and(|client| client.is_closed())
                {
                    connection.client = None;
                }
            }
            let _ = reply.send(result.map_err(io));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("the PostgreSQL connection's thread ended"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the PostgreSQL connection's thread ended"))?
            .map_err(|error| {
                std::io::Error::other(format!("state backend {}: {error}", self.shown))
            })
    }
}

/// TLS as `sslmode` asks (`prefer`, the default: TLS when the server
/// offers it; `require`; `disable`), the server's certificate verified
/// against the system's roots and, as libpq does, the file
/// `$PGSSLROOTCERT` names (a private CA, such as RDS's bundle).
fn tls() -> std::io::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    if let Some(path) = std::env::var_os("PGSSLROOTCERT") {
        use rustls::pki_types::pem::PemObject;
        let unreadable = |error: &dyn std::fmt::Display| {
            std::io::Error::other(format!(
                "cannot read the CA certificates of $PGSSLROOTCERT ({}): {error}",
                std::path::Path::new(&path).display()
            ))
        };
        for certificate in rustls::pki_types::CertificateDer::pem_file_iter(&path)
            .map_err(|error| unreadable(&error))?
        {
            roots
                .add(certificate.map_err(|error| unreadable(&error))?)
                .map_err(|error| unreadable(&error))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The URL without its password, for messages and the mirror's file.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn holder_of(text: Option<String>) -> Option<LockHolder> {
    serde_json::from_str(text.as_deref()?).ok()
}

impl Remote for Postgres {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn acquire(&self, key: &str, ttl: Duration) -> std::io::Result<LeaseTaken> {
        let key = key.to_owned();
        self.call(move |client| {
            let mut transaction = client.transaction()?;
            transaction.execute(
                "INSERT INTO runbook_locks (key, token, expires_at) VALUES ($1, 0, '-infinity')
                 ON CONFLICT (key) DO NOTHING",
                &[&key],
            )?;
            let row = transaction.query_one(
                "SELECT holder, expires_at > now() FROM runbook_locks WHERE key = $1 FOR UPDATE",
                &[&key],
            )?;
            let holder = holder_of(row.get(0));
            if row.get::<_, bool>(1) {
                return Ok(LeaseTaken::Held(holder));
            }
            let token: i64 = transaction
                .query_one(
                    "UPDATE runbook_locks SET token = token + 1,
                         expires_at = now() + make_interval(secs => $2)
                     WHERE key = $1 RETURNING token",
                    &[&key, &ttl.as_secs_f64()],
                )?
                .get(0);
            transaction.commit()?;
            Ok(LeaseTaken::Taken {
                token,
                left: holder,
            })
        })
    }

    fn claim(&self, fence: &Fence, holder: &LockHolder) -> std::io::Result<bool> {
        let fence = fence.clone();
        let text = serde_json::to_string(holder).map_err(std::io::Error::other)?;
        self.call(move |client| {
            Ok(client.execute(
                "UPDATE runbook_locks SET holder = $3 WHERE key = $1 AND token = $2 AND expires_at > now()",
                &[&fence.key, &fence.token, &text],
            )? == 1)
        })
    }

    fn renew(&self, fence: &Fence, ttl: Duration) -> std::io::Result<bool> {
        let fence = fence.clone();
        self.call(move |client| {
            Ok(client.execute(
                "UPDATE runbook_locks SET expires_at = now() + make_interval(secs => $3)
                 WHERE key = $1 AND token = $2 AND expires_at > now()",
                &[&fence.key, &fence.token, &ttl.as_secs_f64()],
            )? == 1)
        })
    }

    fn release(&self, fence: &Fence) -> std::io::Result<()> {
        let fence = fence.clone();
        self.call(move |client| {
            client.execute(
                "UPDATE runbook_locks SET expires_at = now() WHERE key = $1 AND token = $2 AND expires_at > now()",
                &[&fence.key, &fence.token],
            )?;
            Ok(())
        })
    }

    fn clear(&self, fence: &Fence) -> std::io::Result<()> {
        let fence = fence.clone();
        self.call(move |client| {
            client.execute(
                "UPDATE runbook_locks SET holder = NULL WHERE key = $1 AND token = $2",
                &[&fence.key, &fence.token],
            )?;
            Ok(())
        })
    }

    fn peek(&self, key: &str) -> std::io::Result<LockState> {
        let key = key.to_owned();
        self.call(move |client| {
            let row = client.query_opt(
                "SELECT holder, expires_at > now() FROM runbook_locks WHERE key = $1",
                &[&key],
            )?;
            Ok(match row {
                None => LockState::Free(None),
                Some(row) if row.get::<_, bool>(1) => LockState::Held(holder_of(row.get(0))),
                Some(row) => LockState::Free(holder_of(row.get(0))),
            })
        })
    }

    fn append(
        &self,
        run: &RunSummary,
        journal: Vec<String>,
        audit: Vec<String>,
        fence: Option<&Fence>,
    ) -> std::io::Result<()> {
        let run = run.clone();
        let fence = fence.cloned();
        let appended = self.call(move |client| {
            let mut transaction = client.transaction()?;
            if let Some(fence) = &fence {
                // The fencing token: a holder whose lease another took
                // (it was paused, or cut off) writes nothing more. The
                // append renews the lease as the heartbeat does.
                let live = transaction.execute(
                    "UPDATE runbook_locks SET expires_at = greatest(expires_at, now() + make_interval(secs => $3))
                     WHERE key = $1 AND token = $2 AND expires_at > now()",
                    &[&fence.key, &fence.token, &fence.ttl.as_secs_f64()],
                )?;
                if live == 0 {
                    return Ok(false);
                }
            }
            transaction.execute(
                "INSERT INTO runbook_runs (run_id, runbook, environment) VALUES ($1, $2, $3)
                 ON CONFLICT (run_id) DO NOTHING",
                &[&run.run_id, &run.runbook, &run.environment],
            )?;
            let row = transaction.query_one(
                "UPDATE runbook_runs SET journal_lines = journal_lines + $2,
                     audit_lines = audit_lines + $3, updated = now()
                 WHERE run_id = $1 RETURNING journal_lines - $2, audit_lines - $3",
                &[&run.run_id, &(journal.len() as i64), &(audit.len() as i64)],
            )?;
            for (stream, lines, first) in [
                (JOURNAL, &journal, row.get::<_, i64>(0)),
                (AUDIT, &audit, row.get::<_, i64>(1)),
            ] {
                if lines.is_empty() {
                    continue;
                }
                let seqs: Vec<i64> = (first..first + lines.len() as i64).collect();
                transaction.execute(
                    "INSERT INTO runbook_lines (run_id, stream, seq, line)
                     SELECT $1, $2, seq, line FROM unnest($3::bigint[], $4::text[]) AS t (seq, line)",
                    &[&run.run_id, &stream, &seqs, lines],
                )?;
            }
            transaction.commit()?;
            Ok(true)
        })?;
        if appended {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "this process lost the run's lease (it was paused or cut off longer than the lease lasts, and another process took the run over): it writes nothing more",
            ))
        }
    }

    fn pull(&self, run_id: &str, from: (usize, usize)) -> std::io::Result<Option<RunLines>> {
        let run_id = run_id.to_owned();
        self.call(move |client| {
            let Some(run) = client.query_opt(
                "SELECT runbook, environment, journal_lines, audit_lines FROM runbook_runs WHERE run_id = $1",
                &[&run_id],
            )?
            else {
                return Ok(None);
            };
            let rows = client.query(
                "SELECT stream, line FROM runbook_lines
                 WHERE run_id = $1 AND ((stream = 0 AND seq >= $2) OR (stream = 1 AND seq >= $3))
                 ORDER BY stream, seq",
                &[&run_id, &(from.0 as i64), &(from.1 as i64)],
            )?;
            let mut lines = RunLines {
                summary: RunSummary {
                    run_id: run_id.clone(),
                    runbook: run.get(0),
                    environment: run.get(1),
                },
                journal: Vec::new(),
                audit: Vec::new(),
            };
            for row in rows {
                match row.get::<_, i16>(0) {
                    JOURNAL => lines.journal.push(row.get(1)),
                    _ => lines.audit.push(row.get(1)),
                }
            }
            Ok(Some(lines))
        })
    }

    fn runs(&self) -> std::io::Result<Vec<(RunSummary, (usize, usize))>> {
        self.call(|client| {
            Ok(client
                .query(
                    "SELECT run_id, runbook, environment, journal_lines, audit_lines FROM runbook_runs ORDER BY run_id",
                    &[],
                )?
                .into_iter()
                .map(|row| {
                    (
                        RunSummary {
                            run_id: row.get(0),
                            runbook: row.get(1),
                            environment: row.get(2),
                        },
                        (
                            row.get::<_, i64>(3) as usize,
                            row.get::<_, i64>(4) as usize,
                        ),
                    )
                })
                .collect())
        })
    }

    fn put_record(&self, run_id: &str, record: String) -> std::io::Result<()> {
        let run_id = run_id.to_owned();
        self.call(move |client| {
            client.execute(
                "INSERT INTO runbook_records (run_id, record) VALUES ($1, $2)
                 ON CONFLICT (run_id) DO UPDATE SET record = excluded.record, written = now()",
                &[&run_id, &record],
            )?;
            Ok(())
        })
    }

    fn records(&self) -> std::io::Result<Vec<(String, String)>> {
        self.call(|client| {
            Ok(client
                .query(
                    "SELECT run_id, record FROM runbook_records ORDER BY run_id",
                    &[],
                )?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }

    fn record(&self, run_id: &str) -> std::io::Result<Option<String>> {
        let run_id = run_id.to_owned();
        self.call(move |client| {
            Ok(client
                .query_opt(
                    "SELECT record FROM runbook_records WHERE run_id = $1",
                    &[&run_id],
                )?
                .map(|row| row.get(0)))
        })
    }
}
