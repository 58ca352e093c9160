//! The write-ahead log: what makes a 202 mean "durable".
//!
//! Accepted rows are appended here and fsynced before the client hears back.
//! One writer thread owns the files; concurrent appends that arrive while it
//! syncs are written together and share the next fsync (group commit).
//!
//! Three kinds of record, each framed as `[len u32][crc32 u32][lsn u64][kind u8][body]`:
//! - `Rows`: a request's accepted rows for one table (JSONEachRow bytes);
//! - `Seal`: these `Rows` records form one batch. Its LSN is the batch's
//!   identity: the insert goes out with a deduplication token made of the
//!   log's epoch and that LSN, so a retry, or a replay after a crash, is the
//!   same batch and ClickHouse keeps it once;
//! - `Done`: storage confirmed that batch.
//!
//! Segments are deleted, oldest first, once nothing in them is pending. On
//! start the log is read back: sealed batches without `Done` are inserted
//! again with their tokens, unsealed rows go back into the buffers. A torn
//! or corrupt tail (power loss mid-write) is cut at the last good record.
//!
//! An LSN is never issued twice under one epoch, even when every segment is
//! gone (all confirmed, deleted by hand, or set aside as corrupt): the file
//! `lsn_floor` holds a bound above every LSN issued, reserved in blocks so it
//! costs one extra fsync per [`FLOOR_BLOCK`] records. Reusing an LSN would
//! reuse a deduplication token, and storage would silently drop the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::files::{private_append, private_dir, private_file};
use crate::model::Table;

/// Log sequence number: every record's position, never reused.
pub type Lsn = u64;

const HEADER: usize = 4 + 4;
/// A frame larger than this is corruption, not data (requests are far smaller).
const MAX_FRAME: usize = 1 << 30;
/// How much one group commit gathers at most before it writes.
const GROUP_BYTES: usize = 8 << 20;
/// LSNs reserved at a time in `lsn_floor`.
pub const FLOOR_BLOCK: Lsn = 1 << 16;
const FLOOR_FILE: &str = "lsn_floor";
const EPOCH_FILE: &str = "epoch";
const CORRUPT_DIR: &str = "corrupt";

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Rows {
        table: Table,
        count: u32,
        rows: Bytes,
    },
    Seal {
        table: Table,
        lsns: Vec<Lsn>,
    },
    Done {
        seal: Lsn,
    },
}

impl Record {
    /// `Done` needs no fsync: if it is lost, the replayed batch carries the
    /// same token and storage drops it as a duplicate.
    fn durable(&self) -> bool {
        !matches!(self, Record::Done { .. })
    }

