//! Compression as ClickHouse's HTTP interface speaks it: HTTP content
//! encodings (gzip, deflate, br, zstd, lz4) and ClickHouse's own framed
//! blocks (`compress=1` / `decompress=1`: a CityHash128 checksum, a method
//! byte, sizes, then an LZ4 or ZSTD block), which the Rust crate sends by
//! default. Every decoder stops at a byte limit: a small bomb never becomes
//! a large allocation. The block framing is ours (a few lines, its fields
//! fixed by the wire format); the algorithms are the crates'.

use std::io::Read;

use bytes::Bytes;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unsupported Content-Encoding {0:?} (gzip, deflate, br, zstd, lz4)")]
    Unsupported(String),
    #[error("the body decompresses to more than {0} bytes")]
    TooLarge(usize),
    #[error("the body is not valid {0}: {1}")]
    Corrupt(&'static str, String),
}

/// The encodings we answer in, in the order we prefer them.
const ENCODINGS: &[&str] = &["zstd", "gzip", "br", "deflate", "lz4"];

/// Decodes a request body sent with `Content-Encoding: encoding`. An
/// unencoded body is handed back without a copy.
pub fn decode_content(encoding: &str, body: Bytes, limit: usize) -> Result<Vec<u8>, CodecError> {
    let encoding = encoding.trim().to_ascii_lowercase();
    let body = match encoding.as_str() {
        "" | "identity" if body.len() > limit => return Err(CodecError::TooLarge(limit)),
        "" | "identity" => return Ok(Vec::from(body)),
        _ => body,
    };
    let body = &body[..];
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body)),
        "br" => Box::new(brotli::Decompressor::new(body, 64 << 10)),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| CodecError::Corrupt("zstd", e.to_string()))?,
        ),
        "lz4" => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        other => return Err(CodecError::Unsupported(other.to_string())),
    };
    read_capped(reader, limit, "compressed data")
}

fn read_capped(reader: impl Read, limit: usize, what: &'static str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CodecError::Corrupt(what, e.to_string()))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge(limit));
    }
    Ok(out)
}

/// The encoding to answer in for an `Accept-Encoding` header, if any fits.
pub fn pick_encoding(accept: &str) -> Option<&'static str> {
    let offered: Vec<&str> = accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (!refused).then_some(name)
        })
        .collect();
    ENCODINGS
        .iter()
        .find(|e| offered.iter().any(|o| o.eq_ignore_ascii_case(e)))
        .copied()
}

/// Encodes a response body; `encoding` comes from `pick_encoding`.
pub fn encode_content(encoding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            let mut w = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            w.write_all(data).expect("writing to memory");
            w.finish().expect("writing to memory");
        }
        "deflate" => {
            let mut w = flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
            w.write_all(data).expect("writing to memory");
            w.finish().expect("writing to memory");
        }
        "br" => {
            let mut w = brotli::CompressorWriter::new(&mut out, 64 << 10, 4, 22);
            w.write_all(data).expect("writing to memory");
            drop(w);
        }
        "zstd" => out = zstd::bulk::compress(data, 1).expect("compressing in memory"),
        "lz4" => {
            let mut w = lz4_flex::frame::FrameEncoder::new(&mut out);
            w.write_all(data).expect("writing to memory");
            w.finish().expect("writing to memory");
        }
        _ => out.extend_from_slice(data),
    }
    out
}

const CHECKSUM: usize = 16;
const HEADER: usize = 9;
const METHOD_NONE: u8 = 0x02;
const METHOD_LZ4: u8 = 0x82;
const METHOD_ZSTD: u8 = 0x90;
/// Blocks we write hold at most this much (ClickHouse's default block size).
const BLOCK: usize = 1 << 20;

/// ClickHouse's checksum of a block: CityHash128 (v1.0.2) of the header and
/// the data, halves swapped, little-endian.
fn checksum(block: &[u8]) -> u128 {
    cityhash_rs::cityhash_102_128(block).rotate_right(64)
}

