//! One `send` instead of a `writev` for a batch of small pieces (a WebSocket session's frames,
//! a stream chunk with its size line): the pieces are copied one after another into a buffer of
//! the worker thread's, kept between calls. On Linux a `writev` of many small slices costs more
//! kernel time than the copy costs in user space (perf on S2, bench/RESULTS.md).

use std::cell::RefCell;

/// Batches up to this many bytes are copied; larger ones go out vectored. The buffer of each
/// thread that writes grows to at most this size.
pub(crate) const JOIN_BELOW: usize = 16 * 1024;

thread_local! {
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `write` with `pieces` copied together. `write` must not call this function again (it
/// writes to a socket).
pub(crate) fn with_joined<'a, R>(pieces: impl IntoIterator<Item = &'a [u8]>, write: impl FnOnce(&[u8]) -> R) -> R {
    JOINED.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        for piece in pieces {
            buf.extend_from_slice(piece);
        }
        write(&buf)
    })
}