    fn encode(&self, lsn: Lsn, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.extend_from_slice(&lsn.to_le_bytes());
        match self {
            Record::Rows { table, count, rows } => {
                out.push(1);
                out.push(table_code(*table));
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(rows);
            }
            Record::Seal { table, lsns } => {
                out.push(2);
                out.push(table_code(*table));
                out.extend_from_slice(&(lsns.len() as u32).to_le_bytes());
                for l in lsns {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
            Record::Done { seal } => {
                out.push(3);
                out.extend_from_slice(&seal.to_le_bytes());
            }
        }
        let payload = &out[start + HEADER..];
        let len = payload.len() as u32;
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(payload: &[u8]) -> Option<(Lsn, Record)> {
        let lsn = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let body = payload.get(9..)?;
        let u32_at = |b: &[u8], i: usize| {
            b.get(i..i + 4)
                .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        };
        let record = match payload.get(8)? {
            1 => Record::Rows {
                table: table_from(*body.first()?)?,
                count: u32_at(body, 1)?,
                rows: Bytes::copy_from_slice(body.get(5..)?),
            },
            2 => {
                let n = u32_at(body, 1)? as usize;
                let lsns = body
                    .get(5..5 + n * 8)?
                    .chunks(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Record::Seal {
                    table: table_from(*body.first()?)?,
                    lsns,
                }
            }
            3 => Record::Done {
                seal: u64::from_le_bytes(body.get(..8)?.try_into().ok()?),
            },
            _ => return None,
        };
        Some((lsn, record))
    }
}

fn table_code(t: Table) -> u8 {
    match t {
        Table::Events => 1,
        Table::PageViews => 2,
        Table::TicketSales => 3,
        Table::RejectedEvents => 4,
        Table::PluginQuarantine => 5,
        Table::FilteredTraffic => 6,
        Table::PageEngagements => 7,
        Table::Visits => 8,
        Table::FilteredEvents => 9,
    }
}

fn table_from(code: u8) -> Option<Table> {
    Table::ALL.into_iter().find(|t| table_code(*t) == code)
}

/// What a restart finds in the log and must finish.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Batches sealed but not confirmed: insert again, same token.
    pub sealed: Vec<RecoveredBatch>,
    /// Rows never sealed: back into the buffers.
    pub unsealed: Vec<(Lsn, Table, u32, Bytes)>,
    /// Every `Rows` record still in the log, confirmed or not: the events a
    /// client may resend because the crash ate its 202.
    pub logged: Vec<(Table, Bytes)>,
}

#[derive(Debug)]
pub struct RecoveredBatch {
    pub seal: Lsn,
    pub table: Table,
    pub lsns: Vec<Lsn>,
    pub count: usize,
    pub rows: Bytes,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

enum Op {
    Append(Record, oneshot::Sender<io::Result<Lsn>>),
}

pub struct Wal {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    live_bytes: Arc<AtomicU64>,
    max_bytes: u64,
    /// Random per log directory; part of every deduplication token, so a
    /// fresh log directory never reuses the tokens of an old one.
    pub epoch: String,
}

impl Wal {
    /// Opens (or creates) the log, reads back what was pending, and starts
    /// the writer thread.
    pub fn open(cfg: &WalConfig) -> io::Result<(Wal, Recovered)> {
        private_dir(&cfg.dir)?;
        let floor = read_floor(&cfg.dir)?;
        let epoch_file = cfg.dir.join(EPOCH_FILE);
        let epoch = match std::fs::read_to_string(&epoch_file) {
            // Without a floor the epoch is kept only for a log written before
            // floors existed, whose segments still show its highest LSN.
            // Otherwise nothing bounds the LSNs already issued: a new epoch
            // gives new tokens.
            Ok(e) if !e.trim().is_empty() && (floor.is_some() || has_segments(&cfg.dir)?) => {
                e.trim().to_string()
            }
            _ => {
                let e = uuid::Uuid::new_v4().simple().to_string();
                write_durably(&epoch_file, e.as_bytes())?;
                e
            }
        };
        let (writer, recovered) = Writer::recover(cfg, floor.unwrap_or(0))?;
        let live_bytes = writer.live_bytes.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx))?;
        let wal = Wal {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            live_bytes,
            max_bytes: cfg.max_bytes,
            epoch,
        };
        Ok((wal, recovered))
    }

    /// Appends a record; for `Rows` and `Seal`, returns once it is on disk.
    pub async fn append(&self, record: Record) -> io::Result<Lsn> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.tx.lock().unwrap().as_ref() {
            Some(tx) => tx.send(Op::Append(record, reply)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(io::Error::other("the write-ahead log is closed"));
        }
        rx.await
            .map_err(|_| io::Error::other("the write-ahead log writer stopped"))?
    }

    /// Bytes of log on disk: everything not yet confirmed by storage.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Whether `more` bytes would push the log past its cap.
    pub fn is_full(&self, more: u64) -> bool {
        self.live_bytes() + more > self.max_bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Stops the writer after what was already queued.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

struct Segment {
    first: Lsn,
    path: PathBuf,
    bytes: u64,
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    file: File,
    next_lsn: Lsn,
    /// Rows and Seal records not yet confirmed.
    pending: BTreeSet<Lsn>,
    /// Seal → the Rows records it holds.
    seals: HashMap<Lsn, Vec<Lsn>>,
    live_bytes: Arc<AtomicU64>,
    /// Set by the first write error; see `run`.
    failed: bool,
    /// Every LSN issued is below this; it is on disk before any LSN reaches it.
    floor: Lsn,
}

fn segment_name(first: Lsn) -> String {
    format!("{first:020}.wal")
}

/// Replaces a small file atomically (a temporary file renamed over it) and
/// fsyncs it and its directory: a crash leaves the old content or the new.
fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = private_file(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The persisted LSN floor; `None` when the file is absent. An unreadable one
/// stops the start: guessing could reuse tokens.
fn read_floor(dir: &Path) -> io::Result<Option<Lsn>> {
    let path = dir.join(FLOOR_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a number ({text:?}); it bounds the log's sequence numbers. \
                     Move the whole log directory aside to start a new log",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first LSN of each segment file in `dir`, unordered; none when `dir`
/// does not exist.
fn segments_in(dir: &Path) -> io::Result<Vec<Lsn>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".wal")?
                .parse::<Lsn>()
                .ok()
        })
        .collect())
}

/// Segments in the log directory, and those set aside in `corrupt/`.
fn all_segments(dir: &Path) -> io::Result<(Vec<Lsn>, Vec<Lsn>)> {
    Ok((segments_in(dir)?, segments_in(&dir.join(CORRUPT_DIR))?))
}

/// Whether any segment remains, live or set aside.
fn has_segments(dir: &Path) -> io::Result<bool> {
    let (live, aside) = all_segments(dir)?;
    Ok(!live.is_empty() || !aside.is_empty())
}

/// Writes the floor durably: every LSN issued stays below it.
fn write_floor(dir: &Path, floor: Lsn) -> io::Result<()> {
    write_durably(&dir.join(FLOOR_FILE), floor.to_string().as_bytes())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Writer {
    fn recover(cfg: &WalConfig, floor: Lsn) -> io::Result<(Writer, Recovered)> {
        let (mut firsts, aside) = all_segments(&cfg.dir)?;
        firsts.sort_unstable();
        // Segments set aside earlier count for the high-water mark too.
        let highest_first = firsts.iter().chain(&aside).copied().max().unwrap_or(0);

        let mut rows: BTreeMap<Lsn, (Table, u32, Bytes)> = BTreeMap::new();
        let mut seals: BTreeMap<Lsn, (Table, Vec<Lsn>)> = BTreeMap::new();
        let mut done: HashSet<Lsn> = HashSet::new();
        let mut segments = VecDeque::new();
        let mut last_lsn = 0;
        let mut cut = false;
        for first in firsts {
            let path = cfg.dir.join(segment_name(first));
            if cut {
                // Everything after a cut is suspect: set aside, never deleted.
                let aside = cfg.dir.join(CORRUPT_DIR);
                private_dir(&aside)?;
                std::fs::rename(&path, aside.join(segment_name(first)))?;
                tracing::error!(segment = %path.display(), "write-ahead log segment after a corrupt record set aside in corrupt/");
                continue;
            }
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            let mut offset = 0;
            while offset < data.len() {
                match frame_at(&data, offset) {
                    Some((lsn, record, next)) if lsn > last_lsn => {
                        last_lsn = lsn;
                        offset = next;
                        match record {
                            Record::Rows {
                                table,
                                count,
                                rows: r,
                            } => {
                                rows.insert(lsn, (table, count, r));
                            }
                            Record::Seal { table, lsns } => {
                                seals.insert(lsn, (table, lsns));
                            }
                            Record::Done { seal } => {
                                done.insert(seal);
                            }
                        }
                    }
                    _ => {
                        tracing::warn!(
                            segment = %path.display(),
                            offset,
                            dropped_bytes = data.len() - offset,
                            "write-ahead log has a torn or corrupt record; cutting it at the last good record"
                        );
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(offset as u64)?;
                        f.sync_all()?;
                        cut = true;
                        break;
                    }
                }
            }
            let bytes = if cut {
                offset as u64
            } else {
                data.len() as u64
            };
            segments.push_back(Segment { first, path, bytes });
        }

        let mut recovered = Recovered {
            logged: rows.values().map(|(t, _, r)| (*t, r.clone())).collect(),
            ..Recovered::default()
        };
        let mut pending = BTreeSet::new();
        let mut seal_map = HashMap::new();
        let mut sealed_rows = HashSet::new();
        for (seal, (table, lsns)) in &seals {
            if done.contains(seal) {
                sealed_rows.extend(lsns.iter().copied());
                continue;
            }
            let mut batch_rows = Vec::new();
            let mut count = 0;
            for l in lsns {
                sealed_rows.insert(*l);
                match rows.get(l) {
                    Some((_, c, r)) => {
                        batch_rows.extend_from_slice(r);
                        count += *c as usize;
                    }
                    None => tracing::error!(
                        seal,
                        lsn = l,
                        "sealed batch refers to a record the log no longer has"
                    ),
                }
            }
            pending.insert(*seal);
            pending.extend(lsns.iter().copied());
            seal_map.insert(*seal, lsns.clone());
            recovered.sealed.push(RecoveredBatch {
                seal: *seal,
                table: *table,
                lsns: lsns.clone(),
                count,
                rows: batch_rows.into(),
            });
        }
        for (lsn, (table, count, r)) in rows {
            if !sealed_rows.contains(&lsn) {
                pending.insert(lsn);
                recovered.unsealed.push((lsn, table, count, r));
            }
        }

        // Above every LSN this log may ever have issued: the records read, the
        // segments' names (an empty or set-aside one), and the floor, which
        // also covers records cut from a corrupt tail.
        let next_lsn = (last_lsn + 1).max(highest_first).max(floor).max(1);
        // Reserve the next block before anything is issued.
        let floor = next_lsn + FLOOR_BLOCK;
        write_floor(&cfg.dir, floor)?;
        // Appends always go to a fresh segment after a restart: the old tail
        // may have been cut, and a new file keeps that reasoning simple.
        let path = cfg.dir.join(segment_name(next_lsn));
        let file = private_append(&path)?;
        sync_dir(&cfg.dir)?;
        segments.push_back(Segment {
            first: next_lsn,
            path,
            bytes: 0,
        });
        let live = segments.iter().map(|s| s.bytes).sum();
        let mut writer = Writer {
            dir: cfg.dir.clone(),
            segment_bytes: cfg.segment_bytes,
            segments,
            file,
            next_lsn,
            pending,
            seals: seal_map,
            live_bytes: Arc::new(AtomicU64::new(live)),
            failed: false,
            floor,
        };
        writer.drop_resolved_segments();
        if !recovered.sealed.is_empty() || !recovered.unsealed.is_empty() {
            tracing::info!(
                sealed_batches = recovered.sealed.len(),
                unsealed_records = recovered.unsealed.len(),
                "write-ahead log replay: unconfirmed rows will be inserted again"
            );
        }
        Ok((writer, recovered))
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut size = 0;
            while size < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        let Op::Append(Record::Rows { rows, .. }, _) = &op else {
                            group.push(op);
                            continue;
                        };
                        size += rows.len();
                        group.push(op);
                    }
                    Err(_) => break,
                }
            }
            // After a failed write or fsync the file's tail is unknown, and
            // appending past it could hide later records behind garbage on
            // replay. So the log stops taking writes (ingest answers 503)
            // until an operator looks and restarts.
            let result = if self.failed {
                Err(io::Error::other(
                    "the write-ahead log failed earlier and takes no more writes",
                ))
            } else {
                self.write_group(&group)
            };
            match result {
                Ok(lsns) => {
                    for (Op::Append(_, reply), lsn) in group.into_iter().zip(lsns) {
                        let _ = reply.send(Ok(lsn));
                    }
                }
                Err(e) => {
                    if !self.failed {
                        tracing::error!(error = %e, "write-ahead log write failed; refusing further writes");
                    }
                    self.failed = true;
                    for Op::Append(_, reply) in group {
                        let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
        let _ = self.file.sync_data();
    }

    /// Writes a group with one write and at most one fsync; returns each
    /// record's LSN.
    fn write_group(&mut self, group: &[Op]) -> io::Result<Vec<Lsn>> {
        let mut buf = Vec::new();
        let mut lsns = Vec::with_capacity(group.len());
        let mut durable = false;
        let last = self.next_lsn + group.len() as Lsn;
        if last >= self.floor {
            let floor = last + FLOOR_BLOCK;
            write_floor(&self.dir, floor)?;
            self.floor = floor;
        }
        for Op::Append(record, _) in group {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            record.encode(lsn, &mut buf);
            durable |= record.durable();
            lsns.push(lsn);
        }
        self.file.write_all(&buf)?;
        if durable {
            // Fault injection: a slow disk (`wal::fsync=return(200)` sleeps 200 ms).
            if let Some(ms) = fail::eval("wal::fsync", |arg| {
                arg.and_then(|a| a.parse().ok()).unwrap_or(100u64)
            }) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            self.file.sync_data()?;
        }
        let seg = self.segments.back_mut().expect("an active segment");
        seg.bytes += buf.len() as u64;
        self.live_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);

        let mut resolved = false;
        for (Op::Append(record, _), lsn) in group.iter().zip(&lsns) {
            match record {
                Record::Rows { .. } => {
                    self.pending.insert(*lsn);
                }
                Record::Seal { lsns: rows, .. } => {
                    self.pending.insert(*lsn);
                    self.seals.insert(*lsn, rows.clone());
                }
                Record::Done { seal } => {
                    self.pending.remove(seal);
                    for l in self.seals.remove(seal).unwrap_or_default() {
                        self.pending.remove(&l);
                    }
                    resolved = true;
                }
            }
        }
        if self.segments.back().unwrap().bytes >= self.segment_bytes {
            self.rotate()?;
        }
        if resolved {
            self.drop_resolved_segments();
        }
        Ok(lsns)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let path = self.dir.join(segment_name(self.next_lsn));
        self.file = private_append(&path)?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            first: self.next_lsn,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes closed segments, oldest first, that hold nothing pending.
    fn drop_resolved_segments(&mut self) {
        let oldest_pending = self.pending.first().copied().unwrap_or(self.next_lsn);
        while self.segments.len() > 1 && self.segments[1].first <= oldest_pending {
            let seg = self.segments.pop_front().unwrap();
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {
                    self.live_bytes.fetch_sub(seg.bytes, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "could not delete a checkpointed log segment");
                    self.segments.push_front(seg);
                    break;
                }
            }
        }
    }
}

/// The record at `offset`, and where the next one starts; `None` when the
/// bytes there are not a whole, intact record.
fn frame_at(data: &[u8], offset: usize) -> Option<(Lsn, Record, usize)> {
    let header = data.get(offset..offset + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len > MAX_FRAME {
        return None;
    }
    let payload = data.get(offset + HEADER..offset + HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let (lsn, record) = Record::decode(payload)?;
    Some((lsn, record, offset + HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 300,
            max_bytes: 1 << 20,
        }
    }

    fn rows(n: u32) -> Record {
        Record::Rows {
            table: Table::Events,
            count: n,
            rows: Bytes::from(format!("{{\"n\":{n}}}\n")),
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_replay_finds_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, rec) = Wal::open(&cfg(dir.path())).unwrap();
            assert!(rec.sealed.is_empty() && rec.unsealed.is_empty());
            let a = wal.append(rows(1)).await.unwrap();
            let b = wal.append(rows(2)).await.unwrap();
            let c = wal.append(rows(3)).await.unwrap();
            let s1 = seal(&wal, vec![a]).await;
            let s2 = seal(&wal, vec![b]).await;
            wal.append(Record::Done { seal: s1 }).await.unwrap();
            assert_eq!((a, b, c, s2), (1, 2, 3, 5));
            wal.close();
        }
        let (wal, rec) = Wal::open(&cfg(dir.path())).unwrap();
        assert_eq!(rec.sealed.len(), 1);
        assert_eq!(rec.sealed[0].seal, 5);
        assert_eq!(rec.sealed[0].lsns, vec![2]);
        assert_eq!(&rec.sealed[0].rows[..], b"{\"n\":2}\n");
        assert_eq!(rec.unsealed.len(), 1);
        assert_eq!(rec.unsealed[0].0, 3);
        // LSNs go on after the old ones, never reused.
        assert!(wal.append(rows(4)).await.unwrap() > 6);
    }

    /// The segment that holds the records (not the fresh empty one).
    fn written_segment(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "wal") && std::fs::metadata(p).unwrap().len() > 0
            })
            .unwrap()
    }