/// Decodes ClickHouse's compressed blocks (`decompress=1`), checking each
/// block's checksum.
pub fn decompress_blocks(mut data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = |why: &str| CodecError::Corrupt("ClickHouse compressed data", why.to_string());
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < CHECKSUM + HEADER {
            return Err(corrupt("a block is cut short"));
        }
        let expected = u128::from_le_bytes(data[..CHECKSUM].try_into().expect("16 bytes"));
        let header = &data[CHECKSUM..CHECKSUM + HEADER];
        let method = header[0];
        let stored = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
        let size = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes")) as usize;
        if stored < HEADER || data.len() < CHECKSUM + stored {
            return Err(corrupt("a block is cut short"));
        }
        let block = &data[CHECKSUM..CHECKSUM + stored];
        if checksum(block) != expected {
            return Err(corrupt("a block's checksum does not match"));
        }
        if out.len() + size > limit {
            return Err(CodecError::TooLarge(limit));
        }
        let payload = &block[HEADER..];
        match method {
            METHOD_LZ4 => {
                let start = out.len();
                out.resize(start + size, 0);
                let n = lz4_flex::block::decompress_into(payload, &mut out[start..])
                    .map_err(|e| corrupt(&e.to_string()))?;
                if n != size {
                    return Err(corrupt("a block's size does not match its header"));
                }
            }
            METHOD_ZSTD => {
                let block =
                    zstd::bulk::decompress(payload, size).map_err(|e| corrupt(&e.to_string()))?;
                out.extend_from_slice(&block);
            }
            METHOD_NONE => out.extend_from_slice(payload),
            other => {
                return Err(corrupt(&format!(
                    "unknown compression method 0x{other:02x}"
                )));
            }
        }
        data = &data[CHECKSUM + stored..];
    }
    Ok(out)
}

/// Encodes `data` as ClickHouse's LZ4 blocks (`compress=1`).
pub fn compress_blocks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    for piece in data.chunks(BLOCK) {
        let packed = lz4_flex::block::compress(piece);
        let start = out.len();
        out.extend_from_slice(&[0; CHECKSUM]);
        out.push(METHOD_LZ4);
        out.extend_from_slice(&((HEADER + packed.len()) as u32).to_le_bytes());
        out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        let sum = checksum(&out[start + CHECKSUM..]);
        out[start..start + CHECKSUM].copy_from_slice(&sum.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_encoding_round_trips() {
        let data = b"{\"a\":1}\n".repeat(1000);
        for e in ENCODINGS {
            let packed = encode_content(e, &data);
            assert!(packed.len() < data.len(), "{e}");
            assert_eq!(
                decode_content(e, packed.into(), 1 << 20).unwrap(),
                data,
                "{e}"
            );
        }
        assert!(matches!(
            decode_content("xz", Bytes::new(), 10),
            Err(CodecError::Unsupported(_))
        ));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 50 << 20];
        for e in ENCODINGS {
            let packed = encode_content(e, &zeros);
            assert!(
                matches!(
                    decode_content(e, packed.into(), 1 << 20),
                    Err(CodecError::TooLarge(_))
                ),
                "{e}"
            );
        }
        let blocks = compress_blocks(&zeros);
        assert!(matches!(
            decompress_blocks(&blocks, 1 << 20),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn clickhouse_blocks_round_trip_and_are_checked() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let blocks = compress_blocks(&data);
        assert_eq!(decompress_blocks(&blocks, 8 << 20).unwrap(), data);
        let mut damaged = blocks.clone();
        damaged[40] ^= 1;
        assert!(matches!(
            decompress_blocks(&damaged, 8 << 20),
            Err(CodecError::Corrupt(..))
        ));
        assert!(decompress_blocks(&blocks[..blocks.len() - 1], 8 << 20).is_err());
    }

    #[test]
    fn the_answer_encoding_follows_the_clients_list() {
        assert_eq!(pick_encoding("gzip, deflate"), Some("gzip"));
        assert_eq!(pick_encoding("lz4,zstd,br,gzip"), Some("zstd"));
        assert_eq!(pick_encoding("br;q=1.0, zstd;q=0"), Some("br"));
        assert_eq!(pick_encoding("identity"), None);
    }
}
