//! SEARCH and UID SEARCH (RFC 3501 §6.4.4) over flags, sizes, dates,
//! sequence sets, headers and text. Keys on the Date header (SENTBEFORE,
//! SENTON, SENTSINCE) are answered with BAD.
//!
//! Flow: resolve every sequence and UID set of the criteria once into a
//! hash set ([`Criterion`]), then evaluate the criteria (an implicit AND)
//! for each message of the view; bodies are read only when a key needs
//! them. Invariant: the work per message does not grow with the size of
//! the sets, so `UID SEARCH UID 1:4294967295` stays linear.
//!
//! Text keys compare ASCII case-insensitively: each body is lower-cased
//! once and searched with a linear substring search, whatever the needle
//! (a naive window comparison costs needle × haystack). The bytes one
//! command may scan are bounded by [`MAX_SCANNED`] (each text key over
//! each message counts); beyond it the command ends with `NO [LIMIT]`
//! (RFC 5530 §3).

use std::cell::{Cell, OnceCell};
use std::collections::HashSet;

use chatmail_store::MessageMeta;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::message;
use crate::session::{Handled, Session, State};
use crate::status::Status;
use crate::view::View;

/// A key this server does not evaluate.
struct Unsupported;

/// Bytes of message text one SEARCH may scan.
pub(crate) const MAX_SCANNED: u64 = 256 * 1024 * 1024;

/// One message under test.
struct Candidate<'a> {
    seq: u32,
    meta: &'a MessageMeta,
    body: Option<&'a [u8]>,
    /// The body in ASCII lower case, made on first use.
    lower: OnceCell<Vec<u8>>,
    scan: &'a Scan,
}

impl Candidate<'_> {
    fn lower_body(&self) -> &[u8] {
        self.lower
            .get_or_init(|| self.body.unwrap_or_default().to_ascii_lowercase())
    }
}

/// What one command has scanned.
struct Scan {
    scanned: Cell<u64>,
    /// Set once the bound is reached; every later text test fails.
    exceeded: Cell<bool>,
}

impl Scan {
    fn new() -> Self {
        Self {
            scanned: Cell::new(0),
            exceeded: Cell::new(false),
        }
    }

    /// Counts `n` bytes; `false` once over [`MAX_SCANNED`].
    fn take(&self, n: usize) -> bool {
        let total = self.scanned.get().saturating_add(n as u64);
        self.scanned.set(total);
        if total > MAX_SCANNED {
            self.exceeded.set(true);
        }
        !self.exceeded.get()
    }
}