    async fn seal(wal: &Wal, lsns: Vec<Lsn>) -> Lsn {
        wal.append(Record::Seal {
            table: Table::Events,
            lsns,
        })
        .await
        .unwrap()
    }

    /// Appends a batch (rows, seal) and confirms it; returns the seal's LSN.
    async fn stored_batch(wal: &Wal) -> Lsn {
        let r = wal.append(rows(1)).await.unwrap();
        let seal = seal(wal, vec![r]).await;
        wal.append(Record::Done { seal }).await.unwrap();
        seal
    }

    fn epoch(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(EPOCH_FILE)).unwrap()
    }

    /// The sequence that lost an event: batch A stored and confirmed, a
    /// restart with no traffic (its segments all deleted), another restart,
    /// then batch B. B must not get A's identity.
    #[tokio::test]
    async fn restarts_with_an_emptied_log_never_reuse_a_batch_identity() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for round in 0..4 {
            let (wal, rec) = Wal::open(&cfg(dir.path())).unwrap();
            assert!(rec.sealed.is_empty() && rec.unsealed.is_empty());
            if round != 1 {
                seen.push((wal.epoch.clone(), stored_batch(&wal).await));
            }
            wal.close();
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "tokens reused: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1));
    }

    #[tokio::test]
    async fn segments_deleted_by_hand_or_set_aside_do_not_lower_the_next_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        let mut last = 0;
        for n in 0..30 {
            last = wal.append(rows(n)).await.unwrap();
        }
        wal.close();
        drop(wal);
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "wal") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        assert!(wal.append(rows(0)).await.unwrap() > last);
    }

    #[tokio::test]
    async fn records_cut_after_a_corrupt_one_keep_their_lsns_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.segment_bytes = 1 << 20;
        let (wal, _) = Wal::open(&c).unwrap();
        let mut last = 0;
        for n in 0..10 {
            last = wal.append(rows(n)).await.unwrap();
        }
        wal.close();
        drop(wal);
        let seg = written_segment(dir.path());
        // Damage the second record: eight intact ones after it are cut.
        let mut data = std::fs::read(&seg).unwrap();
        let first_len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        data[HEADER + first_len + HEADER + 10] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let (wal, rec) = Wal::open(&c).unwrap();
        assert_eq!(rec.unsealed.len(), 1);
        assert!(wal.append(rows(0)).await.unwrap() > last);
    }

    #[tokio::test]
    async fn an_emptied_directory_or_a_lost_floor_starts_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        stored_batch(&wal).await;
        let first = wal.epoch.clone();
        wal.close();
        drop(wal);
        // Restart: same epoch.
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        assert_eq!(wal.epoch, first);
        wal.close();
        drop(wal);
        // The floor and the segments deleted, the epoch file kept: nothing
        // bounds the old LSNs any more, so the tokens change.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() != EPOCH_FILE {
                std::fs::remove_file(p).unwrap();
            }
        }
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        assert_ne!(wal.epoch, first);
        assert_eq!(epoch(dir.path()), wal.epoch);
    }

    #[tokio::test]
    async fn an_unreadable_floor_stops_the_start_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(Wal::open(&cfg(dir.path())).unwrap());
        std::fs::write(dir.path().join(FLOOR_FILE), "garbage").unwrap();
        let err = Wal::open(&cfg(dir.path())).err().unwrap();
        assert!(err.to_string().contains("lsn_floor"), "{err}");
    }

    #[tokio::test]
    async fn the_log_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("wal");
        let (wal, _) = Wal::open(&cfg(&logdir)).unwrap();
        wal.append(rows(1)).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&logdir), 0o700);
        for e in std::fs::read_dir(&logdir).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
            for n in 1..=3 {
                wal.append(rows(n)).await.unwrap();
            }
            wal.close();
        }
        let seg = written_segment(dir.path());
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (_, rec) = Wal::open(&cfg(dir.path())).unwrap();
        let kept: Vec<u32> = rec.unsealed.iter().map(|r| r.2).collect();
        assert_eq!(
            kept,
            vec![1, 2],
            "the two whole records survive, the torn one is dropped"
        );
        // A flipped byte is caught by the checksum the same way.
        let mut data = std::fs::read(&seg).unwrap();
        data[HEADER + 10] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let (_, rec) = Wal::open(&cfg(dir.path())).unwrap();
        assert!(rec.unsealed.is_empty());
    }

    #[tokio::test]
    async fn confirmed_segments_are_deleted_and_live_bytes_fall() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(&cfg(dir.path())).unwrap();
        let mut lsns = Vec::new();
        for n in 0..40 {
            lsns.push(wal.append(rows(n)).await.unwrap());
        }
        let before = wal.live_bytes();
        let segments = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "wal")
                })
                .count()
        };
        assert!(segments() > 3, "small segments rotate");
        let seal = wal
            .append(Record::Seal {
                table: Table::Events,
                lsns: lsns.clone(),
            })
            .await
            .unwrap();
        wal.append(Record::Done { seal }).await.unwrap();
        assert!(
            wal.live_bytes() < before / 2,
            "{} vs {before}",
            wal.live_bytes()
        );
        assert!(segments() <= 2);
        drop(wal);
        let (_, rec) = Wal::open(&cfg(dir.path())).unwrap();
        assert!(rec.sealed.is_empty() && rec.unsealed.is_empty());
    }
}
