//! Property tests for the framers: for random frames cut at random points,
//! the decoded frames are exactly the encoded ones, in every mode; an
//! oversized frame fails after every frame before it; memory stays bounded.

use std::ops::ControlFlow;

use proptest::prelude::*;
use reactor_echo::framing::{FrameAssembler, FrameTooLong, Framing, LENGTH_HEADER};

const MAX: usize = 300;

/// Feeds `stream` to a fresh assembler in pieces that end at `cuts`;
/// returns the frames and how the stream ended.
fn decode(
    framing: Framing,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Vec<u8>>, Result<(), FrameTooLong>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let mut asm = FrameAssembler::new(framing, MAX);
    let mut frames = Vec::new();
    let mut start = 0;
    for end in cuts {
        let chunk = &stream[start..end.max(start)];
        start = end.max(start);
        let result = asm.push(chunk, |f| {
            frames.push(f.to_vec());
            ControlFlow::Continue(())
        });
        // The unfinished frame kept between chunks never outgrows the limit.
        assert!(
            asm.buffered() <= MAX + LENGTH_HEADER,
            "kept {} bytes",
            asm.buffered()
        );
        if result.is_err() {
            return (frames, result);
        }
    }
    (frames, Ok(()))
}

fn line_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        0..=MAX,
    )
}

fn encode_lines(bodies: &[Vec<u8>]) -> Vec<Vec<u8>> {
    bodies
        .iter()
        .map(|b| [b.as_slice(), b"\n"].concat())
        .collect()
}

fn encode_length(bodies: &[Vec<u8>]) -> Vec<Vec<u8>> {
    bodies
        .iter()
        .map(|b| [&(b.len() as u32).to_be_bytes()[..], b].concat())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn line_frames_survive_any_split(
        bodies in prop::collection::vec(line_body(), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let frames = encode_lines(&bodies);
        let (got, end) = decode(Framing::Line, &frames.concat(), &cuts);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn fixed_frames_survive_any_split(
        n in 1..=MAX,
        count in 0..20usize,
        seed in any::<u8>(),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let stream: Vec<u8> = (0..n * count).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let frames: Vec<Vec<u8>> = stream.chunks(n).map(<[u8]>::to_vec).collect();
        let (got, end) = decode(Framing::Fixed(n), &stream, &cuts);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn length_frames_survive_any_split(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=MAX), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let frames = encode_length(&bodies);
        let (got, end) = decode(Framing::LengthPrefixed, &frames.concat(), &cuts);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn oversized_line_fails_after_the_frames_before_it(
        bodies in prop::collection::vec(line_body(), 0..10),
        extra in 1..100usize,
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let frames = encode_lines(&bodies);
        let mut stream = frames.concat();
        stream.extend(vec![b'x'; MAX + extra]);
        stream.extend_from_slice(b"\nafter\n");
        let (got, end) = decode(Framing::Line, &stream, &cuts);
        prop_assert!(end.is_err());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn oversized_length_fails_after_the_frames_before_it(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=MAX), 0..10),
        declared in (MAX as u32 + 1)..=u32::MAX,
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let frames = encode_length(&bodies);
        let mut stream = frames.concat();
        // Only the header of the oversized frame: it must fail without its body.
        stream.extend_from_slice(&declared.to_be_bytes());
        let (got, end) = decode(Framing::LengthPrefixed, &stream, &cuts);
        prop_assert!(end.is_err());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        framing in prop_oneof![Just(Framing::Line), (1..=MAX).prop_map(Framing::Fixed), Just(Framing::LengthPrefixed)],
        stream in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let (got, _) = decode(framing, &stream, &cuts);
        // Every frame delivered is a piece of the input, in order.
        let joined = got.concat();
        prop_assert_eq!(&stream[..joined.len()], &joined[..]);
    }
}

/// A 4 MiB line arriving one byte at a time. With a rescan of the buffered
/// bytes on every arrival this would take ~8·10¹² comparisons and never
/// finish; with the scan offset it is linear.
#[test]
fn huge_line_one_byte_at_a_time_is_linear() {
    let len = 4 << 20;
    let mut asm = FrameAssembler::new(Framing::Line, len);
    let mut frames = 0;
    for _ in 0..len {
        asm.push(b"z", |_| ControlFlow::Continue(())).unwrap();
    }
    asm.push(b"\n", |f| {
        assert_eq!(f.len(), len + 1);
        frames += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(frames, 1);
}
