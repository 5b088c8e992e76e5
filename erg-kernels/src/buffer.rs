//! Output buffers without the zero-fill: a kernel that writes every element of its output before
//! anything reads it (a `gemm` product with β = 0, a row map) allocates the output here instead
//! of `vec![0f32; n]`, whose memset over the whole buffer ran on one thread and took ≈ 16 % of a
//! training step when the allocator hands back reused (not fresh, already zeroed) memory.
//!
//! The slots are `MaybeUninit<f32>` until written ([`uninit`], `slot.write(v)`), then become a
//! `Vec<f32>` ([`assume_init`]). In debug builds every slot starts as NaN, so an element a kernel
//! forgot to write shows up in the kernel tests (`cargo test -p erg-kernels`).
use std::mem::MaybeUninit;

/// `n` unwritten f32 slots (NaN-filled in debug builds).
pub(crate) fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    if cfg!(debug_assertions) {
        return vec![MaybeUninit::new(f32::NAN); n];
    }
    let mut v = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit<f32>` needs no initialisation; the capacity is `n`.
    unsafe { v.set_len(n) };
    v
}

/// The buffer as f32.
///
/// # Safety
/// Every slot of `v` must have been written.
pub(crate) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same layout (MaybeUninit<f32> is repr(transparent)), same allocation, all written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// A slice of written slots as f32.
///
/// # Safety
/// Every slot of `s` must have been written.
pub(crate) unsafe fn written(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout; all written (the caller's promise).
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}
