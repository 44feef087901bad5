//! `sample-service`: the sample service as a process, for the README's demo
//! and for trying runbooks by hand.

use clap::Parser;

/// Serves /health, /health/live, /health/ready, /ready, /v1/decisions on loopback.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Environment variable holding the API key `/v1/decisions` requires.
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Answer `/health` with 503 `degraded`.
    #[arg(long)]
    unhealthy: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = match &args.api_key_env {
        Some(variable) => Some(
            std::env::var(variable)
                .map_err(|_| anyhow::anyhow!("environment variable {variable} is not set"))?,
        ),
        None => None,
    };
    let service = runbook_testenv::SampleService::start_on(args.port, key.as_deref()).await?;
    if args.unhealthy {
        service.update(|state| state.healthy = false);
    }
    println!("sample-service listening on {}", service.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
