//! `local-estate`: the local stand-in for a production estate that the five
//! runbooks in `runbooks/` deploy to (see `runbook_testenv::estate`). Runs
//! in the foreground until Ctrl-C or SIGTERM; `scripts/local-env` starts
//! and stops it in the background.

use clap::Parser;
use runbook_testenv::estate::{self, Estate};

/// Starts the Kubernetes emulator, the registry, moto, Prometheus, PostgreSQL and the
/// sample service on fixed loopback ports, seeded for the five runbooks.
#[derive(Parser)]
struct Args {
    /// Where the kubeconfig and the environment file go.
    #[arg(long, default_value = ".local-estate")]
    dir: std::path::PathBuf,
    /// Where the runbooks' images are written (`runbooks/dist`).
    #[arg(long, default_value = "runbooks/dist")]
    images: std::path::PathBuf,
    /// A version that behaves as a bad release (its canary fails 30% of
    /// requests, its health checks fail, its migration exits 1).
    #[arg(long, value_name = "VERSION", default_value = "1.2.4")]
    bad_version: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    args.dir = std::path::absolute(&args.dir)?;
    let estate = Estate::start(&args.dir, &args.images, args.bad_version.clone()).await?;
    let env_file = args.dir.join("env.sh");
    std::fs::write(&env_file, estate.environment())?;
    println!("local estate ready:");
    println!(
        "  kubernetes  http://127.0.0.1:{} (kubeconfig {})",
        estate::ports::KUBE,
        estate.kubeconfig().display()
    );
    println!("  registry    {}", estate.registry.url());
    println!("  aws (moto)  {}", estate.moto.url);
    println!("  prometheus  {}", estate.prometheus.url);
    println!(
        "  service     http://127.0.0.1:{} (health, API, flags, webhooks, metrics)",
        estate::ports::SAMPLE
    );
    println!(
        "  postgresql  {} (a database per runbook: {})",
        estate.postgres.url_of(""),
        estate::DATABASES
            .iter()
            .map(|(_, database, _)| *database)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  bad releases: {}", args.bad_version.join(", "));
    println!("point runbook at it:  source {}", env_file.display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(estate);
    Ok(())
}
