//! Reads the ELF program headers of a binary: what it needs from a dynamic
//! loader, if anything.

/// What the ELF headers say about linking.
#[derive(Debug, PartialEq, Eq)]
pub struct Linkage {
    pub machine: u16,
    /// A `PT_INTERP` segment: the kernel would start a dynamic loader.
    pub interpreter: bool,
    /// A `PT_DYNAMIC` segment (static-pie keeps one to relocate itself).
    pub dynamic_section: bool,
    /// `DT_NEEDED` entries: shared libraries the loader would map.
    pub needed: usize,
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// Reads the program headers of a 64-bit little-endian ELF file (ELF-64
/// Object File Format, "ELF Header" and "Program Header Table").
pub fn linkage(elf: &[u8]) -> Result<Linkage, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let machine = u16_at(elf, 0x12)?;
    let phoff = u64_at(elf, 0x20)?;
    let phentsize = u64::from(u16_at(elf, 0x36)?);
    let phnum = u64::from(u16_at(elf, 0x38)?);
    if phentsize < 56 {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    in_bounds(elf, phoff, phnum * phentsize)?;
    let mut found = Linkage {
        machine,
        interpreter: false,
        dynamic_section: false,
        needed: 0,
    };
    for i in 0..phnum {
        let header = offset(phoff, i * phentsize)?;
        match u32_at(elf, header)? {
            PT_INTERP => found.interpreter = true,
            PT_DYNAMIC => {
                found.dynamic_section = true;
                let start = u64_at(elf, header + 8)?;
                let size = u64_at(elf, header + 32)?;
                found.needed += needed_entries(elf, start, size)?;
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Counts `DT_NEEDED` in the dynamic section at `start` (16-byte entries,
/// ended by `DT_NULL`).
fn needed_entries(elf: &[u8], start: u64, size: u64) -> Result<usize, String> {
    in_bounds(elf, start, size)?;
    let mut needed = 0;
    for entry in 0..size / 16 {
        match u64_at(elf, offset(start, entry * 16)?)? {
            DT_NULL => break,
            DT_NEEDED => needed += 1,
            _ => {}
        }
    }
    Ok(needed)
}

/// Fails unless `len` bytes from `start` lie inside the file.
fn in_bounds(elf: &[u8], start: u64, len: u64) -> Result<(), String> {
    let end = offset(start, len)?;
    if end > elf.len() {
        return Err(format!(
            "truncated: {end} bytes needed, {} present",
            elf.len()
        ));
    }
    Ok(())
}

fn offset(base: u64, add: u64) -> Result<usize, String> {
    base.checked_add(add)
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| "offset out of range".to_owned())
}

fn bytes_at<const N: usize>(elf: &[u8], at: usize) -> Result<[u8; N], String> {
    elf.get(at..at.saturating_add(N))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn u16_at(elf: &[u8], at: usize) -> Result<u16, String> {
    bytes_at(elf, at).map(u16::from_le_bytes)
}

fn u32_at(elf: &[u8], at: usize) -> Result<u32, String> {
    bytes_at(elf, at).map(u32::from_le_bytes)
}

fn u64_at(elf: &[u8], at: usize) -> Result<u64, String> {
    bytes_at(elf, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16, segments: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let phoff = 64u64;
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        out[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        out[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (kind, offset, size) in segments {
            let mut header = [0u8; 56];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[8..16].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend(header);
        }
        out.extend(tail);
        out
    }

    fn dynamic(tags: &[u64]) -> Vec<u8> {
        tags.iter()
            .flat_map(|tag| [tag.to_le_bytes(), 0u64.to_le_bytes()].concat())
            .collect()
    }

    #[test]
    fn static_pie_has_a_dynamic_section_without_needed_libraries() {
        // DT_RELA (7), DT_FLAGS_1 (0x6ffffffb), DT_NULL.
        let table = dynamic(&[7, 0x6fff_fffb, DT_NULL, DT_NEEDED]);
        let at = 64 + 56;
        let file = elf(62, &[(PT_DYNAMIC, at, table.len() as u64)], &table);
        assert_eq!(
            linkage(&file),
            Ok(Linkage {
                machine: 62,
                interpreter: false,
                dynamic_section: true,
                needed: 0,
            })
        );
    }

    #[test]
    fn dynamically_linked_binary_shows_interpreter_and_libraries() {
        let table = dynamic(&[DT_NEEDED, DT_NEEDED, DT_NULL]);
        let at = 64 + 2 * 56;
        let file = elf(
            183,
            &[(PT_INTERP, 0, 0), (PT_DYNAMIC, at, table.len() as u64)],
            &table,
        );
        let found = linkage(&file).unwrap();
        assert!(found.interpreter);
        assert_eq!((found.machine, found.needed), (183, 2));
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_not_panics() {
        let table = dynamic(&[DT_NEEDED, DT_NULL]);
        let file = elf(62, &[(PT_DYNAMIC, 64 + 56, 32)], &table);
        for cut in 0..file.len() - 1 {
            assert!(linkage(&file[..cut]).is_err(), "accepted {cut} bytes");
        }
        let huge = elf(62, &[(PT_DYNAMIC, u64::MAX - 4, 64)], &[]);
        assert!(linkage(&huge).is_err());
        assert!(linkage(b"#!/bin/sh\n").is_err());
    }
}
