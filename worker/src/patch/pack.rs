//! Writing a series' new objects as one pack file plus its version-2 index,
//! the format `git index-pack` produces.
//!
//! Why not gix-pack's bundle writer: it takes a pack *stream* and rebuilds
//! everything from it — inflating every entry again to find where it ends,
//! hashing every object again to learn its id, computing each entry's
//! CRC-32 — although the writer of a pack of new objects knows all of it
//! already. On a 1,000-patch series that second pass was a third of
//! `patchline am`'s time. The index encoder gix-pack has is crate-private,
//! so the (small, fixed) index format is written here; the tests check the
//! result with `git verify-pack` and `git fsck --strict`.

use gix::ObjectId;
use gix::objs::Kind;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Offsets from 2 GiB on go to the index's 64-bit table.
const LARGE_OFFSET: u64 = 0x8000_0000;

/// Pack entries encoded so far: each object's id, offset (from the start
/// of the pack) and CRC-32, and the temporary file the entries are
/// written to (behind a header not written yet). Only the entries not
/// written yet are held in memory (`pending`): a series' pack is as large
/// as its new objects, memory must stay the size of what one patch
/// touches.
pub struct Entries {
    pending: Vec<u8>,
    /// Bytes of entries in the file, after the header.
    written: u64,
    index: Vec<(ObjectId, u64, u32)>,
    file: tempfile::NamedTempFile,
}

impl Entries {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Encodes a series' new objects into pack entries on a thread of its
/// own while the series is still being applied, and writes them to a
/// temporary file in `pack_dir`: deflating and writing are the largest
/// costs of storing a series and need nothing but the object, so they run
/// on another core in the meantime. Objects are only encoded once
/// `min_objects` have arrived (below that a series is written as loose
/// objects, and no file is made); an id sent twice is encoded once.
pub struct Encoder {
    tx: Option<mpsc::SyncSender<Vec<Object>>>,
    /// Objects not handed over yet: they go in batches, as waking the
    /// thread for every small tree or commit costs more than encoding it.
    batch: RefCell<(Vec<Object>, usize)>,
    thread: Option<std::thread::JoinHandle<std::io::Result<Finished>>>,
    cancel: Arc<AtomicBool>,
}

impl Encoder {
    pub fn start(pack_dir: &Path, min_objects: usize) -> std::io::Result<Self> {
        // Bounded: when the applying thread outruns the encoder, the
        // objects waiting (whole, not yet deflated) would otherwise pile
        // up to most of the series; a full queue makes it wait instead.
        let (tx, rx) = mpsc::sync_channel(QUEUED_BATCHES);
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let dir = pack_dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("pack-encoder".into())
            .spawn(move || encode_all(rx, &dir, min_objects, &stop))?;
        Ok(Self {
            tx: Some(tx),
            batch: RefCell::new((Vec::new(), 0)),
            thread: Some(thread),
            cancel,
        })
    }

    /// Queues one object (blocks while [`QUEUED_BATCHES`] wait).
    pub fn add(&self, object: Object) {
        let mut batch = self.batch.borrow_mut();
        batch.1 += object.data.len();
        batch.0.push(object);
        if batch.0.len() >= BATCH_OBJECTS || batch.1 >= BATCH_BYTES {
            let objects = std::mem::take(&mut batch.0);
            batch.1 = 0;
            self.send(objects);
        }
    }

    fn send(&self, objects: Vec<Object>) {
        if let Some(tx) = &self.tx
            && !objects.is_empty()
        {
            // A send fails only when the thread ended early, with an error
            // that `finish` reports.
            let _ = tx.send(objects);
        }
    }

    /// Waits for the queued objects to be encoded; when fewer than
    /// `min_objects` arrived, gives them back instead.
    pub fn finish(mut self) -> std::io::Result<Finished> {
        let last = std::mem::take(&mut self.batch.borrow_mut().0);
        self.send(last);
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("pack encoder thread panicked")),
            None => Ok(Finished::Few(Vec::new())),
        }
    }
}

