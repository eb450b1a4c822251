//! FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8).
//!
//! Flow: translate the requested items into [`Item`]s (unsupported ones make
//! the command BAD before anything is read; an item named twice is
//! answered once; at most [`MAX_BODY_ITEMS`] body items), resolve the set
//! against the session's view, read the metadata once, set `\Seen` in one
//! batch when a non-peek body item asks for it, then emit one FETCH
//! response per message, reading each body only when a body item needs it.
//!
//! Memory: responses are written out item by item once a quarter MiB is
//! buffered, and a large body section goes to the stream straight from the
//! message, so a connection holds at most one message and one section
//! however many items or messages a command names.
//!
//! Supported: UID, FLAGS, RFC822.SIZE, INTERNALDATE, BODY[] / BODY.PEEK[]
//! with HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT and partial ranges,
//! RFC822, RFC822.HEADER, RFC822.TEXT, and the FAST macro. ENVELOPE,
//! BODYSTRUCTURE and MIME part numbers are answered with BAD.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chatmail_store::{FlagOp, MessageMeta};
use imap_codec::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItemName, Section,
};
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::message;
use crate::response;
use crate::session::{Handled, Session, State};
use crate::status::Status;

/// Which bytes of the message a body item returns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Full,
    Header,
    Fields { names: Vec<Vec<u8>>, exclude: bool },
    Text,
}

/// One requested data item, ready to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    Size,
    InternalDate,
    Body {
        /// The item name as echoed in the response, e.g. `BODY[HEADER]`.
        label: String,
        part: Part,
        /// `<origin.count>` (RFC 3501 §6.4.5).
        partial: Option<(u32, u32)>,
        /// Whether reading it sets `\Seen`.
        sets_seen: bool,
    },
}

impl Item {
    fn needs_body(&self) -> bool {
        matches!(self, Item::Body { .. })
    }
}

/// Why a FETCH is refused before anything is read; the text is the one
/// the `BAD` reply carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    /// ALL and FULL name ENVELOPE (and BODY).
    #[error("FETCH item {0} is not supported")]
    Macro(Macro),
    /// ENVELOPE, BODYSTRUCTURE (also for BODY) and BINARY.
    #[error("FETCH item {0} is not supported")]
    Item(&'static str),
    /// A MIME part number (`BODY[1]`, `BODY[1.MIME]`).
    #[error("FETCH item BODY[<part>] is not supported")]
    PartNumber,
}

/// Body items one FETCH may name (Delta Chat names one or two).
pub(crate) const MAX_BODY_ITEMS: usize = 32;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_fetch(
        &mut self,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        by_uid: bool,
    ) -> Handled {
        let mut items = match to_items(names) {
            Ok(items) => items,
            Err(error) => return Ok(Status::unsupported_fetch(&error).into()),
        };
        if items.iter().filter(|i| i.needs_body()).count() > MAX_BODY_ITEMS {
            return Ok(Status::too_many_body_items().into());
        }
        // RFC 3501 §6.4.8: UID FETCH responses always carry the UID.
        if by_uid && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        let State::Selected { view, .. } = &self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        let Ok(targets) = view.resolve(set, by_uid) else {
            return Ok(Status::invalid_sequence().into());
        };
        let (mailbox, read_only) = (view.mailbox.id, view.read_only);
        let Some(&(_, first_uid)) = targets.first() else {
            return Ok(Status::completed("FETCH").into());
        };
        let store = self.store().clone();
        let mut metas: HashMap<u32, MessageMeta> = store
            .messages(mailbox, first_uid - 1)
            .await?
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        let mut flags_changed = HashSet::new();
        // RFC 3501 §6.4.5: BODY[...] without PEEK sets \Seen.
        if !read_only
            && items.iter().any(|i| {
                matches!(
                    i,
                    Item::Body {
                        sets_seen: true,
                        ..
                    }
                )
            })
        {
            let unseen: Vec<u32> = targets
                .iter()
                .map(|t| t.1)
                .filter(|uid| metas.get(uid).is_some_and(|m| !has_flag(m, "\\Seen")))
                .collect();
            if !unseen.is_empty() {
                for (uid, flags) in store
                    .set_flags(mailbox, &unseen, FlagOp::Add, &["\\Seen".to_owned()])
                    .await?
                {
                    if let Some(meta) = metas.get_mut(&uid) {
                        meta.flags = flags;
                        flags_changed.insert(uid);
                    }
                }
            }
        }
        let needs_body = items.iter().any(Item::needs_body);
        for (seq, uid) in targets {
            let Some(meta) = metas.get(&uid) else {
                continue;
            };
            let body = if needs_body {
                match store.body(mailbox, uid).await? {
                    Some(body) => Some(body),
                    None => continue,
                }
            } else {
                None
            };
            let extra_flags = flags_changed.contains(&uid) && !items.contains(&Item::Flags);
            let body = body.as_deref();
            fetch_start(&mut self.io.out, seq);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    self.io.out.push(b' ');
                }
                match body_section(item, body) {
                    Some((label, data)) if data.len() > LARGE_SECTION => {
                        self.io.out.extend_from_slice(label.as_bytes());
                        self.io.out.push(b' ');
                        self.io.write_large_literal(&data).await?;
                    }
                    Some((label, data)) => write_section(&mut self.io.out, label, &data),
                    None => write_item(&mut self.io.out, meta, body, item),
                }
                self.io.flush_if_large().await?;
            }
            fetch_end(&mut self.io.out, meta, !items.is_empty(), extra_flags);
            self.io.flush_if_large().await?;
        }
        Ok(Status::completed("FETCH").into())
    }
}

