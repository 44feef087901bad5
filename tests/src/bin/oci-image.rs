//! `oci-image`: writes an OCI image layout with one large layer and many
//! small ones, for benchmarks and trying `registry-push` by hand. The large
//! layer is written in pieces, never held in memory.

use clap::Parser;
use runbook_testenv::registry::{write_large_blob, write_layout_with};

/// Writes DIR as an OCI image layout and prints the manifest digest.
#[derive(Parser)]
struct Args {
    /// The layout folder to write.
    dir: std::path::PathBuf,
    /// Size of the large layer, in MiB.
    #[arg(long, default_value_t = 1024)]
    large_mib: u64,
    /// How many small layers.
    #[arg(long, default_value_t = 50)]
    small: usize,
    /// Size of each small layer, in KiB.
    #[arg(long, default_value_t = 100)]
    small_kib: u64,
    /// Makes the bytes (and so the digests) differ between images.
    #[arg(long, default_value_t = 1)]
    seed: u8,
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(args.dir.join("blobs/sha256")).expect("create the layout");
    let mut layers = vec![(
        write_large_blob(&args.dir, args.large_mib << 20, args.seed),
        args.large_mib << 20,
    )];
    for index in 0..args.small {
        let seed = args
            .seed
            .wrapping_mul(31)
            .wrapping_add(index as u8)
            .wrapping_add(1);
        layers.push((
            write_large_blob(&args.dir, args.small_kib << 10, seed),
            args.small_kib << 10,
        ));
    }
    println!(
        "{}",
        write_layout_with(&args.dir, &layers, &format!("bench-{}", args.seed))
    );
}
