//! `kube-emulator`: the Kubernetes API-server emulator as a process, for
//! the local environment and for trying `kubectl` or a runbook by hand.

use clap::Parser;

/// Serves the Kubernetes API on loopback (plain HTTP, no authentication).
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Write a kubeconfig (context `emulator`) here.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Objects to create at start: JSON files, each one object or a list.
    #[arg(long, value_name = "FILE")]
    seed: Vec<std::path::PathBuf>,
    /// Pods of this image never become ready (a rollout to it fails).
    #[arg(long, value_name = "IMAGE")]
    broken_image: Vec<String>,
    /// Milliseconds between controller steps.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let emulator = runbook_testenv::KubeEmulator::start_on(
        args.port,
        std::time::Duration::from_millis(args.tick_ms),
    )
    .await?;
    for path in &args.seed {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        match value {
            serde_json::Value::Array(objects) => objects.into_iter().for_each(|object| {
                emulator.apply(object);
            }),
            object => {
                emulator.apply(object);
            }
        }
    }
    for image in &args.broken_image {
        emulator.break_image(image);
    }
    if let Some(path) = &args.kubeconfig {
        emulator.write_kubeconfig(path)?;
    }
    println!("kube-emulator listening on {}", emulator.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