fn has_flag(meta: &MessageMeta, flag: &str) -> bool {
    meta.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Sections larger than this are written to the stream directly.
const LARGE_SECTION: usize = 64 * 1024;

/// Appends `* seq FETCH (...)` for one message.
#[cfg(test)]
fn write_fetch(
    out: &mut Vec<u8>,
    seq: u32,
    meta: &MessageMeta,
    body: Option<&[u8]>,
    items: &[Item],
    extra_flags: bool,
) {
    fetch_start(out, seq);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_item(out, meta, body, item);
    }
    fetch_end(out, meta, !items.is_empty(), extra_flags);
}

fn fetch_start(out: &mut Vec<u8>, seq: u32) {
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
}

/// Closes a FETCH response, adding the FLAGS a `\Seen` change implies
/// when the items did not ask for them.
fn fetch_end(out: &mut Vec<u8>, meta: &MessageMeta, after_items: bool, extra_flags: bool) {
    if extra_flags {
        if after_items {
            out.push(b' ');
        }
        out.extend_from_slice(b"FLAGS ");
        response::flag_list(out, &meta.flags);
    }
    out.extend_from_slice(b")\r\n");
}

/// The label and bytes of a body item.
fn body_section<'a>(item: &'a Item, body: Option<&'a [u8]>) -> Option<(&'a str, Cow<'a, [u8]>)> {
    let Item::Body {
        label,
        part,
        partial,
        ..
    } = item
    else {
        return None;
    };
    let data = match section(body.unwrap_or_default(), part) {
        Cow::Borrowed(data) => Cow::Borrowed(slice(data, *partial)),
        Cow::Owned(data) => Cow::Owned(slice(&data, *partial).to_vec()),
    };
    Some((label, data))
}

/// Appends one data item of a FETCH response.
fn write_item(out: &mut Vec<u8>, meta: &MessageMeta, body: Option<&[u8]>, item: &Item) {
    match item {
        Item::Uid => out.extend_from_slice(format!("UID {}", meta.uid).as_bytes()),
        Item::Flags => {
            out.extend_from_slice(b"FLAGS ");
            response::flag_list(out, &meta.flags);
        }
        Item::Size => out.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes()),
        Item::InternalDate => out.extend_from_slice(
            format!(
                "INTERNALDATE {}",
                response::internal_date(meta.internal_date)
            )
            .as_bytes(),
        ),
        Item::Body { .. } => {
            if let Some((label, data)) = body_section(item, body) {
                write_section(out, label, &data);
            }
        }
    }
}

