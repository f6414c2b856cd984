//! Handing freed memory back to the operating system after a configuration build.
//!
//! A build of a large configuration parses every resource into typed trees before the
//! compact snapshot is made; those trees are freed at once when the build ends. The
//! binaries use jemalloc, which would otherwise keep the freed pages for its decay time
//! (10 s) and, without its background thread, until the next allocations come along.

use tikv_jemalloc_ctl::{arenas, Access, AsName};

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
