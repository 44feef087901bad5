//! A proxy in front of moto_server that makes RDS slow the way it is in
//! AWS: moto reports a new snapshot `available` at once, so the proxy
//! answers the first N snapshot descriptions with `creating` instead, and
//! records every action it forwarded. Tests of waiting logic point the AWS
//! endpoint here.

use crate::http::{Request, Response, bind_loopback, serve};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running proxy.
pub struct SlowRds {
    /// `http://127.0.0.1:PORT`: the AWS endpoint to use.
    pub url: String,
    actions: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowRds {
    /// Forwards to `moto_url`; the first `creating_for` snapshot
    /// descriptions say `creating`.
    pub async fn start(moto_url: &str, creating_for: usize) -> std::io::Result<Self> {
        let (listener, address) = bind_loopback(0).await?;
        let upstream = moto_url.trim_start_matches("http://").to_owned();
        let actions = Arc::new(Mutex::new(Vec::new()));
        let left = Arc::new(Mutex::new(creating_for));
        let recorded = Arc::clone(&actions);
        let task = tokio::spawn(serve(listener, move |request| {
            let (upstream, recorded, left) =
                (upstream.clone(), Arc::clone(&recorded), Arc::clone(&left));
            async move {
                let action = url::form_urlencoded::parse(&request.body)
                    .find(|(key, _)| key == "Action")
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default();
                recorded.lock().expect("actions lock").push(action.clone());
                let (status, mut body) = match forward(&upstream, &request).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        return Response::text(502, format!("moto is unreachable: {error}"));
                    }
                };
                if action.starts_with("Describe") && action.ends_with("Snapshots") {
                    let mut left = left.lock().expect("left lock");
                    if *left > 0 && body.contains("<Status>available</Status>") {
                        *left -= 1;
                        body = body.replace(
                            "<Status>available</Status>",
                            "<Status>creating</Status><PercentProgress>40</PercentProgress>",
                        );
                    }
                }
                Response {
                    status,
                    headers: vec![("content-type".into(), "text/xml".into())],
                    body: body.into_bytes(),
                    delay: std::time::Duration::ZERO,
                }
            }
        }));
        Ok(SlowRds {
            url: format!("http://{address}"),
            actions,
            task,
        })
    }

    /// The actions forwarded so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.actions.lock().expect("actions lock").clone()
    }
}

impl Drop for SlowRds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `request` to moto at `upstream` (`127.0.0.1:PORT`) and reads its
/// whole answer: the status and the body.
pub(crate) async fn forward(upstream: &str, request: &Request) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let mut head = format!("{} {}", request.method, request.path);
    if let Some(query) = &request.query {
        head.push_str(&format!("?{query}"));
    }
    head.push_str(" HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "host: {upstream}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&request.body).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(502);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
