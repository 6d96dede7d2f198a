//! The package: copied from the agents folder (which its uploader may still be writing) into a
//! private build directory, and a content hash over what was copied, which names the image, so
//! an unchanged package is not rebuilt and a changed one always is. The walk holds each folder
//! open and opens every name in it without following links (a link swapped in mid-copy is
//! refused, never followed), and takes regular files only (a FIFO cannot stall it).

use super::DeployError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// How deep a package's folders may nest.
const MAX_DEPTH: usize = 64;

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

/// FNV-1a, 64 bit: a change detector for file trees (not a security boundary: a package can only
/// collide with its own agent's builds).
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

/// 16 hex digits over a text.
pub fn text_hash(text: &str) -> String {
    let mut h = Fnv::new();
    h.write(text.as_bytes());
    format!("{:016x}", h.0)
}

/// Open `name` in the folder held open as `dir`, never following a link at it; nonblocking, so
/// a FIFO is seen for what it is instead of waited on.
fn open_in(dir: &File, name: &std::ffi::OsStr, folder: bool) -> std::io::Result<File> {
    let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if folder {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

fn open_root(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Every regular file under `dir`, by relative path, sorted; `each` gets the file opened. Links,
/// devices, FIFOs and sockets are refused: a package is self-contained plain files.
fn walk(
    dir: &Path,
    each: &mut dyn FnMut(&Path, File) -> Result<(), DeployError>,
) -> Result<(), DeployError> {
    let root = open_root(dir).map_err(|e| unreadable(dir, e))?;
    walk_in(&root, PathBuf::new(), 0, each)
}

fn walk_in(
    dir: &File,
    rel: PathBuf,
    depth: usize,
    each: &mut dyn FnMut(&Path, File) -> Result<(), DeployError>,
) -> Result<(), DeployError> {
    if depth > MAX_DEPTH {
        return Err(DeployError::package(format!(
            "the package nests folders deeper than {MAX_DEPTH} ({})",
            rel.display()
        )));
    }
    let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names: Vec<_> = std::fs::read_dir(&listing)
        .map_err(|e| unreadable(&rel, e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let link = || {
            DeployError::package(format!(
                "the package contains a symlink, device, FIFO or socket ({}); packages hold plain files and folders only",
                r.display()
            ))
        };
        let f = match open_in(dir, &name, false) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(link()),
            Err(e) => return Err(unreadable(&r, e)),
        };
        let ty = f.metadata().map_err(|e| unreadable(&r, e))?.file_type();
        if ty.is_dir() {
            drop(f);
            let sub = open_in(dir, &name, true).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => link(),
                _ => unreadable(&r, e),
            })?;
            walk_in(&sub, r, depth + 1, each)?;
        } else if ty.is_file() {
            each(&r, f)?;
        } else {
            return Err(link());
        }
    }
    Ok(())
}

/// The hash of one file seen in a walk, folded into the tree's in walk (sorted) order; whether it
/// is executable counts (a `COPY` keeps the mode).
fn fold(h: &mut Fnv, rel: &Path, mode: u32, len: u64, content: Fnv) {
    h.write(rel.to_string_lossy().as_bytes());
    h.write(&[0, u8::from(mode & 0o111 != 0)]);
    h.write(&len.to_le_bytes());
    h.write(&content.0.to_le_bytes());
}

/// Read `f` through, handing each chunk to `sink`; returns its length and hash.
fn stream(
    mut f: File,
    rel: &Path,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), DeployError>,
) -> Result<(u64, Fnv), DeployError> {
    let mut buf = vec![0u8; 64 << 10];
    let (mut len, mut h) = (0u64, Fnv::new());
    loop {
        let n = f.read(&mut buf).map_err(|e| unreadable(rel, e))?;
        if n == 0 {
            return Ok((len, h));
        }
        h.write(&buf[..n]);
        len += n as u64;
        sink(&buf[..n])?;
    }
}

fn mode_of(f: &File, rel: &Path) -> Result<u32, DeployError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(f.metadata()
        .map_err(|e| unreadable(rel, e))?
        .permissions()
        .mode())
}

/// 16 hex digits over every file's path and content.
pub fn content_hash(dir: &Path) -> Result<String, DeployError> {
    let mut h = Fnv::new();
    walk(dir, &mut |rel, f| {
        let mode = mode_of(&f, rel)?;
        let (len, c) = stream(f, rel, &mut |_| Ok(()))?;
        fold(&mut h, rel, mode, len, c);
        Ok(())
    })?;
    Ok(format!("{:016x}", h.0))
}

/// Copy `src` into `dest` (made fresh, moved into place whole) and return the hash of what was
/// copied: the copy is what is checked and built, whatever happens to the source meanwhile.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<String, DeployError> {
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| unwritable(&tmp, e))?;
    let mut h = Fnv::new();
    walk(src, &mut |rel, f| {
        let to = tmp.join(rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(|e| unwritable(p, e))?;
        }
        let mode = mode_of(&f, rel)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o755)
            .open(&to)
            .map_err(|e| unwritable(&to, e))?;
        let (len, c) = stream(f, rel, &mut |chunk| {
            out.write_all(chunk).map_err(|e| unwritable(&to, e))
        })?;
        fold(&mut h, rel, mode, len, c);
        Ok(())
    })?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).map_err(|e| unwritable(dest, e))?;
    Ok(format!("{:016x}", h.0))
}

/// A small text file of the package: a regular file (no link followed, no FIFO waited on) of at
/// most `limit` bytes.
pub fn read_regular(path: &Path, limit: usize) -> std::io::Result<String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if m.len() > limit as u64 {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            limit >> 10
        )));
    }
    let mut text = String::new();
    f.take(limit as u64 + 1).read_to_string(&mut text)?;
    Ok(text)
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
        assert_eq!(copy_tree(&src, &base.join("copy")).unwrap(), h2);
        assert_eq!(content_hash(&base.join("copy")).unwrap(), h2);
        assert_eq!(
            std::fs::read_to_string(base.join("copy/app/main.py")).unwrap(),
            "print(2)\n"
        );
        // the executable bit is copied (a Dockerfile's COPY keeps it) and counts as a change
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.join("app/main.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let h3 = copy_tree(&src, &base.join("copy")).unwrap();
        assert_ne!(h3, h2);
        let mode = std::fs::metadata(base.join("copy/app/main.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{mode:o}");
        fn file_link(p: &Path) {
            std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap()
        }
        fn folder_link(p: &Path) {
            std::os::unix::fs::symlink("/etc", p.join("app/etc")).unwrap()
        }
        fn fifo(p: &Path) {
            let c = std::ffi::CString::new(p.join("fifo").to_str().unwrap()).unwrap();
            // SAFETY: mkfifo on a path we own, no memory handed over.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        type Make = fn(&Path);
        let cases: [(&str, Make); 3] = [
            ("a file link", file_link),
            ("a folder link", folder_link),
            ("a FIFO", fifo),
        ];
        for (what, make) in cases {
            let dir = base.join(what.replace(' ', "-"));
            copy_tree(&src, &dir).unwrap();
            make(&dir);
            let e = content_hash(&dir).unwrap_err().message;
            assert!(e.contains("symlink, device, FIFO or socket"), "{what}: {e}");
            let e = copy_tree(&dir, &base.join("again")).unwrap_err().message;
            assert!(e.contains("symlink, device, FIFO or socket"), "{what}: {e}");
        }
        let fifo = base.join("a-FIFO/fifo");
        assert!(read_regular(&fifo, 10).is_err(), "a FIFO is not waited on");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
