//! The process's memory kept near what it holds (glibc's allocator): one malloc arena, since the
//! sidecar's few threads seldom allocate at once and each arena keeps its own freed pages; and,
//! after each sync (a full one reads pages of Kong's rows as JSON and drops them), the freed pages
//! given back to the system. Elsewhere (musl) both do nothing.

/// Before the runtime starts any thread.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a glibc tunable, set before any other thread exists
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// After a sync, once its writes are sent: return the heap's free pages.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe
    unsafe {
        libc::malloc_trim(0);
    }
}
