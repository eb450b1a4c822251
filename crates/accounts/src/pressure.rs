//! Refusal of new accounts while the machine is short of resources
//! (docs/specifications.md §1).
//!
//! Flow: [`Pressure::check`] returns the cached verdict if it is younger
//! than [`SAMPLE_EVERY`]; otherwise it asks the [`Probe`] for fresh
//! [`Readings`] (1-minute load average, available memory, free disk space in
//! the state directory) and compares them with the limits.
//!
//! Invariants:
//! - only the creation of accounts consults this; existing users are never
//!   refused because of it;
//! - the machine is read at most once per [`SAMPLE_EVERY`], however many
//!   logins arrive;
//! - a reading that cannot be taken (no `/proc`, unreadable directory) counts
//!   as no pressure: an unknown value never closes registration.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The 1-minute load average the chatmail relay pauses registration at;
/// here it applies only when `registration.pause_above_load` sets it.
pub const MAX_LOAD: f64 = 5.0;
/// Available memory below which new accounts are refused (200 MB).
pub const MIN_MEMORY: u64 = 200 * 1000 * 1000;
/// Free disk space in the state directory below which new accounts are
/// refused (1 GB).
pub const MIN_DISK: u64 = 1000 * 1000 * 1000;
/// How long one sample of the readings is trusted.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Longest `/proc` file read (both are a few hundred bytes to a few KiB).
const MAX_PROC_FILE: u64 = 64 * 1024;

/// One sample of the machine's resources; `None` where unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Readings {
    /// 1-minute load average.
    pub load: Option<f64>,
    /// Available memory in bytes (`MemAvailable`).
    pub memory: Option<u64>,
    /// Free disk space in bytes, for unprivileged users.
    pub disk: Option<u64>,
}

/// Why new accounts are refused right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shortage {
    #[error("server load too high")]
    Load,
    #[error("not enough memory")]
    Memory,
    #[error("not enough disk space")]
    Disk,
}

impl Readings {
    /// The first limit these readings break, if any; `max_load` `None`
    /// leaves the load out.
    pub fn shortage(&self, max_load: Option<f64>) -> Option<Shortage> {
        if self
            .load
            .zip(max_load)
            .is_some_and(|(load, max)| load > max)
        {
            Some(Shortage::Load)
        } else if self.memory.is_some_and(|m| m < MIN_MEMORY) {
            Some(Shortage::Memory)
        } else if self.disk.is_some_and(|d| d < MIN_DISK) {
            Some(Shortage::Disk)
        } else {
            None
        }
    }
}

/// Where readings come from: the machine, or a test's script.
pub trait Probe: Send + Sync {
    fn read(&self) -> Readings;
}

/// Reads `/proc/loadavg`, `/proc/meminfo` and the file system of `dir`.
pub struct SystemProbe {
    dir: PathBuf,
}

impl SystemProbe {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl Probe for SystemProbe {
    fn read(&self) -> Readings {
        Readings {
            load: read_proc("/proc/loadavg").and_then(|t| parse_loadavg(&t)),
            memory: read_proc("/proc/meminfo").and_then(|t| parse_meminfo(&t)),
            disk: free_disk(&self.dir),
        }
    }
}

fn read_proc(path: &str) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The first field of `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`).
pub(crate) fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// `MemAvailable:  123456 kB` from `/proc/meminfo`, in bytes.
pub(crate) fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line["MemAvailable:".len()..].split_ascii_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Bytes available to unprivileged users on the file system of `dir`.
fn free_disk(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

/// A probe with a cached verdict.
pub(crate) struct Pressure {
    probe: Arc<dyn Probe>,
    /// `registration.pause_above_load`; `None`: the load is not checked.
    max_load: Option<f64>,
    last: Mutex<Option<(Instant, Option<Shortage>)>>,
}

impl Pressure {
    pub(crate) fn new(probe: Arc<dyn Probe>, max_load: Option<f64>) -> Self {
        Self {
            probe,
            max_load,
            last: Mutex::new(None),
        }
    }

    /// The current shortage, sampled at most once per [`SAMPLE_EVERY`].
    pub(crate) fn check(&self) -> Option<Shortage> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, verdict)) = *last
            && at.elapsed() < SAMPLE_EVERY
        {
            return verdict;
        }
        let verdict = self.probe.read().shortage(self.max_load);
        *last = Some((Instant::now(), verdict));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Readings, AtomicUsize);

    impl Probe for Counting {
        fn read(&self) -> Readings {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0
        }
    }

    #[test]
    fn each_limit_is_a_shortage_and_unknown_values_are_not() {
        let calm = Readings {
            load: Some(0.5),
            memory: Some(4 * MIN_MEMORY),
            disk: Some(4 * MIN_DISK),
        };
        assert_eq!(calm.shortage(Some(MAX_LOAD)), None);
        assert_eq!(Readings::default().shortage(Some(MAX_LOAD)), None);
        let loaded = Readings {
            load: Some(5.01),
            ..calm
        };
        assert_eq!(loaded.shortage(Some(MAX_LOAD)), Some(Shortage::Load));
        assert_eq!(loaded.shortage(None), None);
        let tight = Readings {
            memory: Some(MIN_MEMORY - 1),
            ..calm
        };
        assert_eq!(tight.shortage(None), Some(Shortage::Memory));
        let full = Readings {
            disk: Some(MIN_DISK - 1),
            ..calm
        };
        assert_eq!(full.shortage(None), Some(Shortage::Disk));
    }

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_loadavg("5.25 0.58 0.59 1/467 12345\n"), Some(5.25));
        assert_eq!(parse_loadavg(""), None);
        let meminfo = "MemTotal:  8000000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(2048 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn reads_the_real_machine() {
        let readings = SystemProbe::new(std::env::temp_dir()).read();
        if Path::new("/proc/loadavg").exists() {
            assert!(readings.load.is_some_and(|l| l >= 0.0), "{readings:?}");
            assert!(readings.memory.is_some_and(|m| m > 0), "{readings:?}");
        }
        assert!(readings.disk.is_some(), "{readings:?}");
        let missing = SystemProbe::new("/nonexistent/state/dir").read();
        assert_eq!(missing.disk, None);
    }

    #[test]
    fn samples_at_most_once_per_period() {
        let probe = Arc::new(Counting(
            Readings {
                load: Some(9.0),
                ..Readings::default()
            },
            AtomicUsize::new(0),
        ));
        let pressure = Pressure::new(probe.clone(), Some(MAX_LOAD));
        for _ in 0..100 {
            assert_eq!(pressure.check(), Some(Shortage::Load));
        }
        assert_eq!(probe.1.load(Ordering::SeqCst), 1);
    }
}
