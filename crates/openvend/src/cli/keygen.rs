//! `openvend keygen`: a new app key pair, written as Alipay's key tool writes it.

use std::path::PathBuf;

use alipay::AppPrivateKey;

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write the keys to (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

/// Writes `app_private_key.pem` (PKCS#8 PEM), `app_private_key.txt` (bare base64, as Alipay's
/// tool) and `app_public_key.txt` (SPKI base64, to upload to Alipay's console).
pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let files = [
        "app_private_key.pem",
        "app_private_key.txt",
        "app_public_key.txt",
    ]
    .map(|f| args.out.join(f));
    if !args.force
        && let Some(existing) = files.iter().find(|p| p.exists())
    {
        anyhow::bail!("{} exists; pass --force to overwrite", existing.display());
    }
    let key = AppPrivateKey::generate()?;
    write_private(&files[0], &key.to_pkcs8_pem()?)?;
    write_private(&files[1], &key.to_pkcs8_base64()?)?;
    std::fs::write(&files[2], key.public_key().to_spki_base64())?;
    println!(
        "wrote {}, {} and {}",
        files[0].display(),
        files[1].display(),
        files[2].display()
    );
    println!(
        "upload the content of {} as the app public key (应用公钥)",
        files[2].display()
    );
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)?;
        Ok(())
    }
}
