//! Writing a series' new objects as one pack file plus its version-2 index,
//! the format `git index-pack` produces.
//!
//! Why not gix-pack's bundle writer: it takes a pack *stream* and rebuilds
//! everything from it — inflating every entry again to find where it ends,
//! hashing every object again to learn its id, computing each entry's
//! CRC-32 — although the writer of a fresh, undeltified pack knows all of it
//! already. On a 1,000-patch series that second pass was a third of
//! `patchline am`'s time. The index encoder gix-pack has is crate-private,
//! so the (small, fixed) index format is written here; the tests check the
//! result with `git verify-pack` and `git fsck --strict`.

use gix::ObjectId;
use gix::objs::Kind;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One object to pack: its id, kind and (uncompressed) content.
pub type Object<'a> = (&'a ObjectId, Kind, &'a [u8]);

/// Offsets from 2 GiB on go to the index's 64-bit table.
const LARGE_OFFSET: u64 = 0x8000_0000;

/// Packs `objects` (ids already computed, no duplicates) into
/// `<pack_dir>/pack-<checksum>.{pack,idx}`: undeltified entries (a series'
/// objects are new content), deflated on all cores, both files fsynced
/// before the index — which makes the pack visible to readers — is renamed
/// into place, then the directory. Returns the path of the `.pack`.
pub fn write(pack_dir: &Path, objects: &[Object<'_>]) -> std::io::Result<PathBuf> {
    let count = u32::try_from(objects.len())
        .map_err(|_| std::io::Error::other("too many objects for one pack"))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(objects.len().div_ceil(64).max(1));
    let chunk_len = objects.len().div_ceil(threads).max(1);
    let chunks: Vec<std::io::Result<Chunk>> = std::thread::scope(|scope| {
        let handles: Vec<_> = objects
            .chunks(chunk_len)
            .map(|chunk| scope.spawn(move || encode_chunk(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("pack encoder thread panicked")))
            })
            .collect()
    });

    let mut pack = Vec::with_capacity(
        12 + chunks
            .iter()
            .map(|c| c.as_ref().map_or(0, |c| c.data.len()))
            .sum::<usize>()
            + 20,
    );
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    let mut entries: Vec<(&ObjectId, u32, u64)> = Vec::with_capacity(objects.len());
    let mut ids = objects.iter().map(|(id, _, _)| *id);
    for chunk in chunks {
        let chunk = chunk?;
        let base = pack.len() as u64;
        pack.extend_from_slice(&chunk.data);
        for (offset, crc) in chunk.entries {
            let id = ids.next().expect("one entry per object");
            entries.push((id, crc, base + offset));
        }
    }
    let checksum = sha1(&pack)?;
    pack.extend_from_slice(checksum.as_bytes());
    let index = encode_index(&mut entries, &checksum)?;

    std::fs::create_dir_all(pack_dir)?;
    let stem = pack_dir.join(format!("pack-{checksum}"));
    let pack_path = stem.with_extension("pack");
    put_file(pack_dir, &pack, &pack_path)?;
    put_file(pack_dir, &index, &stem.with_extension("idx"))?;
    std::fs::File::open(pack_dir)?.sync_all()?;
    Ok(pack_path)
}

/// The encoded entries of a run of objects, with each entry's offset in
/// `data` and the CRC-32 of its bytes (header and deflated content).
struct Chunk {
    data: Vec<u8>,
    entries: Vec<(u64, u32)>,
}

