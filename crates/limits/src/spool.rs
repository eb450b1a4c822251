//! Message bodies as they arrive (SMTP DATA, `POST /mxdeliv`), bounded
//! whatever the client does.
//!
//! A body is kept in memory while it is small ([`HELD_PER_BODY`]) and the
//! shared budget for unfinished bodies allows; beyond that it goes to an
//! unlinked temporary file in the spool directory (nothing survives a
//! crash, and nothing was acknowledged yet), against a disk budget and a
//! bound on open spool files ([`MAX_SPOOL_FILES`]). A
//! client that holds many bodies open, one byte short of the end, so
//! costs the relay a bounded amount of memory per connection and disk up
//! to its share; past the share, its bodies fail with [`SpoolError::Busy`]
//! (the caller answers `451 4.3.2` or HTTP 503 once the body ends).
//!
//! [`Spool::finish`] loads the whole body for the checks and the store,
//! under a second budget of loaded bodies (twice the body size: the checks
//! make one rewritten copy), waiting a few seconds for others to be
//! stored before it gives up with [`SpoolError::Busy`].
//!
//! Invariants: a body never exceeds its `max_size`; all budgets are
//! released when the spool or the loaded body is dropped; after a failure
//! further writes are dropped, so callers can keep reading to the end of
//! the body and stay in sync.

use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Budget, ClientKey, Reservation};

/// Most bytes one unfinished body keeps in memory.
pub const HELD_PER_BODY: usize = 256 * 1024;
/// Bytes collected before one write to the spool file.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long a finished body may wait for room in the loaded budget.
const LOAD_WAIT: Duration = Duration::from_secs(5);
/// Spool files open at once (each is a descriptor and up to
/// [`HELD_PER_BODY`]-sized write buffer), a quarter of them per client.
pub const MAX_SPOOL_FILES: u64 = 512;

/// Why a body could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// More than the body's `max_size`.
    #[error("body over its size limit")]
    TooBig,
    /// No memory or disk budget left for it now; temporary.
    #[error("no room for the body now")]
    Busy,
    /// The spool file failed; temporary.
    #[error("spool file: {0}")]
    Io(String),
    /// The disk under the spool is full; temporary.
    #[error("spool file: no space left on the disk")]
    DiskFull,
}

/// Where bodies go, and the budgets they share; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spools {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Memory of unfinished bodies.
    held: Budget,
    /// Memory of finished bodies being checked and stored.
    loaded: Budget,
    /// Spool file bytes of unfinished bodies.
    disk: Budget,
    /// Spool files open.
    files: Budget,
}

impl Spools {
    /// Spools in `dir` (created if missing) with `memory` bytes for bodies
    /// being checked and stored (at least two of the largest, `max_size`),
    /// a quarter of that again for unfinished bodies, and `disk` bytes of
    /// spool files. Each client may use a quarter of the disk budget and of
    /// the unfinished-body memory, and half of the rest, but always
    /// enough for one body of `max_size`.
    /// The directory is made when the first body spills to disk.
    pub fn new(dir: PathBuf, memory: u64, disk: u64, max_size: u64) -> Self {
        let loaded_total = memory.max(max_size.saturating_mul(4));
        let loaded_share = (loaded_total / 2).max(max_size.saturating_mul(2));
        let disk_share = (disk / 4).max(max_size);
        Self {
            inner: Arc::new(Inner {
                dir,
                held: Budget::new(memory / 4, memory / 16),
                loaded: Budget::new(loaded_total, loaded_share),
                disk: Budget::new(disk.max(max_size), disk_share),
                files: Budget::new(MAX_SPOOL_FILES, MAX_SPOOL_FILES / 4),
            }),
        }
    }

    /// A new, empty body from `client` of at most `max_size` bytes.
    pub fn begin(&self, client: Option<IpAddr>, max_size: u64) -> Spool {
        Spool {
            inner: Arc::clone(&self.inner),
            client: ClientKey::of_opt(client),
            max_size,
            len: 0,
            memory: Vec::new(),
            held: None,
            file: None,
            failed: None,
        }
    }

    /// `bytes` of the loaded-body budget for `client`, if there is room
    /// now: for a body that arrives some other way (an IMAP APPEND
    /// literal), so it shares the budget of every other.
    pub fn try_load(&self, client: Option<IpAddr>, bytes: u64) -> Option<Reservation> {
        self.inner
            .loaded
            .try_reserve(ClientKey::of_opt(client), bytes)
    }

    /// Bytes of unfinished bodies in memory, of loaded bodies, and of
    /// spool files (for tests and metrics).
    pub fn usage(&self) -> (u64, u64, u64) {
        let inner = &self.inner;
        (inner.held.used(), inner.loaded.used(), inner.disk.used())
    }
}

/// One body being received.
#[derive(Debug)]
pub struct Spool {
    inner: Arc<Inner>,
    client: ClientKey,
    max_size: u64,
    /// Bytes written so far.
    len: u64,
    /// The body while it is in memory.
    memory: Vec<u8>,
    held: Option<Reservation>,
    /// The body once it went to disk.
    file: Option<SpoolFile>,
    failed: Option<SpoolError>,
}

