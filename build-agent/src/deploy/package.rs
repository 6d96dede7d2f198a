//! The package: copied from the (read-only) agents folder into a private build directory, and a
//! content hash over its files that names the image, so an unchanged package is not rebuilt and a
//! changed one always is.

use super::DeployError;
use std::path::{Path, PathBuf};

/// Reading the upload failed: the package is incomplete or unreadable (upload it again).
fn unreadable(path: &Path, e: std::io::Error) -> DeployError {
    DeployError::package(format!(
        "cannot read {} of the package: {e}",
        path.display()
    ))
}

/// Writing the build copy failed: the machine (a full disk, a work folder we cannot write).
fn unwritable(path: &Path, e: std::io::Error) -> DeployError {
    DeployError::machine(format!(
        "cannot write {}: {e} (free space, or set WORK_DIR to a writable folder)",
        path.display()
    ))
}

/// FNV-1a, 64 bit: a change detector for file trees (not a security boundary).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Regular files under `dir` (relative paths, sorted). Symlinks are refused: a package must be
/// self-contained.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = std::fs::read_dir(dir.join(&rel)).map_err(|e| unreadable(&rel, e))?;
        for e in entries.flatten() {
            let r = rel.join(e.file_name());
            let ty = e.file_type().map_err(|e| unreadable(&r, e))?;
            if ty.is_symlink() {
                return Err(DeployError::package(format!("the package contains a symlink ({}); packages must not link outside themselves", r.display())));
            } else if ty.is_dir() {
                stack.push(r);
            } else if ty.is_file() {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// 16 hex digits over a text.
pub fn text_hash(text: &str) -> String {
    let mut h = Fnv::new();
    h.write(text.as_bytes());
    format!("{:016x}", h.0)
}

/// 16 hex digits over every file's path and content.
pub fn content_hash(dir: &Path) -> Result<String, DeployError> {
    let mut h = Fnv::new();
    for f in files(dir)? {
        let data = std::fs::read(dir.join(&f)).map_err(|e| unreadable(&f, e))?;
        h.write(f.to_string_lossy().as_bytes());
        h.write(&[0]);
        h.write(&(data.len() as u64).to_le_bytes());
        h.write(&data);
    }
    Ok(format!("{:016x}", h.0))
}

/// Copy `src` into `dest` (created fresh). The source is only read.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<(), DeployError> {
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for f in files(src)? {
        let to = tmp.join(&f);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(|e| unwritable(p, e))?;
        }
        // the source was just listed: a copy that fails is the destination's trouble, unless
        // the file went away meanwhile (an upload being replaced)
        std::fs::copy(src.join(&f), &to).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => unreadable(&f, e),
            _ => unwritable(&to, e),
        })?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| unwritable(&tmp, e))?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).map_err(|e| unwritable(dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_content_and_the_copy_is_faithful() {
        let base = std::env::temp_dir().join(format!("ba-pkg-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(src.join("app")).unwrap();
        std::fs::write(src.join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(src.join("app/main.py"), "print(1)\n").unwrap();
        let h1 = content_hash(&src).unwrap();
        assert_eq!(h1, content_hash(&src).unwrap());
        std::fs::write(src.join("app/main.py"), "print(2)\n").unwrap();
        let h2 = content_hash(&src).unwrap();
        assert_ne!(h1, h2);
        copy_tree(&src, &base.join("copy")).unwrap();
        assert_eq!(content_hash(&base.join("copy")).unwrap(), h2);
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        assert!(content_hash(&src).unwrap_err().message.contains("symlink"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