/// The criteria with their sets resolved against the view.
enum Criterion<'k> {
    /// The sequence numbers (or UIDs) a set names.
    In {
        numbers: HashSet<u32>,
        by_uid: bool,
    },
    And(Vec<Criterion<'k>>),
    Or(Box<Criterion<'k>>, Box<Criterion<'k>>),
    Not(Box<Criterion<'k>>),
    /// Any other key, tested against the message itself.
    Key(&'k SearchKey<'k>),
}

impl<'k> Criterion<'k> {
    fn compile(key: &'k SearchKey<'k>, view: &View) -> Self {
        use SearchKey as K;
        // A set naming messages beyond the mailbox matches nothing.
        let resolve = |set, by_uid: bool| {
            let pairs = view.resolve(set, by_uid).unwrap_or_default();
            let numbers = pairs
                .iter()
                .map(|&(seq, uid)| if by_uid { uid } else { seq })
                .collect();
            Criterion::In { numbers, by_uid }
        };
        match key {
            K::And(keys) => Criterion::And(
                keys.as_ref()
                    .iter()
                    .map(|k| Criterion::compile(k, view))
                    .collect(),
            ),
            K::Or(a, b) => Criterion::Or(
                Box::new(Criterion::compile(a, view)),
                Box::new(Criterion::compile(b, view)),
            ),
            K::Not(k) => Criterion::Not(Box::new(Criterion::compile(k, view))),
            K::SequenceSet(set) => resolve(set, false),
            K::Uid(set) => resolve(set, true),
            other => Criterion::Key(other),
        }
    }

    /// Every key is evaluated (no short cut), so an unsupported key is
    /// reported whatever the message.
    fn matches(&self, c: &Candidate<'_>) -> Result<bool, Unsupported> {
        Ok(match self {
            Criterion::In { numbers, by_uid } => {
                numbers.contains(if *by_uid { &c.meta.uid } else { &c.seq })
            }
            Criterion::And(all) => {
                let mut result = true;
                for criterion in all {
                    result &= criterion.matches(c)?;
                }
                result
            }
            Criterion::Or(a, b) => a.matches(c)? | b.matches(c)?,
            Criterion::Not(criterion) => !criterion.matches(c)?,
            Criterion::Key(key) => matches(key, c)?,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_search(
        &mut self,
        charset: Option<&Charset<'_>>,
        criteria: &[SearchKey<'_>],
        by_uid: bool,
    ) -> Handled {
        if let Some(charset) = charset
            && !["UTF-8", "US-ASCII"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(charset.as_ref()))
        {
            // RFC 3501 §6.4.4: unknown charset.
            return Ok(Status::bad_charset().into());
        }
        let store = self.store().clone();
        let State::Selected { view, .. } = &self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        let metas = store.messages(view.mailbox.id, 0).await?;
        let needs_body = criteria.iter().any(needs_body);
        let criterion = Criterion::And(
            criteria
                .iter()
                .map(|k| Criterion::compile(k, view))
                .collect(),
        );
        let mut found = Vec::new();
        let scan = Scan::new();
        for meta in &metas {
            let Some(seq) = view.seq_of(meta.uid) else {
                continue;
            };
            let body = if needs_body {
                store.body(view.mailbox.id, meta.uid).await?
            } else {
                None
            };
            let candidate = Candidate {
                seq,
                meta,
                body: body.as_deref(),
                lower: OnceCell::new(),
                scan: &scan,
            };
            let matched = criterion.matches(&candidate);
            if scan.exceeded.get() {
                return Ok(Status::search_limit().into());
            }
            match matched {
                Ok(true) => found.push(if by_uid { meta.uid } else { seq }),
                Ok(false) => {}
                Err(Unsupported) => return Ok(Status::unsupported_search_key().into()),
            }
        }
        let mut line = String::from("* SEARCH");
        for n in found {
            line.push_str(&format!(" {n}"));
        }
        self.io.line(&line);
        Ok(Status::completed("SEARCH").into())
    }
}

fn needs_body(key: &SearchKey<'_>) -> bool {
    use SearchKey as K;
    match key {
        K::And(keys) => keys.as_ref().iter().any(needs_body),
        K::Not(key) => needs_body(key),
        K::Or(a, b) => needs_body(a) || needs_body(b),
        K::Bcc(_)
        | K::Body(_)
        | K::Cc(_)
        | K::From(_)
        | K::Header(..)
        | K::Subject(_)
        | K::Text(_)
        | K::To(_) => true,
        _ => false,
    }
}

/// A key other than a set or a combination ([`Criterion`] handles those).
fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> Result<bool, Unsupported> {
    use SearchKey as K;
    let flag = |name: &str| c.meta.flags.iter().any(|f| f.eq_ignore_ascii_case(name));
    let day = unix_day(c.meta.internal_date);
    Ok(match key {
        K::All | K::Old => true,
        K::New | K::Recent => false,
        K::Answered => flag("\\Answered"),
        K::Unanswered => !flag("\\Answered"),
        K::Deleted => flag("\\Deleted"),
        K::Undeleted => !flag("\\Deleted"),
        K::Draft => flag("\\Draft"),
        K::Undraft => !flag("\\Draft"),
        K::Flagged => flag("\\Flagged"),
        K::Unflagged => !flag("\\Flagged"),
        K::Seen => flag("\\Seen"),
        K::Unseen => !flag("\\Seen"),
        K::Keyword(k) => flag(k.as_ref()),
        K::Unkeyword(k) => !flag(k.as_ref()),
        K::Larger(n) => c.meta.size > u64::from(*n),
        K::Smaller(n) => c.meta.size < u64::from(*n),
        // RFC 3501 §6.4.4: dates compare by day, ignoring time.
        K::Before(date) => day < date_day(date)?,
        K::On(date) => day == date_day(date)?,
        K::Since(date) => day >= date_day(date)?,
        K::Body(text) => {
            let lower = c.lower_body();
            let header_len = message::split(lower).0.len();
            contains(c.scan, &lower[header_len..], text.as_ref())
        }
        K::Text(text) => contains(c.scan, c.lower_body(), text.as_ref()),
        K::Header(name, text) => header_contains(c, name.as_ref(), text.as_ref()),
        K::Bcc(text) => header_contains(c, b"bcc", text.as_ref()),
        K::Cc(text) => header_contains(c, b"cc", text.as_ref()),
        K::From(text) => header_contains(c, b"from", text.as_ref()),
        K::Subject(text) => header_contains(c, b"subject", text.as_ref()),
        K::To(text) => header_contains(c, b"to", text.as_ref()),
        _ => return Err(Unsupported),
    })
}

fn header_contains(c: &Candidate<'_>, name: &[u8], text: &[u8]) -> bool {
    let (header, _) = message::split(c.body.unwrap_or_default());
    message::header_value(header, name)
        .is_some_and(|value| contains(c.scan, &value.to_ascii_lowercase(), text))
}

/// Whether `lower` (already in ASCII lower case) contains `needle`, ASCII
/// case-insensitively; the empty needle matches. Linear in both; counts
/// `lower` against the command's scan bound.
fn contains(scan: &Scan, lower: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !scan.take(lower.len()) {
        return false;
    }
    memchr::memmem::find(lower, &needle.to_ascii_lowercase()).is_some()
}

fn unix_day(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

fn date_day(date: &NaiveDate) -> Result<i64, Unsupported> {
    let midnight = date.as_ref().and_hms_opt(0, 0, 0).ok_or(Unsupported)?;
    Ok(unix_day(midnight.and_utc().timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use chatmail_store::MailboxInfo;

    fn meta(uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: vec![],
            size: 10,
            internal_date: 0,
        }
    }

    #[test]
    fn resolves_sets_once_and_tests_each_message_by_lookup() {
        let info = MailboxInfo {
            id: 1,
            name: "INBOX".into(),
            uidvalidity: 7,
            uidnext: 1,
            special_use: None,
        };
        let uids: Vec<u32> = (1..=20_000).map(|n| n * 2).collect();
        let view = View::new(info, false, uids.clone());
        let all = SearchKey::Uid("1:4294967295".try_into().unwrap());
        let tail = SearchKey::Not(Box::new(SearchKey::SequenceSet(
            "1:19998".try_into().unwrap(),
        )));
        let (all, tail) = (
            Criterion::compile(&all, &view),
            Criterion::compile(&tail, &view),
        );
        let Criterion::In { numbers, by_uid } = &all else {
            panic!("UID set not resolved up front");
        };
        assert!(*by_uid && numbers.len() == uids.len());
        let mut found = Vec::new();
        let scan = Scan::new();
        for (index, uid) in uids.iter().enumerate() {
            let meta = meta(*uid);
            let c = Candidate {
                seq: index as u32 + 1,
                meta: &meta,
                body: None,
                lower: OnceCell::new(),
                scan: &scan,
            };
            assert!(all.matches(&c).is_ok_and(|m| m));
            if tail.matches(&c).is_ok_and(|m| m) {
                found.push(c.seq);
            }
        }
        assert_eq!(found, vec![19_999, 20_000]);
    }

    #[test]
    fn finds_substrings_ignoring_ascii_case() {
        let scan = Scan::new();
        assert!(contains(&scan, b"hello world", b"WoRlD"));
        assert!(contains(&scan, b"abc", b""));
        assert!(!contains(&scan, b"ab", b"abc"));
    }

    #[test]
    fn a_long_needle_over_a_long_haystack_is_linear() {
        // Regression: a 58 KiB needle over a 1 MiB header took seconds.
        let haystack = vec![b'a'; 1 << 20];
        let mut needle = vec![b'a'; 58 * 1024];
        needle.push(b'b');
        let started = std::time::Instant::now();
        assert!(!contains(&Scan::new(), &haystack, &needle));
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn scanning_stops_at_the_bound() {
        let scan = Scan::new();
        let mib = vec![b'a'; 1 << 20];
        for _ in 0..MAX_SCANNED >> 20 {
            assert!(contains(&scan, &mib, b"a"));
        }
        assert!(!contains(&scan, &mib, b"a"));
        assert!(scan.exceeded.get());
    }
}
