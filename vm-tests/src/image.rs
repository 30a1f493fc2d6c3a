//! Where the system to boot comes from: the stand-in image built by `image/build.sh`, or a
//! real Tails USB image (`TAILS_IMG`, see README.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::error::{Error, Result};

/// The repository's root (vm-tests/..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("vm-tests/ has a parent").to_path_buf()
}

/// `target/vm-tests` (or `TAILS_VM_OUT`): images, payloads and each scenario's directory.
pub fn out_dir() -> PathBuf {
    std::env::var_os("TAILS_VM_OUT").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/vm-tests"))
}

#[derive(Debug, Clone)]
pub enum Image {
    /// A Debian stand-in with Tails' paths, not Tails.
    StandIn {
        dir: PathBuf,
        /// squashfs holding /usr/local/bin/tails-server, laid over the system.
        payload: PathBuf,
        passphrase: String,
    },
    /// A real Tails USB image, booted through its own kernel and initrd (extracted from the
    /// image's system partition by scripts/vm-test) with the test suite's kernel options.
    /// Its Persistent Storage must already exist, with `passphrase`.
    RealTails { img: PathBuf, kernel: PathBuf, initrd: PathBuf, passphrase: String, binary: PathBuf },
}

impl Image {
    /// From the environment: `TAILS_VM_REAL=1` with `TAILS_IMG`, `TAILS_KERNEL`,
    /// `TAILS_INITRD`, `TAILS_PASSPHRASE`; else `TAILS_VM_IMAGE` + `TAILS_VM_PAYLOAD` (set by
    /// scripts/vm-test); else the stand-in is built (or found in the cache) by image/build.sh.
    pub fn from_env() -> Result<Image> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if var("TAILS_VM_REAL").as_deref() == Some("1") {
            let need = |k: &str| var(k).ok_or_else(|| Error::Image(format!("--real-tails needs {k}")));
            return Ok(Image::RealTails {
                img: need("TAILS_IMG")?.into(),
                kernel: need("TAILS_KERNEL")?.into(),
                initrd: need("TAILS_INITRD")?.into(),
                passphrase: need("TAILS_PASSPHRASE")?,
                binary: var("TAILS_SERVER_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| repo_root().join("target/debug/tails-server")),
            });
        }
        if let (Some(dir), Some(payload)) = (var("TAILS_VM_IMAGE"), var("TAILS_VM_PAYLOAD")) {
            return Image::stand_in(PathBuf::from(dir), PathBuf::from(payload));
        }
        Image::build()
    }

    /// Runs image/build.sh (a no-op when the image and payload are cached).
    pub fn build() -> Result<Image> {
        let script = repo_root().join("vm-tests/image/build.sh");
        let mut cmd = Command::new(&script);
        if let Some(bin) = std::env::var_os("TAILS_SERVER_BIN") {
            cmd.arg("--binary").arg(bin);
        }
        cmd.arg("--out").arg(out_dir());
        let t0 = Instant::now();
        let out = cmd.output().map_err(Error::io(format!("running {}", script.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(Error::Image(format!("{} failed:\n{stderr}", script.display())));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| {
            stdout
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix(k))
                .map(PathBuf::from)
                .ok_or_else(|| Error::Image(format!("build.sh printed no {k}: {stdout}")))
        };
        eprintln!("vm-tests: image ready in {:.1} s", t0.elapsed().as_secs_f64());
        Image::stand_in(field("image=")?, field("payload=")?)
    }

    fn stand_in(dir: PathBuf, payload: PathBuf) -> Result<Image> {
        for f in ["vmlinuz", "initrd.img", "system.squashfs", "persistent-template.raw", "complete"] {
            if !dir.join(f).exists() {
                return Err(Error::Image(format!("{} has no {f}: not a complete stand-in image", dir.display())));
            }
        }
        let passphrase = std::fs::read_to_string(dir.join("passphrase"))
            .map_err(Error::io("reading the image's passphrase"))?
            .trim()
            .to_owned();
        Ok(Image::StandIn { dir, payload, passphrase })
    }

    pub fn passphrase(&self) -> &str {
        match self {
            Image::StandIn { passphrase, .. } | Image::RealTails { passphrase, .. } => passphrase,
        }
    }

    pub fn is_real_tails(&self) -> bool {
        matches!(self, Image::RealTails { .. })
    }
}