impl Drop for Encoder {
    /// A series that failed: the thread stops at its next object and
    /// removes its temporary file before this returns.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An object to pack.
pub struct Object {
    pub id: ObjectId,
    pub kind: Kind,
    pub data: Vec<u8>,
    /// The object as a git delta against another object of the same
    /// series, when its writer knows one (a patched blob against the blob
    /// it was patched from): packed as that, when the base is in the pack
    /// and the chain not too deep.
    pub delta: Option<Delta>,
}

pub struct Delta {
    pub base: ObjectId,
    pub data: Vec<u8>,
}

/// Delta chains are cut (the object stored whole) at git's default
/// `pack.depth`: every step is work for each later read.
const MAX_DELTA_DEPTH: u8 = 50;

/// What an [`Encoder`] made of the objects it was given.
pub enum Finished {
    /// Enough for a pack: its entries, written to a temporary file.
    Pack(Entries),
    /// Fewer than the minimum: the objects themselves, not encoded.
    Few(Vec<Object>),
}

/// Batches handed over and not taken by the encoder thread yet, at most.
const QUEUED_BATCHES: usize = 8;

/// A batch goes to the encoder thread at this many objects or bytes.
const BATCH_OBJECTS: usize = 64;
const BATCH_BYTES: usize = 256 << 10;

/// Entry bytes are handed to the file in pieces of about this size.
const WRITE_EVERY: usize = 256 << 10;

fn encode_all(
    rx: mpsc::Receiver<Vec<Object>>,
    pack_dir: &Path,
    min_objects: usize,
    cancel: &AtomicBool,
) -> std::io::Result<Finished> {
    let mut waiting = Vec::new();
    let mut seen = HashSet::new();
    let mut packer: Option<Packer> = None;
    for object in rx.into_iter().flatten() {
        if cancel.load(Ordering::Relaxed) {
            return Ok(Finished::Few(Vec::new()));
        }
        if !seen.insert(object.id) {
            continue;
        }
        if seen.len() < min_objects {
            waiting.push(object);
            continue;
        }
        let packer = match &mut packer {
            Some(p) => p,
            None => packer.insert(Packer::new(Entries::create(pack_dir)?)),
        };
        for object in waiting.drain(..).chain([object]) {
            packer.place(object)?;
        }
        if packer.entries.pending.len() >= WRITE_EVERY {
            packer.entries.write_pending()?;
        }
    }
    match packer {
        Some(mut packer) => {
            // Deltas whose base never came (it was not new after all): whole.
            while let Some(base) = packer.parked.keys().next().copied() {
                for mut object in packer.parked.remove(&base).unwrap_or_default() {
                    object.delta = None;
                    packer.place(object)?;
                }
            }
            packer.entries.write_pending()?;
            Ok(Finished::Pack(packer.entries))
        }
        None => Ok(Finished::Few(waiting)),
    }
}

/// Places objects in the pack: whole, or as a delta against a base placed
/// already. A delta whose base has not arrived yet waits for it.
struct Packer {
    entries: Entries,
    encoder: EntryEncoder,
    /// Every object placed, with its delta chain depth (0: whole).
    depth: std::collections::HashMap<ObjectId, u8>,
    /// Deltas waiting for their base, by base.
    parked: std::collections::HashMap<ObjectId, Vec<Object>>,
}

impl Packer {
    fn new(entries: Entries) -> Self {
        Self {
            entries,
            encoder: EntryEncoder::new(),
            depth: Default::default(),
            parked: Default::default(),
        }
    }

    fn place(&mut self, object: Object) -> std::io::Result<()> {
        let mut todo = vec![object];
        while let Some(object) = todo.pop() {
            let depth = match &object.delta {
                Some(delta) => match self.depth.get(&delta.base) {
                    Some(&base) if base < MAX_DELTA_DEPTH => {
                        self.encoder.entry(
                            object.id,
                            REF_DELTA,
                            Some(&delta.base),
                            &delta.data,
                            &mut self.entries,
                        )?;
                        base + 1
                    }
                    Some(_) => {
                        self.encoder.whole(&object, &mut self.entries)?;
                        0
                    }
                    None => {
                        self.parked.entry(delta.base).or_default().push(object);
                        continue;
                    }
                },
                None => {
                    self.encoder.whole(&object, &mut self.entries)?;
                    0
                }
            };
            self.depth.insert(object.id, depth);
            if let Some(waiting) = self.parked.remove(&object.id) {
                todo.extend(waiting);
            }
        }
        Ok(())
    }
}

/// The pack entry type of a delta against an object named by id.
const REF_DELTA: u8 = 7;

impl Entries {
    /// A temporary file in `pack_dir`, positioned after the header.
    fn create(pack_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(pack_dir)?;
        let mut file = tempfile::Builder::new()
            .prefix(&temp_prefix("pack"))
            .tempfile_in(pack_dir)?;
        file.write_all(&[0; 12])?;
        Ok(Self {
            pending: Vec::new(),
            written: 0,
            index: Vec::new(),
            file,
        })
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.pending)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        // One large object grew the buffer; the next ones need a fraction.
        if self.pending.capacity() > 4 * WRITE_EVERY {
            self.pending = Vec::new();
        }
        Ok(())
    }
}