#[derive(Debug)]
struct SpoolFile {
    /// `None` only while a blocking write has it.
    file: Option<std::fs::File>,
    /// Bytes not yet written to the file.
    pending: Vec<u8>,
    disk: Reservation,
    /// Its place among the open spool files.
    _open: Reservation,
}

/// A whole body, loaded for the checks and the store; holds its share of
/// the loaded budget until dropped.
#[derive(Debug)]
pub struct Body {
    bytes: Bytes,
    _budget: Reservation,
}

impl Body {
    /// The body's bytes (shares the buffer).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Spool {
    /// Appends `data`. Fails with the first failure of this body, again on
    /// every later call; the data of failed calls is dropped.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if let Some(failed) = &self.failed {
            self.len = self.len.saturating_add(data.len() as u64);
            return Err(failed.clone());
        }
        let result = self.append(data).await;
        if let Err(error) = &result {
            self.fail(error.clone());
        }
        result
    }

    /// Bytes written so far (also after a failure).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&SpoolError> {
        self.failed.as_ref()
    }

    async fn append(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        let new_len = self.len.saturating_add(data.len() as u64);
        self.len = new_len;
        if new_len > self.max_size {
            return Err(SpoolError::TooBig);
        }
        if self.file.is_none() {
            if self.memory.len() + data.len() <= HELD_PER_BODY && self.hold(data.len()) {
                self.memory.extend_from_slice(data);
                return Ok(());
            }
            self.spill()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(SpoolError::Io("no spool file".into()));
        };
        if !file.disk.try_grow(data.len() as u64) {
            return Err(SpoolError::Busy);
        }
        file.pending.extend_from_slice(data);
        if file.pending.len() >= WRITE_CHUNK {
            file.flush().await?;
        }
        Ok(())
    }

    /// Counts `n` more bytes of memory against the unfinished-body budget.
    fn hold(&mut self, n: usize) -> bool {
        let n = n as u64;
        match &mut self.held {
            Some(held) => held.try_grow(n),
            None => match self.inner.held.try_reserve(self.client, n) {
                Some(held) => {
                    self.held = Some(held);
                    true
                }
                None => false,
            },
        }
    }

    /// Moves the body from memory to a new spool file.
    fn spill(&mut self) -> Result<(), SpoolError> {
        let size = self.memory.len() as u64;
        let open = self
            .inner
            .files
            .try_reserve(self.client, 1)
            .ok_or(SpoolError::Busy)?;
        let disk = self
            .inner
            .disk
            .try_reserve(self.client, size)
            .ok_or(SpoolError::Busy)?;
        let dir = &self.inner.dir;
        let file = match tempfile::tempfile_in(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).and_then(|()| tempfile::tempfile_in(dir))
            }
            other => other,
        }
        .map_err(io)?;
        self.file = Some(SpoolFile {
            file: Some(file),
            pending: std::mem::take(&mut self.memory),
            disk,
            _open: open,
        });
        self.held = None;
        Ok(())
    }

    fn fail(&mut self, error: SpoolError) {
        self.failed = Some(error);
        self.memory = Vec::new();
        self.held = None;
        self.file = None;
    }

    /// The whole body, loaded under the loaded-body budget.
    pub async fn finish(mut self) -> Result<Body, SpoolError> {
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        let cost = self.len.saturating_mul(2);
        let budget = self
            .inner
            .loaded
            .reserve(self.client, cost, LOAD_WAIT)
            .await
            .ok_or(SpoolError::Busy)?;
        let bytes = match self.file.take() {
            None => std::mem::take(&mut self.memory),
            Some(mut file) => {
                file.flush().await?;
                file.read_all(self.len).await?
            }
        };
        Ok(Body {
            bytes: Bytes::from(bytes),
            _budget: budget,
        })
    }
}