/// Appends `label {n}\r\n<data>`.
fn write_section(out: &mut Vec<u8>, label: &str, data: &[u8]) {
    out.extend_from_slice(label.as_bytes());
    out.push(b' ');
    response::literal(out, data);
}

fn section<'a>(body: &'a [u8], part: &Part) -> Cow<'a, [u8]> {
    let (header, text) = message::split(body);
    match part {
        Part::Full => Cow::Borrowed(body),
        Part::Header => Cow::Borrowed(header),
        Part::Text => Cow::Borrowed(text),
        Part::Fields { names, exclude } => {
            let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            Cow::Owned(message::header_fields(header, &names, *exclude))
        }
    }
}

fn slice(data: &[u8], partial: Option<(u32, u32)>) -> &[u8] {
    match partial {
        None => data,
        Some((origin, count)) => {
            let start = (origin as usize).min(data.len());
            let end = start.saturating_add(count as usize).min(data.len());
            &data[start..end]
        }
    }
}

/// Translates the parsed item names; `Err` names the first unsupported one.
fn to_items(names: MacroOrMessageDataItemNames<'_>) -> Result<Vec<Item>, FetchError> {
    match names {
        // RFC 3501 §6.4.5: FAST = (FLAGS INTERNALDATE RFC822.SIZE).
        MacroOrMessageDataItemNames::Macro(Macro::Fast) => {
            Ok(vec![Item::Flags, Item::InternalDate, Item::Size])
        }
        MacroOrMessageDataItemNames::Macro(other) => Err(FetchError::Macro(other)),
        MacroOrMessageDataItemNames::MessageDataItemNames(names) => {
            let mut items: Vec<Item> = Vec::new();
            for name in names {
                let item = to_item(name)?;
                // The same item twice is answered once (RFC 3501 does not
                // ask for repeats; answering each would multiply the reply).
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            Ok(items)
        }
    }
}

fn to_item(name: MessageDataItemName<'_>) -> Result<Item, FetchError> {
    use MessageDataItemName as N;
    let body = |label: &str, part: Part, sets_seen: bool| Item::Body {
        label: label.to_owned(),
        part,
        partial: None,
        sets_seen,
    };
    Ok(match name {
        N::Uid => Item::Uid,
        N::Flags => Item::Flags,
        N::Rfc822Size => Item::Size,
        N::InternalDate => Item::InternalDate,
        N::Rfc822 => body("RFC822", Part::Full, true),
        N::Rfc822Header => body("RFC822.HEADER", Part::Header, false),
        N::Rfc822Text => body("RFC822.TEXT", Part::Text, true),
        N::BodyExt {
            section,
            partial,
            peek,
        } => {
            let (spec, part) = section_part(section.as_ref())?;
            let mut label = format!("BODY[{spec}]");
            if let Some((origin, _)) = partial {
                label.push_str(&format!("<{origin}>"));
            }
            Item::Body {
                label,
                part,
                partial: partial.map(|(o, c)| (o, c.get())),
                sets_seen: !peek,
            }
        }
        N::Envelope => return Err(FetchError::Item("ENVELOPE")),
        N::Body | N::BodyStructure => return Err(FetchError::Item("BODYSTRUCTURE")),
        _ => return Err(FetchError::Item("BINARY")),
    })
}

/// The section text to echo and the bytes it selects.
fn section_part(section: Option<&Section<'_>>) -> Result<(String, Part), FetchError> {
    let list = |names: &[imap_codec::imap_types::core::AString<'_>]| {
        let mut text = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                text.push(b' ');
            }
            response::astring(&mut text, name.as_ref());
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        (
            text,
            names
                .iter()
                .map(|n| n.as_ref().to_vec())
                .collect::<Vec<_>>(),
        )
    };
    Ok(match section {
        None => (String::new(), Part::Full),
        Some(Section::Header(None)) => ("HEADER".into(), Part::Header),
        Some(Section::Text(None)) => ("TEXT".into(), Part::Text),
        Some(Section::HeaderFields(None, names)) => {
            let (text, names) = list(names.as_ref());
            (
                format!("HEADER.FIELDS ({text})"),
                Part::Fields {
                    names,
                    exclude: false,
                },
            )
        }
        Some(Section::HeaderFieldsNot(None, names)) => {
            let (text, names) = list(names.as_ref());
            (
                format!("HEADER.FIELDS.NOT ({text})"),
                Part::Fields {
                    names,
                    exclude: true,
                },
            )
        }
        Some(_) => return Err(FetchError::PartNumber),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"Message-ID: <1@x>\r\nFrom: a@example.org\r\n\r\nhello\r\n";

    fn meta() -> MessageMeta {
        MessageMeta {
            uid: 7,
            flags: vec!["\\Seen".into()],
            size: BODY.len() as u64,
            internal_date: 0,
        }
    }

    /// The items of `FETCH 1 <text>`, or why they are refused.
    fn parse(text: &str) -> Result<Vec<Item>, FetchError> {
        let command = format!("a FETCH 1 {text}\r\n");
        let codec = imap_codec::CommandCodec::default();
        let (_, parsed) = imap_codec::decode::Decoder::decode(&codec, command.as_bytes()).unwrap();
        let imap_codec::imap_types::command::CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = parsed.body
        else {
            panic!()
        };
        to_items(macro_or_item_names)
    }

    fn items(text: &str) -> Vec<Item> {
        parse(text).unwrap()
    }

    fn fetched(items: &[Item]) -> String {
        let mut out = Vec::new();
        write_fetch(&mut out, 3, &meta(), Some(BODY), items, false);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn answers_delta_chats_header_fetch() {
        let out = fetched(&items(
            "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID CHAT-VERSION)])",
        ));
        assert_eq!(
            out,
            "* 3 FETCH (UID 7 RFC822.SIZE 49 BODY[HEADER.FIELDS (MESSAGE-ID CHAT-VERSION)] {21}\r\nMessage-ID: <1@x>\r\n\r\n)\r\n"
        );
    }

    #[test]
    fn returns_whole_bodies_text_and_partials() {
        let out = fetched(&items("(FLAGS BODY.PEEK[])"));
        assert_eq!(
            out,
            format!(
                "* 3 FETCH (FLAGS (\\Seen) BODY[] {{49}}\r\n{})\r\n",
                String::from_utf8_lossy(BODY)
            )
        );
        let out = fetched(&items("(BODY[TEXT] BODY.PEEK[]<0.7>)"));
        assert_eq!(
            out,
            "* 3 FETCH (BODY[TEXT] {7}\r\nhello\r\n BODY[]<0> {7}\r\nMessage)\r\n"
        );
    }

    #[test]
    fn answers_an_item_named_many_times_once() {
        let many = vec!["BODY.PEEK[]"; 1000].join(" ");
        let items = items(&format!("(UID {many} UID)"));
        assert_eq!(items.len(), 2, "{items:?}");
        let out = fetched(&items);
        assert_eq!(out.matches("BODY[]").count(), 1, "{out}");
    }

    #[test]
    fn marks_only_non_peek_items_as_setting_seen() {
        assert!(matches!(
            items("BODY[]")[0],
            Item::Body {
                sets_seen: true,
                ..
            }
        ));
        assert!(matches!(
            items("BODY.PEEK[]")[0],
            Item::Body {
                sets_seen: false,
                ..
            }
        ));
        assert!(matches!(
            items("RFC822")[0],
            Item::Body {
                sets_seen: true,
                ..
            }
        ));
    }

    #[test]
    fn refuses_unsupported_items() {
        assert!(parse("(BODYSTRUCTURE)").is_err());
    }

    fn refusal(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_unsupported_item() {
        assert_eq!(refusal("ALL"), "FETCH item ALL is not supported");
        assert_eq!(refusal("ENVELOPE"), "FETCH item ENVELOPE is not supported");
        assert_eq!(
            refusal("(UID BODY)"),
            "FETCH item BODYSTRUCTURE is not supported"
        );
        assert_eq!(refusal("BINARY[]"), "FETCH item BINARY is not supported");
        assert_eq!(
            refusal("BODY.PEEK[1.MIME]"),
            "FETCH item BODY[<part>] is not supported"
        );
    }
}
