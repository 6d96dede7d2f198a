//! `python:3.12-slim` for `examples/python-a2a-agent` on a host whose engine cannot pull it (no
//! registry): a stand-in made from the host's own Debian packages (`debootstrap`, minbase with
//! `python3` and `python-is-python3`, from the mirror and suite of the machine's apt sources),
//! imported under that tag for as long as the guard lives. The example's server is the standard
//! library only, so any Python 3 runs it. The root file system is made and kept in `NASIKO_CACHE`
//! by `python_standin_rootfs` (scripts/lib.sh).

use crate::docker::docker;
use std::path::PathBuf;
use std::process::Command;

pub const TAG: &str = "python:3.12-slim";

/// The image under [`TAG`]; removed on drop when it is the stand-in.
pub struct PythonBase {
    standin: bool,
}

impl PythonBase {
    /// The engine's own image if it has one, else the stand-in (built once, a few minutes).
    pub fn ensure() -> Result<PythonBase, String> {
        if docker(&["image", "inspect", TAG]).status.success() {
            return Ok(PythonBase { standin: false });
        }
        let tar = rootfs_tar()?;
        let out = docker(&[
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            "--change",
            "CMD [\"python3\"]",
            tar.to_str().ok_or("the cache path is not UTF-8")?,
            TAG,
        ]);
        if !out.status.success() {
            return Err(format!(
                "docker import {}: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PythonBase { standin: true })
    }

    pub fn is_standin(&self) -> bool {
        self.standin
    }
}

impl Drop for PythonBase {
    fn drop(&mut self) {
        if self.standin {
            let _ = docker(&["rmi", TAG]);
        }
    }
}

/// The stand-in's root file system as a tar, made once (`python_standin_rootfs`, scripts/lib.sh).
fn rootfs_tar() -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .args(["-c", "source \"$1\" && python_standin_rootfs", "bash"])
        .arg(crate::stack::repo_root().join("scripts/lib.sh"))
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
