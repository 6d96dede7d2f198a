//! A Nasiko checkout to test the stack file against: the user's real tree (NASIKO_CHECKOUT), or
//! the real layout of upstream's tree at 1daf1bf0 rebuilt from `shared/nasiko-upstream/` (empty
//! files at the real paths), never an invented one. Also the other facts of that folder.

use crate::stack::repo_root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The folder of facts about the real tree, beside the repository (as CI lays it out).
pub fn facts_dir() -> PathBuf {
    repo_root().join("../shared/nasiko-upstream")
}

/// Rows of a tab-separated facts file, header skipped.
pub fn facts(file: &str) -> Option<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(facts_dir().join(file)).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(String::from).collect())
            .collect(),
    )
}

pub struct Checkout {
    pub root: PathBuf,
    /// Rebuilt by us (removed on drop), or the user's own tree (never written to).
    pub rebuilt: bool,
}

impl Checkout {
    /// NASIKO_CHECKOUT when set, else the tree rebuilt from the facts; None (with the reason) when
    /// neither is there.
    pub fn find() -> Result<Checkout, String> {
        if let Some(p) = std::env::var_os("NASIKO_CHECKOUT").filter(|p| !p.is_empty()) {
            let root = PathBuf::from(p);
            if !root.join("app/Dockerfile").is_file() {
                return Err(format!(
                    "NASIKO_CHECKOUT={} is not a Nasiko checkout",
                    root.display()
                ));
            }
            return Ok(Checkout {
                root,
                rebuilt: false,
            });
        }
        let rows = facts("tree-1daf1bf0.tsv").ok_or_else(|| {
            format!(
                "no Nasiko checkout: set NASIKO_CHECKOUT, or lay shared/ beside the repository ({} is missing)",
                facts_dir().join("tree-1daf1bf0.tsv").display()
            )
        })?;
        let root = std::env::temp_dir().join(crate::docker::unique("nasiko-checkout"));
        for row in rows {
            let rel = Path::new(&row[0]);
            assert!(
                rel.is_relative() && !row[0].contains(".."),
                "odd path in the facts: {}",
                row[0]
            );
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("checkout dir");
            std::fs::write(&path, b"").expect("checkout file");
        }
        Ok(Checkout {
            root,
            rebuilt: true,
        })
    }

    /// Every path under the checkout (files and folders), to prove nothing was added.
    pub fn snapshot(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                out.insert(p);
            }
        }
        out
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.rebuilt {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
