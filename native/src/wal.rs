//! The write-ahead log's checksum: CRC-32C (Castagnoli), with the CPU's CRC
//! instructions where it has them (SSE 4.2 on x86-64, the CRC extension on arm64).
//!
//! A record's checksum covers its body: the body header, then each frame as its
//! length (u32, little-endian) followed by its bytes (pipelines/wal/format.py).

/// The CRC-32C of `data`, continuing from `crc` (0 to start).
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The checksum of one record body: `head`, then every frame with its length prefix.
///
/// Fails when a frame is 4 GiB or more (its length does not fit the u32 prefix).
pub fn record_crc<'a>(
    head: &[u8],
    frames: impl IntoIterator<Item = &'a [u8]>,
) -> Result<u32, usize> {
    let mut crc = crc32c(0, head);
    for frame in frames {
        let length = u32::try_from(frame.len()).map_err(|_| frame.len())?;
        crc = crc32c(crc, &length.to_le_bytes());
        crc = crc32c(crc, frame);
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // RFC 3720, B.4: 32 bytes of zeros, and the ASCII digits.
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn continues_across_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = data.split_at(3_333);
        assert_eq!(crc32c(crc32c(0, a), b), crc32c(0, &data));
    }

    #[test]
    fn record_crc_is_the_crc_of_the_body() {
        let head = [1u8, 2, 3];
        let frames: [&[u8]; 2] = [b"topic", b""];
        let mut body = head.to_vec();
        for frame in frames {
            body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            body.extend_from_slice(frame);
        }
        assert_eq!(record_crc(&head, frames), Ok(crc32c(0, &body)));
    }
}
