//! glibc malloc thresholds for a server that streams large request bodies.
//!
//! hyper reads a body into buffers of up to ~400 KiB that stay alive until the hashing thread and
//! the storage writer are done with them. With glibc's adaptive defaults, freeing them keeps
//! shrinking the arena (`madvise(MADV_DONTNEED)`, about 60 calls a second during one push) and the
//! next socket read faults the same pages back in, zeroed: page faults were 13 % of Berth's CPU
//! during a 1 GiB push, and fixed thresholds made the push 12–21 % faster (BENCHMARKS.md). The
//! cost is bounded: each arena keeps at most [`TRIM_THRESHOLD`] of free memory at its top, the
//! peak RSS of 32 concurrent uploads did not change, and once uploads stop
//! [`release_when_idle`] hands what was kept back to the kernel.

use std::sync::Arc;
use std::time::Duration;

use crate::observe::Metrics;

/// Free memory an arena keeps at its top instead of handing it back to the kernel.
pub const TRIM_THRESHOLD: usize = 8 << 20;
/// Allocations at least this large get their own mapping (and are unmapped when freed); hyper's
/// read buffers and the block writer's buffers stay below it.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Applies the thresholds, unless the operator set glibc's own variables for them.
pub fn apply() {
    let operator_set = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !operator_set {
        set_thresholds();
    }
}

/// How often the server looks for an idle moment to hand freed memory back.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Hands freed heap memory back to the kernel whenever no upload is streaming and some request
/// body arrived since the last time: what the thresholds keep during a burst of uploads (15 MiB
/// after 32 concurrent ones on two cores) should not stay charged to the pod once it is over.
pub async fn release_when_idle(metrics: Arc<Metrics>) {
    let mut released_at = 0;
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let (in_flight, bytes_in) = metrics.upload_activity();
        if in_flight == 0 && bytes_in != released_at {
            // Walks every arena under its lock: off the request workers.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
            released_at = bytes_in;
        }
    }
}

/// Returns the free memory of every arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free pages, under each arena's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators release memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() {
    // SAFETY: mallopt only changes allocator parameters under the allocator's own lock; the
    // values are positive and fit in a c_int.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Other allocators (musl, macOS) have no such thresholds.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Bytes glibc holds in dedicated mappings right now.
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads allocator statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    /// Resident bytes of this process.
    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[test]
    fn freed_memory_between_live_blocks_goes_back_to_the_kernel() {
        set_thresholds();
        // Every other block freed: holes inside the heap, which trimming at the top never
        // reaches; only an explicit release gives them back.
        let block = 1 << 20;
        let mut blocks: Vec<Vec<u8>> = (0..96).map(|i| vec![i as u8 | 1; block]).collect();
        let mut kept = Vec::new();
        for (i, b) in blocks.drain(..).enumerate() {
            if i % 2 == 0 {
                kept.push(b);
            }
        }
        let before = resident_bytes();
        release_free_memory();
        let after = resident_bytes();
        std::hint::black_box(&kept);
        assert!(
            before > after + 24 * block,
            "48 MiB freed between live blocks, but resident memory went {before} -> {after}"
        );
    }

    #[test]
    fn read_buffer_sized_allocations_come_from_the_heap() {
        set_thresholds();
        // glibc's default threshold (128 KiB until a large block is freed) would map this one.
        let size = 2 << 20;
        assert!(size > 128 << 10 && size < MMAP_THRESHOLD);
        let before = mapped_bytes();
        let buffer = std::hint::black_box(vec![1u8; size]);
        let after = mapped_bytes();
        drop(buffer);
        assert!(
            after < before + size,
            "a {size}-byte allocation was mapped on its own ({before} -> {after} mapped bytes)"
        );
    }
}
