//! A wall clock tests move: libfaketime (Debian package `faketime`)
//! preloaded into a process reads the offset from real time (`+0`,
//! `-7200`, `+2d`, ...) from a file on every clock call, so writing the
//! file moves a running relay's wall clock (and that of every `madmail`
//! command given the same [`FakeClock::env`]). The monotonic clock is left
//! alone, so timeouts and timers keep real time.

use std::fs;
use std::path::PathBuf;

use crate::Result;

/// The preload library and the offset file it reads.
pub struct FakeClock {
    /// The preload library.
    pub library: PathBuf,
    /// The offset file.
    pub file: PathBuf,
}

/// Where Debian installs libfaketime: `/usr/lib/<multiarch>/faketime/`.
const FAKETIME_DIR: &str = "faketime";
/// The thread-safe variant first (the relay runs many threads).
const FAKETIME_LIBRARIES: [&str; 2] = ["libfaketimeMT.so.1", "libfaketime.so.1"];

impl FakeClock {
    /// Finds libfaketime and creates `file` with offset zero; `None` when
    /// the library is not installed.
    pub fn create(file: PathBuf) -> Result<Option<Self>> {
        let Some(library) = Self::find_library() else {
            return Ok(None);
        };
        let clock = Self { library, file };
        clock.set("+0")?;
        Ok(Some(clock))
    }

    fn find_library() -> Option<PathBuf> {
        let multiarch = fs::read_dir("/usr/lib").ok()?.flatten().map(|e| e.path());
        let dirs = std::iter::once(PathBuf::from("/usr/lib")).chain(multiarch);
        dirs.flat_map(|dir| FAKETIME_LIBRARIES.map(|lib| dir.join(FAKETIME_DIR).join(lib)))
            .find(|path| path.is_file())
    }

    /// Moves the clock to `offset` from real time (libfaketime's syntax:
    /// `+0`, `-7200`, `+1d`).
    pub fn set(&self, offset: &str) -> Result<()> {
        fs::write(&self.file, format!("{offset}\n"))
            .map_err(|e| format!("writing {}: {e}", self.file.display()).into())
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            // Read the file on every call, not every 10 s.
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn fake_clock_preloads_libfaketime_reading_the_offset_file_on_every_call() {
        let file = std::env::temp_dir().join(format!("madmail-faketime-{}", std::process::id()));
        let Some(clock) = FakeClock::create(file.clone()).unwrap() else {
            return; // libfaketime not installed
        };
        assert_eq!(fs::read_to_string(&file).unwrap().trim(), "+0");
        let env = clock.env();
        let get = |key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("LD_PRELOAD"), clock.library.to_str());
        assert_eq!(get("FAKETIME_TIMESTAMP_FILE"), file.to_str());
        assert_eq!(get("FAKETIME_NO_CACHE"), Some("1"));
        assert_eq!(get("FAKETIME_DONT_FAKE_MONOTONIC"), Some("1"));
        let date = |env: &[(String, String)]| {
            let out = Command::new("date")
                .arg("+%s")
                .envs(env.iter().cloned())
                .output();
            String::from_utf8(out.unwrap().stdout)
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        clock.set("+86400").unwrap();
        let moved = date(&env) - date(&[]);
        fs::remove_file(&file).unwrap();
        assert!((86_390..86_410).contains(&moved), "moved by {moved} s");
    }
}
