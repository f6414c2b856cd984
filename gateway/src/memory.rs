//! Handing freed memory back to the operating system after a configuration build.
//!
//! A build of a large configuration parses every resource into typed trees before the
//! compact snapshot is made; those trees are freed at once when the build ends. The
//! binaries use jemalloc, which would otherwise keep the freed pages for its decay time
//! (10 s) and, without its background thread, until the next allocations come along.

use tikv_jemalloc_ctl::{arenas, Access, AsName};

/// jemalloc's options for Strait's binaries (its `malloc_conf`, read before `main`).
/// `tcache_max:131072`: the thread cache keeps freed blocks up to 128 KiB (default 32 KiB),
/// so Pingora's 64 KiB body buffer and the other larger per-request blocks are reused
/// from the thread's cache instead of going back to the arena on every request.
pub const MALLOC_CONF: &[u8; 18] = b"tcache_max:131072\0";

/// Gives the calling binary jemalloc's options (`MALLOC_CONF`). jemalloc reads the
/// global `malloc_conf` (prefixed `_rjem_` by tikv-jemalloc-sys) before `main`; its
/// own definition is weak, so the binary's wins. Use it once per binary, next to
/// `#[global_allocator]`; the environment variable `_RJEM_MALLOC_CONF` still applies
/// after it.
#[macro_export]
macro_rules! jemalloc_options {
    () => {
        #[export_name = "_rjem_malloc_conf"]
        #[used]
        static JEMALLOC_OPTIONS: &[u8; 18] = $crate::memory::MALLOC_CONF;
    };
}

/// Purges the unused dirty pages of every jemalloc arena now. Setting an arena's decay
/// time to 0 purges it at once; the previous decay time is then restored. Errors
/// (an allocator other than jemalloc, an arena not in use) only mean nothing is purged.
pub fn release_free_memory() {
    let Ok(count) = arenas::narenas::read() else {
        return;
    };
    for arena in 0..count {
        for kind in ["dirty", "muzzy"] {
            let key = format!("arena.{arena}.{kind}_decay_ms\0");
            let name = key.as_bytes().name();
            if let Ok(previous) = Access::<isize>::read(name) {
                if Access::<isize>::write(name, 0).is_ok() {
                    let _ = Access::<isize>::write(name, previous);
                }
            }
        }
    }
}
