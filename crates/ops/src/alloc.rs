//! Keeping freed activation memory in the process (glibc only).
//!
//! Every layer of a network allocates its output afresh, and blocks of activation size (1-30 MB) are above
//! glibc's mmap threshold. Each one is therefore a new mapping, page-faulted on first touch and unmapped on free.
//! Measured on ResNet50 inference at b=8 on 2 cores, with the same settings through `MALLOC_*` variables: sys
//! time fell from 11.4 s to 4.0 s over one `cargo xtask bench ops` run, inference rose from 8.6-8.9 to 10.4
//! img/s and a Finetune1 step fell from 3.5 s to 2.5 s (docs/PERFORMANCE.md).

/// Tells glibc to serve blocks up to 32 MiB (its ceiling) from the heap and never to give freed heap memory
/// back to the kernel, so the next layer's activations reuse pages already faulted in. Call it once, early,
/// from a binary; the process keeps its peak heap until it exits. Returns whether both settings took (false
/// where the C library is not glibc; nothing to do there).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1;
            let pad = libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1;
            mmap && trim && pad
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_take_on_glibc() {
        let took = super::retain_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
        // The allocator still works afterwards, large blocks included.
        let v = vec![1u8; 40 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }
}
