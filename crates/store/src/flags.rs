//! Message flags: normalisation and the `STORE` operations, without SQL.
//!
//! Flags are kept as one text column, separated by single spaces. System
//! flags are stored in their canonical spelling; all flags compare
//! case-insensitively (RFC 3501 §2.3.2), the first spelling seen wins.

use crate::FlagOp;

/// System flags in canonical spelling (RFC 3501 §2.3.2). `\Recent` is
/// session state and never stored.
const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// Longest flag accepted; longer ones are dropped.
const MAX_FLAG_LEN: usize = 256;

/// Canonical spelling of a flag, or `None` if it cannot be stored.
fn normalize(flag: &str) -> Option<String> {
    let valid = !flag.is_empty()
        && flag.len() <= MAX_FLAG_LEN
        && !flag.eq_ignore_ascii_case("\\Recent")
        && flag.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return None;
    }
    let system = SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(flag));
    Some(system.map_or_else(|| flag.to_owned(), |s| (*s).to_owned()))
}

fn contains(list: &[String], flag: &str) -> bool {
    list.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Normalised, de-duplicated flags in their given order.
pub(crate) fn clean(flags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(flags.len());
    for flag in flags.iter().filter_map(|f| normalize(f)) {
        if !contains(&out, &flag) {
            out.push(flag);
        }
    }
    out
}

/// Reads the stored column.
pub(crate) fn decode(column: &str) -> Vec<String> {
    column.split_whitespace().map(str::to_owned).collect()
}

/// Writes the stored column.
pub(crate) fn encode(flags: &[String]) -> String {
    flags.join(" ")
}

/// Applies a `STORE` operation (RFC 3501 §6.4.6) to the current flags.
pub(crate) fn apply(current: &[String], op: FlagOp, given: &[String]) -> Vec<String> {
    let given = clean(given);
    match op {
        FlagOp::Replace => given,
        FlagOp::Add => {
            let mut out = current.to_vec();
            for flag in given {
                if !contains(&out, &flag) {
                    out.push(flag);
                }
            }
            out
        }
        FlagOp::Remove => current
            .iter()
            .filter(|f| !contains(&given, f))
            .cloned()
            .collect(),
    }
}

/// Whether the flags include `\Deleted`.
pub(crate) fn is_deleted(flags: &[String]) -> bool {
    contains(flags, "\\Deleted")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn system_flags_get_canonical_spelling_and_duplicates_vanish() {
        assert_eq!(
            clean(&v(&["\\SEEN", "\\seen", "$Label", "$label"])),
            v(&["\\Seen", "$Label"])
        );
    }

    #[test]
    fn recent_and_malformed_flags_are_never_stored() {
        assert_eq!(clean(&v(&["\\Recent", "", "a b", "ok"])), v(&["ok"]));
    }

    #[test]
    fn add_remove_and_replace_follow_store_semantics() {
        let cur = v(&["\\Seen", "$A"]);
        assert_eq!(
            apply(&cur, FlagOp::Add, &v(&["\\flagged", "$a"])),
            v(&["\\Seen", "$A", "\\Flagged"])
        );
        assert_eq!(apply(&cur, FlagOp::Remove, &v(&["\\seen"])), v(&["$A"]));
        assert_eq!(
            apply(&cur, FlagOp::Replace, &v(&["\\Draft"])),
            v(&["\\Draft"])
        );
    }

    #[test]
    fn column_round_trips() {
        let flags = v(&["\\Seen", "$A"]);
        assert_eq!(decode(&encode(&flags)), flags);
        assert!(decode("").is_empty());
        assert!(is_deleted(&v(&["\\deleted"])));
    }
}
