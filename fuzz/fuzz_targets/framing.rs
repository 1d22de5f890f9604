//! Fuzz target for the frame decoders: any bytes, cut anywhere, in any mode.
//!
//! Checks that nothing panics, that every frame handed out is the next
//! piece of the input and has the shape its mode promises, and that memory
//! stays bounded by the frame limit: the unfinished frame kept between
//! chunks never exceeds `max_frame + 4` bytes, and no allocation made while
//! decoding exceeds twice (limit + one chunk).
//!
//!     make fuzz          # or: RUSTC_BOOTSTRAP=1 cargo fuzz run framing
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use reactor_echo::framing::{FrameAssembler, Framing, LENGTH_HEADER};

/// Remembers the largest single allocation.
struct Watch;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwards the caller's layout unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwards a pointer from this allocator with its layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Watch = Watch;

fuzz_target!(|data: &[u8]| {
    let [mode, size, chunk, stream @ ..] = data else { return };
    let max_frame = 1 + *size as usize * 16;
    let framing = match mode % 3 {
        0 => Framing::Line,
        1 => Framing::Fixed(1 + (*mode as usize / 3) % max_frame),
        _ => Framing::LengthPrefixed,
    };
    let chunk = 1 + *chunk as usize;
    let mut asm = FrameAssembler::new(framing, max_frame);
    let mut offset = 0;
    LARGEST.store(0, Ordering::Relaxed);
    for piece in stream.chunks(chunk) {
        let mut ok = true;
        let result = asm.push(piece, |frame| {
            // Frames are consecutive pieces of the input.
            ok &= stream.get(offset..offset + frame.len()) == Some(frame);
            offset += frame.len();
            ok &= match framing {
                Framing::Line => frame.ends_with(b"\n") && frame.len() <= max_frame + 1,
                Framing::Fixed(n) => frame.len() == n,
                Framing::LengthPrefixed => frame.len() <= max_frame + LENGTH_HEADER,
            };
            ControlFlow::Continue(())
        });
        assert!(ok, "bad frame for {framing}");
        assert!(asm.buffered() <= max_frame + LENGTH_HEADER);
        if result.is_err() {
            break;
        }
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 2 * (max_frame + LENGTH_HEADER + chunk), "allocated {largest} bytes");
});