/// One deflate state and output buffer, reused for every entry.
struct EntryEncoder {
    compress: flate2::Compress,
    scratch: Vec<u8>,
}

impl EntryEncoder {
    fn new() -> Self {
        Self {
            compress: flate2::Compress::new(flate2::Compression::fast(), true),
            scratch: Vec::new(),
        }
    }

    fn whole(&mut self, object: &Object, entries: &mut Entries) -> std::io::Result<()> {
        let code: u8 = match object.kind {
            Kind::Commit => 1,
            Kind::Tree => 2,
            Kind::Blob => 3,
            Kind::Tag => 4,
        };
        self.entry(object.id, code, None, &object.data, entries)
    }

    /// Appends one entry: header, the base's id for a delta, zlib stream of
    /// `content` (the object, or the delta).
    fn entry(
        &mut self,
        id: ObjectId,
        code: u8,
        base: Option<&ObjectId>,
        content: &[u8],
        entries: &mut Entries,
    ) -> std::io::Result<()> {
        use flate2::{FlushCompress, Status};
        let offset = 12 + entries.written + entries.pending.len() as u64;
        let data = &mut entries.pending;
        let start = data.len();
        // Entry header: type in bits 4-6 of the first byte, the size in
        // 4 + 7n bits, little-endian groups, high bit = more follows.
        let mut size = content.len();
        let mut byte = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            data.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        data.push(byte);
        if let Some(base) = base {
            data.extend_from_slice(base.as_bytes());
        }
        if content.len() < STORE_BELOW {
            store(content, data);
        } else {
            // Through a scratch buffer: `compress_vec` initialises all of
            // the spare capacity of the vector it writes to on every call,
            // which on the growing entry data would be quadratic.
            self.compress.reset();
            self.scratch.clear();
            self.scratch.reserve(content.len() + content.len() / 8 + 64);
            loop {
                let consumed = self.compress.total_in() as usize;
                let status = self
                    .compress
                    .compress_vec(
                        &content[consumed..],
                        &mut self.scratch,
                        FlushCompress::Finish,
                    )
                    .map_err(std::io::Error::other)?;
                if status == Status::StreamEnd {
                    break;
                }
                self.scratch.reserve(self.scratch.capacity().max(4096));
            }
            data.extend_from_slice(&self.scratch);
        }
        let crc = crc32fast::hash(&data[start..]);
        entries.index.push((id, offset, crc));
        Ok(())
    }
}

/// Writes `entries` as `<pack_dir>/pack-<checksum>.{pack,idx}`: both files
/// fsynced before the index — which makes the pack visible to readers — is
/// renamed into place, then the directory. Returns the `.pack`'s path.
pub fn write(pack_dir: &Path, mut entries: Entries) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    let count = u32::try_from(entries.len())
        .map_err(|_| std::io::Error::other("too many objects for one pack"))?;
    entries.write_pending()?;
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    let mut file = entries.file;
    file.as_file().write_all_at(&header, 0)?;
    // The checksum covers the header, known only now, and every entry:
    // they are read back (from the page cache) rather than kept.
    let checksum = file_checksum(file.as_file(), 12 + entries.written)?;
    let index = encode_index(&mut entries.index, &checksum);

    let stem = pack_dir.join(format!("pack-{checksum}"));
    let pack_path = stem.with_extension("pack");
    file.write_all(checksum.as_bytes())?;
    finish_file(file, &pack_path)?;
    let mut file = tempfile::Builder::new()
        .prefix(&temp_prefix("idx"))
        .tempfile_in(pack_dir)?;
    file.write_all(&index)?;
    finish_file(file, &stem.with_extension("idx"))?;
    std::fs::File::open(pack_dir)?.sync_all()?;
    Ok(pack_path)
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