impl SpoolFile {
    /// Writes the pending bytes out (on a blocking thread).
    async fn flush(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut file = self.file.take().ok_or(SpoolError::Busy)?;
        let pending = std::mem::take(&mut self.pending);
        let (file, mut pending) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&pending);
            result.map(|()| (file, pending))
        })
        .await
        .map_err(|e| SpoolError::Io(e.to_string()))?
        .map_err(io)?;
        pending.clear();
        self.file = Some(file);
        self.pending = pending;
        Ok(())
    }

    /// Reads the whole file (`len` bytes) back.
    async fn read_all(&mut self, len: u64) -> Result<Vec<u8>, SpoolError> {
        let mut file = self.file.take().ok_or(SpoolError::Busy)?;
        tokio::task::spawn_blocking(move || {
            file.rewind()?;
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.take(len).read_to_end(&mut bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| SpoolError::Io(e.to_string()))?
        .map_err(io)
    }
}

fn io(error: std::io::Error) -> SpoolError {
    if error.kind() == std::io::ErrorKind::StorageFull {
        return SpoolError::DiskFull;
    }
    SpoolError::Io(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn spools(dir: &tempfile::TempDir, memory: u64, disk: u64, max: u64) -> Spools {
        Spools::new(dir.path().join("spool"), memory, disk, max)
    }

    fn client(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    fn files(dir: &tempfile::TempDir) -> usize {
        std::fs::read_dir(dir.path().join("spool")).unwrap().count()
    }

    #[tokio::test]
    async fn the_spool_directory_is_made_when_first_needed() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 0, 64 * MIB, MIB);
        assert!(!dir.path().join("spool").exists());
        let mut spool = spools.begin(client(1), MIB);
        spool.write(b"x").await.unwrap();
        assert_eq!(files(&dir), 0);
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 64 * MIB, 64 * MIB, MIB);
        let mut spool = spools.begin(client(1), MIB);
        spool.write(b"hello ").await.unwrap();
        spool.write(b"world").await.unwrap();
        assert_eq!(spools.usage(), (11, 0, 0));
        let body = spool.finish().await.unwrap();
        assert_eq!(&*body, b"hello world");
        assert_eq!(spools.usage(), (0, 22, 0));
        drop(body);
        assert_eq!(spools.usage(), (0, 0, 0));
    }

    #[tokio::test]
    async fn large_bodies_go_to_an_unlinked_file_and_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 64 * MIB, 64 * MIB, 8 * MIB);
        let mut spool = spools.begin(client(1), 8 * MIB);
        let chunk: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        for _ in 0..300 {
            spool.write(&chunk).await.unwrap();
        }
        let (held, _, disk) = spools.usage();
        assert_eq!((held, disk), (0, 3_000_000));
        assert_eq!(files(&dir), 0, "the spool file has no name");
        let body = spool.finish().await.unwrap();
        assert_eq!(body.len(), 3_000_000);
        assert!(body.chunks(10_000).all(|c| c == chunk.as_slice()));
        assert_eq!(spools.usage().2, 0, "the file's budget went with it");
    }

    #[tokio::test]
    async fn a_body_over_its_limit_fails_and_drops_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 64 * MIB, 64 * MIB, MIB);
        let mut spool = spools.begin(client(1), 10);
        spool.write(b"0123456789").await.unwrap();
        assert_eq!(spool.write(b"x").await, Err(SpoolError::TooBig));
        assert_eq!(spool.write(b"y").await, Err(SpoolError::TooBig));
        assert_eq!(spool.len(), 12);
        assert_eq!(spools.usage(), (0, 0, 0));
        assert_eq!(spool.finish().await.unwrap_err(), SpoolError::TooBig);
    }

    #[tokio::test]
    async fn held_memory_is_bounded_and_overflow_spills_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        // 4 MiB for unfinished bodies in memory, 1 MiB of it per client.
        let spools = spools(&dir, 16 * MIB, 64 * MIB, MIB);
        let mut open = Vec::new();
        for _ in 0..8 {
            let mut spool = spools.begin(client(1), MIB);
            spool.write(&[b'a'; 200 * 1024]).await.unwrap();
            open.push(spool);
        }
        let (held, _, disk) = spools.usage();
        assert!(held <= MIB, "{held}");
        assert_eq!(held + disk, 8 * 200 * 1024);
    }

    #[tokio::test]
    async fn one_client_cannot_take_the_whole_disk_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 0, 8 * MIB, MIB);
        let mut open = Vec::new();
        let mut busy = 0;
        for _ in 0..4 {
            let mut spool = spools.begin(client(1), MIB);
            match spool.write(&vec![b'a'; MIB as usize]).await {
                Ok(()) => open.push(spool),
                Err(SpoolError::Busy) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!((open.len(), busy), (2, 2), "a quarter of 8 MiB each");
        let mut other = spools.begin(client(2), MIB);
        other.write(&vec![b'b'; MIB as usize]).await.unwrap();
        drop(open);
        assert_eq!(spools.usage().2, MIB);
    }

    #[tokio::test]
    async fn open_spool_files_are_bounded_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 0, 64 * MIB, MIB);
        let mut open = Vec::new();
        for _ in 0..MAX_SPOOL_FILES / 4 {
            let mut spool = spools.begin(client(1), MIB);
            spool.write(b"x").await.unwrap();
            open.push(spool);
        }
        let mut one_more = spools.begin(client(1), MIB);
        assert_eq!(one_more.write(b"x").await, Err(SpoolError::Busy));
        let mut other = spools.begin(client(2), MIB);
        other.write(b"x").await.unwrap();
    }

    #[tokio::test]
    async fn finishing_waits_for_loaded_room_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let spools = spools(&dir, 0, 64 * MIB, MIB);
        // The loaded budget is four of the largest bodies (each costs
        // twice its size), half of it per client.
        let mut bodies = Vec::new();
        for n in 1..=2 {
            let mut spool = spools.begin(client(n), MIB);
            spool.write(&vec![b'a'; MIB as usize]).await.unwrap();
            bodies.push(spool.finish().await.unwrap());
        }
        let mut late = spools.begin(client(3), MIB);
        late.write(&vec![b'a'; MIB as usize]).await.unwrap();
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(late.finish());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(bodies.pop());
        let body = waiting.await.unwrap().unwrap();
        assert_eq!(body.len() as u64, MIB);
        assert!(started.elapsed() < LOAD_WAIT);
    }
}
