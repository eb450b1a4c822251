//! SEARCH and UID SEARCH (RFC 3501 §6.4.4) over flags, sizes, dates,
//! sequence sets, headers and text. Keys on the Date header (SENTBEFORE,
//! SENTON, SENTSINCE) are answered with BAD.
//!
//! Flow: resolve every sequence and UID set of the criteria once into a
//! hash set ([`Criterion`]), then evaluate the criteria (an implicit AND)
//! for each message of the view; bodies are read only when a key needs
//! them. Invariant: the work per message does not grow with the size of
//! the sets, so `UID SEARCH UID 1:4294967295` stays linear.

use std::collections::HashSet;

use chatmail_store::MessageMeta;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::message;
use crate::session::{Done, Handled, Session, State};
use crate::view::View;

/// A key this server does not evaluate.
struct Unsupported;

/// One message under test.
struct Candidate<'a> {
    seq: u32,
    meta: &'a MessageMeta,
    body: Option<&'a [u8]>,
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
            return Ok(Done::no(
                "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset",
            ));
        }
        let store = self.store().clone();
        let State::Selected { view, .. } = &self.state else {
            return Ok(Done::bad("No mailbox selected"));
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
            };
            match criterion.matches(&candidate) {
                Ok(true) => found.push(if by_uid { meta.uid } else { seq }),
                Ok(false) => {}
                Err(Unsupported) => return Ok(Done::bad("Unsupported SEARCH key")),
            }
        }
        let mut line = String::from("* SEARCH");
        for n in found {
            line.push_str(&format!(" {n}"));
        }
        self.io.line(&line);
        Ok(Done::ok("SEARCH completed"))
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
        K::Body(text) => contains(message::split(c.body.unwrap_or_default()).1, text.as_ref()),
        K::Text(text) => contains(c.body.unwrap_or_default(), text.as_ref()),
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
    message::header_value(header, name).is_some_and(|value| contains(&value, text))
}

/// Case-insensitive (ASCII) substring test; the empty string matches.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
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
        for (index, uid) in uids.iter().enumerate() {
            let meta = meta(*uid);
            let c = Candidate {
                seq: index as u32 + 1,
                meta: &meta,
                body: None,
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
        assert!(contains(b"Hello World", b"world"));
        assert!(contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
    }
}