/// Encodes `result` — pieces that are either slices of `base` itself or
/// other bytes — as a git delta against `base`: sizes, then copy
/// instructions for runs of `base` (contiguous pieces merged, at most
/// 64 KiB each) and insert instructions (at most 127 bytes each) for the
/// rest.
pub fn delta(base: &[u8], result: &[&[u8]]) -> Vec<u8> {
    fn size(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
        while len > 0 {
            let step = len.min(0x10000);
            let mut op = 0x80u8;
            let mut args = Vec::with_capacity(7);
            for i in 0..4 {
                let byte = (offset >> (8 * i)) as u8;
                if byte != 0 {
                    op |= 1 << i;
                    args.push(byte);
                }
            }
            // A size of 0x10000 is written as no size bytes at all.
            let size = if step == 0x10000 { 0 } else { step };
            for i in 0..3 {
                let byte = (size >> (8 * i)) as u8;
                if byte != 0 {
                    op |= 0x10 << i;
                    args.push(byte);
                }
            }
            out.push(op);
            out.extend_from_slice(&args);
            offset += step;
            len -= step;
        }
    }
    fn insert(out: &mut Vec<u8>, bytes: &[u8]) {
        for chunk in bytes.chunks(0x7f) {
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
    }
    let mut out = Vec::new();
    size(&mut out, base.len());
    size(&mut out, result.iter().map(|p| p.len()).sum());
    let range = base.as_ptr_range();
    let (mut run_start, mut run_len) = (0usize, 0usize);
    let mut pending: Vec<u8> = Vec::new();
    for piece in result.iter().filter(|p| !p.is_empty()) {
        let inside = range.contains(&piece.as_ptr())
            && piece.as_ptr() as usize + piece.len() <= range.end as usize;
        if inside {
            let offset = piece.as_ptr() as usize - range.start as usize;
            if run_len > 0 && run_start + run_len == offset {
                run_len += piece.len();
                continue;
            }
            insert(&mut out, &pending);
            pending.clear();
            copy(&mut out, run_start, run_len);
            (run_start, run_len) = (offset, piece.len());
        } else {
            copy(&mut out, run_start, run_len);
            run_len = 0;
            pending.extend_from_slice(piece);
        }
    }
    insert(&mut out, &pending);
    copy(&mut out, run_start, run_len);
    out
}

/// The version-2 pack index: magic, version, fan-out table, sorted ids,
/// CRC-32s, 31-bit offsets (high bit: index into the 64-bit table), the
/// 64-bit table, the pack checksum and the index's own checksum.
fn encode_index(entries: &mut [(ObjectId, u64, u32)], pack_checksum: &ObjectId) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.0);
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
    for (_, _, crc) in entries.iter() {
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for (_, offset, _) in entries.iter() {
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
    let own = checksum(&[&out]);
    out.extend_from_slice(own.as_bytes());
    out
}

/// The trailing checksum of a pack or index file. It guards against
/// corruption, not forgery: plain SHA-1, as git (2.47 on) uses for it, not
/// the collision-detecting kind object ids need.
fn checksum(parts: &[&[u8]]) -> ObjectId {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    ObjectId::from_bytes_or_panic(&hasher.finalize())
}

/// [`checksum`] of the first `len` bytes of `file`.
fn file_checksum(file: &std::fs::File, len: u64) -> std::io::Result<ObjectId> {
    use sha1::Digest;
    use std::os::unix::fs::FileExt;
    let mut hasher = sha1::Sha1::new();
    let mut buf = vec![0; (1 << 20).min(len as usize)];
    let mut at = 0;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the pack file is shorter than what was written to it",
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(ObjectId::from_bytes_or_panic(&hasher.finalize()))
}

/// The start of the name of a temporary file this process writes:
/// `.tmp-<pid>-<what>-`. The pid tells a later process whether the writer
/// is gone (its file is stale) or still writing; git's own temporary files
/// (`tmp_pack_*`, `tmp_obj_*`) never start with a dot, so they are never
/// taken for ours.
pub fn temp_prefix(what: &str) -> String {
    format!(".tmp-{}-{what}-", std::process::id())
}

/// Whether `name` is a temporary file (`.tmp-<pid>-…`) of a patchline
/// process that is gone — killed before it could rename the file into
/// place. This process's own, and a live one's (another run, a `serve`
/// worker's other thread), are still being written.
pub fn is_stale_temp(name: &std::ffi::OsStr) -> bool {
    let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the stale temporary files patchline left in `dir` (see
/// `is_stale_temp`); a missing `dir` has none. Returns how many it removed.
pub fn remove_stale_temps_in(dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if is_stale_temp(&entry.file_name()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Another process cleaning up at the same time took it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Removes the temporary loose objects (`objects/xx/.tmp-*`) and packs
/// (`objects/pack/.tmp-*`) killed patchline processes left in the
/// repository `git_dir`: `git fsck` reports them as bad objects. Returns
/// how many it removed.
pub fn remove_stale_temp_objects(git_dir: &Path) -> std::io::Result<usize> {
    // A work tree's repository is in its `.git`.
    let dot_git = git_dir.join(".git");
    let objects = if dot_git.is_dir() {
        dot_git
    } else {
        git_dir.to_owned()
    }
    .join("objects");
    let entries = match std::fs::read_dir(&objects) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let fanout = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if fanout || name == "pack" {
            removed += remove_stale_temps_in(&entry.path())?;
        }
    }
    Ok(removed)
}

/// Makes a written temporary file read-only, fsyncs it and renames it to
/// `path`: a reader sees the whole file or none.
fn finish_file(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
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

    #[test]
    fn only_temp_files_of_gone_patchline_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let gone_pid = crate::testkit::gone_pid();
        let stale = [
            format!("ab/.tmp-{gone_pid}-obj-cdef"),
            format!("pack/.tmp-{gone_pid}-pack-x1y2z3"),
        ];
        let kept = [
            // This process is still writing it.
            format!("ab/{}cdef", temp_prefix("obj")),
            // git's own, and objects.
            "pack/tmp_pack_a1b2c3".to_owned(),
            "ab/cdef0123".to_owned(),
            // Not a fan-out directory.
            format!("info/.tmp-{gone_pid}-x"),
        ];
        for name in stale.iter().chain(&kept) {
            let path = objects.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"half").unwrap();
        }
        assert_eq!(remove_stale_temp_objects(dir.path()).unwrap(), 2);
        for name in &stale {
            assert!(!objects.join(name).exists(), "{name}");
        }
        for name in &kept {
            assert!(objects.join(name).exists(), "{name}");
        }
        assert_eq!(
            remove_stale_temp_objects(&dir.path().join("none")).unwrap(),
            0
        );
    }

    fn id_of(kind: Kind, data: &[u8]) -> ObjectId {
        gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).expect("sha1")
    }

    fn object(id: ObjectId, kind: Kind, data: &[u8]) -> Object {
        Object {
            id,
            kind,
            data: data.to_vec(),
            delta: None,
        }
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
        let encoder = Encoder::start(&repo.join("objects/pack"), contents.len()).unwrap();
        for (id, (kind, data)) in ids.iter().zip(&contents) {
            encoder.add(object(*id, *kind, data));
        }
        // Sent twice, packed once.
        encoder.add(object(ids[1], Kind::Blob, &contents[1].1));
        let Finished::Pack(entries) = encoder.finish().unwrap() else {
            panic!("enough objects for a pack");
        };
        assert_eq!(entries.len(), contents.len());
        let pack = write(&repo.join("objects/pack"), entries).unwrap();
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
    fn deltas_rebuild_the_result() {
        let mut rng = Lcg(3);
        for round in 0..200 {
            let base: Vec<u8> = (0..rng.below(200_000))
                .map(|_| b"ab\n"[rng.below(3)])
                .collect();
            let fresh: Vec<u8> = (0..1000).map(|_| rng.below(256) as u8).collect();
            let mut pieces: Vec<&[u8]> = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(2) == 0 && !base.is_empty() {
                    // Runs of the base, often contiguous with the last one.
                    let at = rng.below(base.len());
                    let len = rng.below((base.len() - at).min(150_000) + 1);
                    pieces.push(&base[at..at + len]);
                } else {
                    let at = rng.below(fresh.len());
                    pieces.push(&fresh[at..at + rng.below(fresh.len() - at + 1)]);
                }
            }
            let delta = delta(&base, &pieces);
            let rebuilt = crate::patch::parse::apply_delta(&base, &delta)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(rebuilt, pieces.concat(), "round {round}");
        }
    }

    #[test]
    fn fewer_objects_than_the_minimum_give_none() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = Encoder::start(dir.path(), 3).unwrap();
        for content in [&b"a"[..], b"b", b"a"] {
            encoder.add(object(id_of(Kind::Blob, content), Kind::Blob, content));
        }
        let Finished::Few(back) = encoder.finish().unwrap() else {
            panic!("too few objects for a pack");
        };
        assert_eq!(back.len(), 2, "each id once");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file made"
        );
    }

    #[test]
    fn a_dropped_encoder_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = Encoder::start(dir.path(), 2).unwrap();
        // A full batch reaches the thread, which starts the pack file.
        for i in 0..BATCH_OBJECTS as u32 {
            let content = i.to_le_bytes();
            encoder.add(object(id_of(Kind::Blob, &content), Kind::Blob, &content));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_dir(dir.path()).unwrap().count() == 0 {
            assert!(std::time::Instant::now() < deadline, "no pack file started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(encoder);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn offsets_from_2_gib_go_to_the_64_bit_table() {
        let ids: Vec<ObjectId> = (0u8..3).map(|i| id_of(Kind::Blob, &[i])).collect();
        let offsets = [12u64, LARGE_OFFSET, 5 << 32];
        let mut entries: Vec<(ObjectId, u64, u32)> = ids
            .iter()
            .zip(offsets)
            .map(|(id, offset)| (*id, offset, 7))
            .collect();
        let checksum = id_of(Kind::Blob, b"pack");
        let index = encode_index(&mut entries, &checksum);
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
