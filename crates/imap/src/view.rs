//! The selected mailbox as this session sees it: the map from message
//! sequence numbers to UIDs (RFC 3501 §2.3.1).
//!
//! Invariants: `uids` is strictly ascending; a UID enters the view only when
//! it is announced with `EXISTS`, and leaves it only when it is announced
//! with `EXPUNGE`, so the client's numbering and ours never diverge. Numbers
//! in `EXPUNGE` responses account for the removals already announced
//! (RFC 3501 §7.4.1).

use chatmail_store::{MailboxInfo, Store, StoreError};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// A sequence set that names messages that do not exist.
#[derive(Debug, PartialEq, Eq)]
pub struct BadSet;

/// The session's picture of the selected mailbox.
#[derive(Debug)]
pub struct View {
    /// The mailbox as it was at SELECT (UIDVALIDITY never changes).
    pub mailbox: MailboxInfo,
    /// EXAMINE: no flag changes, no expunge.
    pub read_only: bool,
    /// UID of message `seq` at index `seq - 1`.
    uids: Vec<u32>,
    /// Highest UID ever announced; newer messages are above it.
    announced_max: u32,
}

impl View {
    pub fn new(mailbox: MailboxInfo, read_only: bool, uids: Vec<u32>) -> View {
        let announced_max = uids.last().copied().unwrap_or(0);
        View {
            mailbox,
            read_only,
            uids,
            announced_max,
        }
    }

    /// Number of messages the client knows about.
    pub fn exists(&self) -> usize {
        self.uids.len()
    }

    /// UIDNEXT as announced: never below a UID the client has seen.
    pub fn uidnext(&self) -> u32 {
        self.mailbox
            .uidnext
            .max(self.announced_max.saturating_add(1))
    }

    /// Re-reads the mailbox and appends the untagged updates to `out`.
    /// With `allow_expunge == false` removals are kept for later (RFC 3501
    /// §7.4.1: no EXPUNGE during FETCH, STORE or SEARCH).
    pub async fn sync(
        &mut self,
        store: &Store,
        allow_expunge: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let current = store.uids(self.mailbox.id).await?;
        let new: Vec<u32> = store
            .messages(self.mailbox.id, self.announced_max)
            .await?
            .iter()
            .map(|m| m.uid)
            .collect();
        self.apply(&current, &new, allow_expunge, out);
        Ok(())
    }

