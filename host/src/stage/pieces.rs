//! A batch crossing into a plugin with one copy: the pieces of its Arrow IPC stream
//! ([`sluice_sdk::ipc::encode_pieces`]: headers, padding and the batch's own buffers) are
//! written straight into the guest's memory as the `list<u8>` that `process` takes. Encoding
//! into a `Vec<u8>` first took two copies, the encode and then the component model's copy of
//! the `Vec` (2.6 % and 0.9 % of the benchmark's clean job).
//!
//! wasmtime's `ComponentType` and `Lower` are public but their items are hidden from its
//! docs (they back its derive macros). A wasmtime release that changes them fails to compile
//! here; it cannot go wrong at run time unnoticed.
use arrow::buffer::Buffer;
use std::mem::MaybeUninit;
use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

/// The pieces of one IPC stream, lowered as one `list<u8>` of their bytes in order.
pub struct IpcPieces(pub Vec<Buffer>);

impl IpcPieces {
    fn len(&self) -> usize {
        self.0.iter().map(Buffer::len).sum()
    }

    /// Allocates the list in the guest and copies the pieces into it: its address and length.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let len = self.len();
        let start = cx.realloc(0, 0, 1, len)?;
        let memory = cx.as_slice_mut();
        let Some(target) = memory.get_mut(start..start + len) else {
            wasmtime::bail!("the guest allocated {len} bytes outside its memory");
        };
        let mut at = 0;
        for piece in &self.0 {
            target[at..at + piece.len()].copy_from_slice(piece.as_slice());
            at += piece.len();
        }
        Ok((start, len))
    }
}

// SAFETY: the type is `list<u8>`'s, checked by the same function, and lowered as a list is: a
// pointer and a length (as two i64 flat values, or two u32 in memory), to bytes `realloc`
// allocated in the guest for exactly this list.
unsafe impl ComponentType for IpcPieces {
    type Lower = <[u8] as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lower for IpcPieces {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let (start, len) = self.store(cx)?;
        dst.write([ValRaw::i64(start as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (start, len) = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(start)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}
