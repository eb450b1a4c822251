//! SEARCH and UID SEARCH (RFC 3501 §6.4.4) over flags, sizes, dates,
//! sequence sets, headers and text. Keys on the Date header (SENTBEFORE,
//! SENTON, SENTSINCE) are answered with BAD.
//!
//! Flow: evaluate the criteria (an implicit AND) for each message of the
//! view; bodies are read only when a key needs them.

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
    view: &'a View,
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
                view,
            };
            let mut all = true;
            for key in criteria {
                match matches(key, &candidate) {
                    Ok(true) => {}
                    Ok(false) => all = false,
                    Err(Unsupported) => return Ok(Done::bad("Unsupported SEARCH key")),
                }
            }
            if all {
                found.push(if by_uid { meta.uid } else { seq });
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

fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> Result<bool, Unsupported> {
    use SearchKey as K;
    let flag = |name: &str| c.meta.flags.iter().any(|f| f.eq_ignore_ascii_case(name));
    let day = unix_day(c.meta.internal_date);
    Ok(match key {
        K::And(keys) => {
            let mut all = true;
            for key in keys.as_ref() {
                all &= matches(key, c)?;
            }
            all
        }
        K::Or(a, b) => matches(a, c)? | matches(b, c)?,
        K::Not(key) => !matches(key, c)?,
        K::All | K::Old => true,
        K::New | K::Recent => false,
        K::SequenceSet(set) => c
            .view
            .resolve(set, false)
            .is_ok_and(|v| v.iter().any(|t| t.0 == c.seq)),
        K::Uid(set) => c
            .view
            .resolve(set, true)
            .is_ok_and(|v| v.iter().any(|t| t.1 == c.meta.uid)),
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

    #[test]
    fn finds_substrings_ignoring_ascii_case() {
        assert!(contains(b"Hello World", b"world"));
        assert!(contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
    }
}
