//! glibc malloc thresholds for a server that streams large request bodies.
//!
//! hyper reads a body into buffers of up to ~400 KiB that stay alive until the hashing thread and
//! the storage writer are done with them. With glibc's adaptive defaults, freeing them keeps
//! shrinking the arena (`madvise(MADV_DONTNEED)`, about 60 calls a second during one push) and the
//! next socket read faults the same pages back in, zeroed: page faults were 13 % of Berth's CPU
//! during a 1 GiB push, and fixed thresholds made the push 12–21 % faster (BENCHMARKS.md). The
//! cost is bounded: each arena keeps at most [`TRIM_THRESHOLD`] of free memory at its top, and the
//! peak RSS of 32 concurrent uploads did not change.

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
