//! A counter service that records side effects: `POST /do/NAME` and
//! `POST /undo/NAME` count and append to a sequence; `GET /state` returns
//! everything. Tests count how often each step really acted.

use crate::http::{Response, bind_loopback, serve};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the counter has seen.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// `do` calls per name.
    pub done: BTreeMap<String, u32>,
    /// `undo` calls per name.
    pub undone: BTreeMap<String, u32>,
    /// Every call in order: `do:NAME` or `undo:NAME`.
    pub sequence: Vec<String>,
}

/// A running counter service.
pub struct Counter {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let (listener, address) = bind_loopback(0).await?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let shared = Arc::clone(&tally);
        let task = tokio::spawn(serve(listener, move |request| {
            let shared = Arc::clone(&shared);
            async move {
                let mut tally = shared.lock().expect("tally lock");
                let parts: Vec<&str> = request
                    .path
                    .trim_start_matches('/')
                    .splitn(2, '/')
                    .collect();
                match (request.method.as_str(), parts.as_slice()) {
                    ("POST", ["do", name]) => {
                        let count = tally.done.entry((*name).to_owned()).or_default();
                        *count += 1;
                        let count = *count;
                        tally.sequence.push(format!("do:{name}"));
                        Response::text(200, count.to_string())
                    }
                    ("POST", ["undo", name]) => {
                        *tally.undone.entry((*name).to_owned()).or_default() += 1;
                        tally.sequence.push(format!("undo:{name}"));
                        Response::text(200, "ok")
                    }
                    ("GET", ["state"]) => Response::json(
                        200,
                        json!({"done": tally.done, "undone": tally.undone, "sequence": tally.sequence}),
                    ),
                    _ => Response::text(404, "not found"),
                }
            }
        }));
        Ok(Counter {
            url: format!("http://{address}"),
            tally,
            task,
        })
    }

    /// What it has seen so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
