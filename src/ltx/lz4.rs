//! The parts of the LZ4 frame format the codec needs beyond `lz4_flex`: where a frame ends.
//!
//! v2 and v3-frame files store each page as one complete LZ4 frame with no length in front,
//! so the decoder has to walk the frame's structure to find the next page frame:
//!
//! ```text
//! magic (u32 LE 0x184D2204) | FLG | BD | [content size u64] | [dict id u32] | HC
//! { block size u32 LE (bit 31 = stored) | data | [block checksum u32] }*
//! end mark u32 0 | [content checksum u32]
//! ```
//!
//! Decompression itself, with header and content checksum checks, is `lz4_flex`'s.

use std::io::Read;

/// An LZ4 frame's magic number as it appears in the byte stream.
pub const FRAME_MAGIC_LE: [u8; 4] = 0x184D_2204u32.to_le_bytes();

const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_DICT_ID: u8 = 0b0000_0001;
const BLOCK_UNCOMPRESSED_BIT: u32 = 1 << 31;

/// Length in bytes of the LZ4 frame at the start of `bytes`, found by walking its headers and
/// block sizes without decompressing. `None` if the frame is malformed or runs past the input.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    if bytes.get(..4)? != FRAME_MAGIC_LE {
        return None;
    }
    let flg = *bytes.get(4)?;
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return None;
    }
    let mut pos = 6; // magic, FLG, BD
    if flg & FLG_CONTENT_SIZE != 0 {
        pos += 8;
    }
    if flg & FLG_DICT_ID != 0 {
        pos += 4;
    }
    pos += 1; // header checksum
    loop {
        let size = u32::from_le_bytes(*bytes.get(pos..)?.first_chunk()?);
        pos += 4;
        if size == 0 {
            break;
        }
        pos = pos.checked_add((size & !BLOCK_UNCOMPRESSED_BIT) as usize)?;
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            pos += 4;
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        pos += 4;
    }
    (pos <= bytes.len()).then_some(pos)
}

/// Decompresses one complete LZ4 frame that must hold exactly `out.len()` bytes.
pub fn decompress_frame_exact(frame: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut decoder = lz4_flex::frame::FrameDecoder::new(frame);
    decoder.read_exact(out).map_err(|e| format!("LZ4 frame: {e}"))?;
    let mut extra = [0u8; 1];
    match decoder.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("LZ4 frame holds more than {} bytes", out.len())),
        Err(e) => Err(format!("LZ4 frame: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame(data: &[u8], content_checksum: bool, block_checksums: bool) -> Vec<u8> {
        let info =
            lz4_flex::frame::FrameInfo::new().content_checksum(content_checksum).block_checksums(block_checksums);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn frame_len_finds_the_end() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for (cc, bc) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut f = frame(&data, cc, bc);
            let n = f.len();
            f.extend_from_slice(b"next page frame");
            assert_eq!(frame_len(&f), Some(n));
            assert_eq!(frame_len(&f[..n - 1]), None);
            let mut out = vec![0; data.len()];
            decompress_frame_exact(&f[..n], &mut out).unwrap();
            assert_eq!(out, data);
            let mut short = vec![0; data.len() - 1];
            assert!(decompress_frame_exact(&f[..n], &mut short).is_err());
        }
    }
}