fn encode_chunk(objects: &[Object<'_>]) -> std::io::Result<Chunk> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut data = Vec::with_capacity(objects.iter().map(|(_, _, d)| d.len() / 2 + 32).sum());
    let mut entries = Vec::with_capacity(objects.len());
    let mut compress = Compress::new(Compression::fast(), true);
    let mut scratch = Vec::new();
    for (_, kind, content) in objects {
        let start = data.len();
        // Entry header: type in bits 4-6 of the first byte, the size in
        // 4 + 7n bits, little-endian groups, high bit = more follows.
        let code: u8 = match kind {
            Kind::Commit => 1,
            Kind::Tree => 2,
            Kind::Blob => 3,
            Kind::Tag => 4,
        };
        let mut size = content.len();
        let mut byte = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            data.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        data.push(byte);
        if content.len() < STORE_BELOW {
            store(content, &mut data);
            entries.push((start as u64, crc32fast::hash(&data[start..])));
            continue;
        }
        // Through a scratch buffer: `compress_vec` initialises all of the
        // spare capacity of the vector it writes to on every call, which on
        // the (large, pre-sized) chunk itself would be quadratic.
        compress.reset();
        scratch.clear();
        scratch.reserve(content.len() + content.len() / 8 + 64);
        loop {
            let consumed = compress.total_in() as usize;
            let status = compress
                .compress_vec(&content[consumed..], &mut scratch, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
            scratch.reserve(scratch.capacity().max(4096));
        }
        data.extend_from_slice(&scratch);
        entries.push((start as u64, crc32fast::hash(&data[start..])));
    }
    Ok(Chunk { data, entries })
}

/// Objects smaller than this are stored in their zlib stream, not
/// deflated: setting a deflate state up for a new stream clears a 128 KiB
/// hash table, which for the small trees and commits of a series costs
/// more than the bytes saved (git's own pack reader takes either; a later
/// `git gc` recompresses them).
const STORE_BELOW: usize = 1024;

/// Appends `content` as a zlib stream of stored (uncompressed) blocks:
/// header, blocks of at most 65,535 bytes, Adler-32 of the content.
fn store(content: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = content.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler2::adler32_slice(content).to_be_bytes());
}

/// The version-2 pack index: magic, version, fan-out table, sorted ids,
/// CRC-32s, 31-bit offsets (high bit: index into the 64-bit table), the
/// 64-bit table, the pack checksum and the index's own checksum.
fn encode_index(
    entries: &mut [(&ObjectId, u32, u64)],
    pack_checksum: &ObjectId,
) -> std::io::Result<Vec<u8>> {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for (id, _, _) in entries.iter() {
        fanout[id.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0u32;
    for slot in fanout {
        total += slot;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for (id, _, _) in entries.iter() {
        out.extend_from_slice(id.as_bytes());
    }
    for (_, crc, _) in entries.iter() {
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for (_, _, offset) in entries.iter() {
        let small = if *offset < LARGE_OFFSET {
            *offset as u32
        } else {
            large.push(*offset);
            0x8000_0000 | (large.len() as u32 - 1)
        };
        out.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum.as_bytes());
    let own = sha1(&out)?;
    out.extend_from_slice(own.as_bytes());
    Ok(out)
}

fn sha1(data: &[u8]) -> std::io::Result<ObjectId> {
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(data);
    hasher.try_finalize().map_err(std::io::Error::other)
}

/// Writes `bytes` to a temporary file in `dir`, makes it read-only, fsyncs
/// it and renames it to `path`: a reader sees the whole file or none.
fn put_file(dir: &Path, bytes: &[u8], path: &Path) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix("tmp_pack_")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Read-only, as git leaves its packs.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o444))?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Lcg, git};
    use std::io::Read;

    fn id_of(kind: Kind, data: &[u8]) -> ObjectId {
        gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).expect("sha1")
    }

    #[test]
    fn stored_streams_inflate_to_their_content() {
        let mut rng = Lcg(7);
        for len in [0usize, 1, 1023, 65_535, 65_536, 200_001] {
            let content: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let mut stream = Vec::new();
            store(&content, &mut stream);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&stream[..])
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert_eq!(back, content, "{len} bytes");
        }
    }

    #[test]
    fn git_reads_every_object_of_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "--bare", "r.git"]);
        let repo = dir.path().join("r.git");
        let mut rng = Lcg(11);
        let big: Vec<u8> = (0..300_000).map(|_| b"abcdefgh\n"[rng.below(9)]).collect();
        let small = b"hello\n".to_vec();
        let tree = {
            let mut t = b"100644 big\0".to_vec();
            t.extend_from_slice(id_of(Kind::Blob, &big).as_bytes());
            t.extend_from_slice(b"100644 small\0");
            t.extend_from_slice(id_of(Kind::Blob, &small).as_bytes());
            t
        };
        let commit = format!(
            "tree {}\nauthor A <a@x> 1700000000 +0000\ncommitter A <a@x> 1700000000 +0000\n\nm\n",
            id_of(Kind::Tree, &tree)
        )
        .into_bytes();
        let empty = Vec::new();
        let contents = [
            (Kind::Blob, big),
            (Kind::Blob, small),
            (Kind::Blob, empty),
            (Kind::Tree, tree),
            (Kind::Commit, commit),
        ];
        let ids: Vec<ObjectId> = contents.iter().map(|(k, d)| id_of(*k, d)).collect();
        let objects: Vec<Object<'_>> = ids
            .iter()
            .zip(&contents)
            .map(|(id, (k, d))| (id, *k, d.as_slice()))
            .collect();
        let pack = write(&repo.join("objects/pack"), &objects).unwrap();
        let idx = pack.with_extension("idx");
        git(&repo, &["verify-pack", idx.to_str().unwrap()]);
        git(&repo, &["fsck", "--strict", "--no-dangling"]);
        for (id, (kind, data)) in ids.iter().zip(&contents) {
            let hex = id.to_string();
            assert_eq!(
                git(&repo, &["cat-file", "-t", &hex]),
                format!("{kind}\n").into_bytes()
            );
            assert_eq!(&git(&repo, &["cat-file", &kind.to_string(), &hex]), data);
        }
    }

    #[test]
    fn offsets_from_2_gib_go_to_the_64_bit_table() {
        let ids: Vec<ObjectId> = (0u8..3).map(|i| id_of(Kind::Blob, &[i])).collect();
        let offsets = [12u64, LARGE_OFFSET, 5 << 32];
        let mut entries: Vec<(&ObjectId, u32, u64)> = ids
            .iter()
            .zip(offsets)
            .map(|(id, offset)| (id, 7, offset))
            .collect();
        let checksum = id_of(Kind::Blob, b"pack");
        let index = encode_index(&mut entries, &checksum).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack-x.idx");
        std::fs::write(&path, index).unwrap();
        let file = gix::odb::pack::index::File::at(&path, gix::hash::Kind::Sha1).unwrap();
        assert_eq!(file.num_objects(), 3);
        for (id, offset) in ids.iter().zip(offsets) {
            let at = file.lookup(id).expect("id in index");
            assert_eq!(file.pack_offset_at_index(at), offset);
            assert_eq!(file.crc32_at_index(at), Some(7));
        }
        file.verify_checksum(&mut gix::progress::Discard, &Default::default())
            .unwrap();
    }
}
