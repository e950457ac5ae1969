//! Raw ABI: every ioctl number, hypercall number and C struct the crate passes to the kernel
//! or the hypervisor, each with the header it comes from. Nothing else in the crate declares
//! a `repr(C)` ABI type. The calls themselves are made by the types that own the file
//! descriptors (`PrivCmd`, `EvtChn`, `GntDev`, `LoopDevice`).

pub mod hyper;
pub mod ioctl;
pub mod pv;

mod sealed {
    /// Keeps [`super::Abi`] to the types of this module.
    pub trait Sealed {}
}

/// A plain-old-data ABI type: no padding bytes, and every bit pattern of its size is a valid
/// value. Such a value can be read back from memory Xen wrote (`HypercallBuffer::read`) and
/// viewed as bytes ([`as_bytes`]). Sealed: implemented here only, for the integer types and
/// the structs whose fields (explicit `_pad` included) cover every byte, which their layout
/// tests pin.
///
/// # Safety
///
/// Implementors have no padding and no invalid bit patterns (no `bool`, enums, references
/// or niches).
pub unsafe trait Abi: Copy + sealed::Sealed {}

macro_rules! abi {
    ($($t:ty),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        // SAFETY: an integer, or a repr(C) struct of integers and integer arrays whose
        // explicit fields cover every byte (its size is pinned by the layout tests).
        unsafe impl Abi for $t {}
    )*};
}

abi!(
    u8,
    u16,
    u32,
    u64,
    hyper::XenDomctl,
    hyper::XenSysctl,
    hyper::MmuextOp,
    hyper::E820Entry,
    hyper::EvtchnAllocUnbound,
    hyper::GrantEntryV1,
    pv::StartInfo,
);

/// The bytes of an ABI value, as a hypercall or a guest page takes them.
pub fn as_bytes<T: Abi>(value: &T) -> &[u8] {
    // SAFETY: `T: Abi` has no padding, so all `size_of::<T>()` bytes behind the reference
    // are initialised, and they stay borrowed for the slice's lifetime.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}