    /// Applies a fresh listing: `current` = all UIDs now, `new` = UIDs above
    /// the announced maximum. Pure, so the numbering is unit-tested.
    pub fn apply(&mut self, current: &[u32], new: &[u32], allow_expunge: bool, out: &mut Vec<u8>) {
        if allow_expunge {
            let mut removed = 0;
            let mut kept = Vec::with_capacity(self.uids.len());
            for (index, &uid) in self.uids.iter().enumerate() {
                if current.binary_search(&uid).is_ok() {
                    kept.push(uid);
                } else {
                    // RFC 3501 §7.4.1: later numbers shift down after each EXPUNGE.
                    out.extend_from_slice(
                        format!("* {} EXPUNGE\r\n", index + 1 - removed).as_bytes(),
                    );
                    removed += 1;
                }
            }
            self.uids = kept;
        }
        let before = self.uids.len();
        for &uid in new {
            if uid > self.announced_max {
                self.uids.push(uid);
                self.announced_max = uid;
            }
        }
        if self.uids.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.uids.len()).as_bytes());
        }
    }

    /// The (sequence number, UID) pairs a set names, ascending and unique.
    /// UID sets ignore UIDs that do not exist (RFC 3501 §6.4.8); sequence
    /// numbers beyond the mailbox are an error (RFC 3501 §9, seq-number).
    pub fn resolve(&self, set: &SequenceSet, by_uid: bool) -> Result<Vec<(u32, u32)>, BadSet> {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for sequence in set.0.as_ref() {
            let (a, b) = match sequence {
                Sequence::Single(x) => (*x, *x),
                Sequence::Range(a, b) => (*a, *b),
            };
            let range = if by_uid {
                self.uid_range(a, b)
            } else {
                Some(self.seq_range(a, b)?)
            };
            ranges.extend(range);
        }
        ranges.sort_unstable();
        let mut result = Vec::new();
        let mut next = 0;
        for (start, end) in ranges {
            for index in start.max(next)..end {
                result.push((index as u32 + 1, self.uids[index]));
            }
            next = next.max(end);
        }
        Ok(result)
    }

    /// Index range `[start, end)` for sequence numbers `a:b`.
    fn seq_range(&self, a: SeqOrUid, b: SeqOrUid) -> Result<(usize, usize), BadSet> {
        let n = self.uids.len();
        let value = |x: SeqOrUid| match x {
            SeqOrUid::Value(v) => v.get() as usize,
            SeqOrUid::Asterisk => n,
        };
        let (lo, hi) = (value(a).min(value(b)), value(a).max(value(b)));
        if lo == 0 || hi > n {
            return Err(BadSet);
        }
        Ok((lo - 1, hi))
    }

    /// Index range `[start, end)` for UIDs `a:b`; `*` is the highest UID.
    fn uid_range(&self, a: SeqOrUid, b: SeqOrUid) -> Option<(usize, usize)> {
        let max = *self.uids.last()?;
        let value = |x: SeqOrUid| match x {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => max,
        };
        let (lo, hi) = (value(a).min(value(b)), value(a).max(value(b)));
        let start = self.uids.partition_point(|&u| u < lo);
        let end = self.uids.partition_point(|&u| u <= hi);
        (start < end).then_some((start, end))
    }

    /// The sequence number of a UID in the view.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uids: &[u32]) -> View {
        let info = MailboxInfo {
            id: 1,
            name: "INBOX".into(),
            uidvalidity: 7,
            uidnext: 1,
            special_use: None,
        };
        View::new(info, false, uids.to_vec())
    }

    fn set(text: &str) -> SequenceSet {
        text.try_into().unwrap()
    }

    fn applied(v: &mut View, current: &[u32], new: &[u32], allow_expunge: bool) -> String {
        let mut out = Vec::new();
        v.apply(current, new, allow_expunge, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_expunges_after_earlier_removals() {
        let mut v = view(&[10, 11, 12, 13, 14]);
        let out = applied(&mut v, &[10, 13], &[], true);
        assert_eq!(out, "* 2 EXPUNGE\r\n* 2 EXPUNGE\r\n* 3 EXPUNGE\r\n");
        assert_eq!(v.exists(), 2);
        assert_eq!(v.seq_of(13), Some(2));
    }

    #[test]
    fn announces_new_messages_once() {
        let mut v = view(&[]);
        assert_eq!(applied(&mut v, &[5], &[5], true), "* 1 EXISTS\r\n");
        assert_eq!(applied(&mut v, &[5], &[5], true), "");
        assert_eq!(v.uidnext(), 6);
    }

    #[test]
    fn defers_expunges_when_not_allowed() {
        let mut v = view(&[1, 2]);
        assert_eq!(applied(&mut v, &[2, 3], &[3], false), "* 3 EXISTS\r\n");
        assert_eq!(applied(&mut v, &[2, 3], &[], true), "* 1 EXPUNGE\r\n");
        assert_eq!(v.resolve(&set("1:*"), false), Ok(vec![(1, 2), (2, 3)]));
    }

    #[test]
    fn resolves_uid_sets_ignoring_missing_uids() {
        let v = view(&[3, 5, 9]);
        assert_eq!(
            v.resolve(&set("1:*"), true),
            Ok(vec![(1, 3), (2, 5), (3, 9)])
        );
        assert_eq!(v.resolve(&set("4:8"), true), Ok(vec![(2, 5)]));
        assert_eq!(v.resolve(&set("20:*"), true), Ok(vec![(3, 9)]));
        assert_eq!(v.resolve(&set("6,7"), true), Ok(vec![]));
        assert_eq!(
            v.resolve(&set("9,3,5:5"), true),
            Ok(vec![(1, 3), (2, 5), (3, 9)])
        );
    }

    #[test]
    fn rejects_sequence_numbers_beyond_the_mailbox() {
        let v = view(&[3, 5]);
        assert_eq!(v.resolve(&set("2:*"), false), Ok(vec![(2, 5)]));
        assert_eq!(v.resolve(&set("3"), false), Err(BadSet));
        assert_eq!(view(&[]).resolve(&set("1:*"), false), Err(BadSet));
        assert_eq!(view(&[]).resolve(&set("1:*"), true), Ok(vec![]));
    }
}
