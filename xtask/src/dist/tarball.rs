//! Reproducible `.tar.gz` archives: the same files give the same bytes.

use std::io::Write;

use anyhow::bail;

/// A file of the tarball.
pub struct Entry {
    pub name: &'static str,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// A gzip-compressed ustar archive (POSIX.1-2001 `pax` "ustar Interchange
/// Format") of `dir/` and `entries` in name order, every header with owner
/// 0 (`root`) and `mtime`; gzip header mtime 0. Same input, same bytes.
pub fn tar_gz(dir: &str, entries: &mut [Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    entries.sort_by(|a, b| a.name.cmp(b.name));
    let mut tar = Vec::new();
    tar.extend(ustar_header(&format!("{dir}/"), 0o755, 0, mtime, b'5')?);
    for entry in entries.iter() {
        let name = format!("{dir}/{}", entry.name);
        let size = entry.data.len() as u64;
        tar.extend(ustar_header(&name, entry.mode, size, mtime, b'0')?);
        tar.extend(&entry.data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    // Two zero blocks end the archive; records are 20 blocks, as tar writes them.
    tar.resize(tar.len() + 1024, 0);
    tar.resize(tar.len().next_multiple_of(10240), 0);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar)?;
    Ok(gz.finish()?)
}

fn ustar_header(
    name: &str,
    mode: u32,
    size: u64,
    mtime: u64,
    kind: u8,
) -> anyhow::Result<[u8; 512]> {
    if name.len() > 100 {
        bail!("tar entry name longer than 100 bytes: {name}");
    }
    let mut header = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, format!("{mtime:011o}\0").as_bytes());
    put(148, b"        ");
    put(156, &[kind]);
    put(257, b"ustar\0"); // magic
    put(263, b"00"); // version
    put(265, b"root");
    put(297, b"root");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                name: "madmail",
                mode: 0o755,
                data: b"\x7fELF binary".to_vec(),
            },
            Entry {
                name: "SHA256SUMS",
                mode: 0o644,
                data: vec![b'x'; 700],
            },
        ]
    }

    #[test]
    fn tarball_is_the_same_bytes_every_time_and_tar_lists_it() {
        let first = tar_gz("madmail-1", &mut sample(), 1_700_000_000).unwrap();
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(
            first,
            tar_gz("madmail-1", &mut reversed, 1_700_000_000).unwrap()
        );

        let dir = tempfile_dir();
        let path = dir.join("t.tar.gz");
        std::fs::write(&path, &first).unwrap();
        let listing = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(&path)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8_lossy(&listing.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("drwxr-xr-x 0/0 "), "{text}");
        assert!(
            lines[0].ends_with("2023-11-14 22:13:20 madmail-1/"),
            "{text}"
        );
        assert!(lines[1].starts_with("-rw-r--r-- 0/0 "), "{text}");
        assert!(
            lines[1].ends_with(" 700 2023-11-14 22:13:20 madmail-1/SHA256SUMS"),
            "{text}"
        );
        assert!(lines[2].starts_with("-rwxr-xr-x 0/0 "), "{text}");
        assert!(lines[2].ends_with("madmail-1/madmail"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-dist-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
