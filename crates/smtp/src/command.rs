//! SMTP command parsing (RFC 5321 §4.1, RFC 4954, RFC 3207). Pure: no I/O,
//! no panics on any input.
//!
//! The input is one command line without its line ending. Addresses in
//! `MAIL FROM` and `RCPT TO` are returned as written between `<` and `>`;
//! address literals such as `user@[192.0.2.1]` are accepted because
//! IP-only relays use them (RFC 5321 §4.1.3).

/// Longest address accepted in a path (RFC 5321 §4.5.3.1.3 gives 256 for
/// the whole path including the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    StartTls,
    Auth {
        mechanism: Mechanism,
        /// Initial response (RFC 4954 §4), still base64.
        initial: Option<String>,
    },
}

/// SASL mechanisms this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// `MAIL FROM` with the parameters that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse-path; empty for the null sender `<>`.
    pub address: String,
    /// The `SIZE=` declaration (RFC 1870 §6), if any.
    pub size: Option<u64>,
}

/// Why a command line was refused; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command")]
    Unknown,
    #[error("syntax error")]
    Syntax,
    #[error("bad sender address syntax")]
    Sender,
    #[error("bad recipient address syntax")]
    Recipient,
    #[error("unsupported parameter")]
    Parameter,
    #[error("unsupported authentication mechanism")]
    Mechanism,
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax)?;
    let (verb, rest) = match line.split_once(' ') {
        Some((verb, rest)) => (verb, rest.trim()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => parse_hello(rest).map(Command::Ehlo),
        "HELO" => parse_hello(rest).map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_argument(rest, Command::Data),
        "RSET" => no_argument(rest, Command::Rset),
        "QUIT" => no_argument(rest, Command::Quit),
        "STARTTLS" => no_argument(rest, Command::StartTls),
        "NOOP" => Ok(Command::Noop), // RFC 5321 §4.1.1.9: argument ignored
        "HELP" => Ok(Command::Help),
        "VRFY" if !rest.is_empty() => Ok(Command::Vrfy),
        "AUTH" => parse_auth(rest),
        _ => Err(ParseError::Unknown),
    }
}

fn no_argument(rest: &str, command: Command) -> Result<Command, ParseError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax)
    }
}

fn parse_hello(rest: &str) -> Result<String, ParseError> {
    let valid = |b: u8| b.is_ascii_graphic();
    if rest.is_empty() || rest.len() > 255 || !rest.bytes().all(valid) {
        return Err(ParseError::Syntax);
    }
    Ok(rest.to_owned())
}

/// `MAIL FROM:<path> [params]` (RFC 5321 §4.1.1.2).
fn parse_mail(rest: &str) -> Result<Command, ParseError> {
    let (address, params) = parse_path(rest, "FROM:")?;
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => size = Some(value.parse().map_err(|_| ParseError::Syntax)?), // RFC 1870 §6
            "BODY" if is_body_type(value) => {}                                    // RFC 6152 §2
            "SMTPUTF8" if value.is_empty() => {}                                   // RFC 6531 §3.4
            "AUTH" if !value.is_empty() => {} // RFC 4954 §5: ignored
            _ => return Err(ParseError::Parameter),
        }
    }
    if !address.is_empty() && !is_address(&address) {
        return Err(ParseError::Sender);
    }
    Ok(Command::Mail(MailFrom { address, size }))
}

fn is_body_type(value: &str) -> bool {
    value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME")
}

/// `RCPT TO:<path>` (RFC 5321 §4.1.1.3); no parameters are advertised.
fn parse_rcpt(rest: &str) -> Result<Command, ParseError> {
    let (address, params) = parse_path(rest, "TO:")?;
    if !params.trim().is_empty() {
        return Err(ParseError::Parameter);
    }
    if !is_address(&address) {
        return Err(ParseError::Recipient);
    }
    Ok(Command::Rcpt(address))
}

/// Splits `FROM:<addr> params` into the address and the parameter text.
/// Tolerates a space after the colon, as many clients send one.
fn parse_path<'a>(rest: &'a str, keyword: &str) -> Result<(String, &'a str), ParseError> {
    let head = rest.get(..keyword.len()).ok_or(ParseError::Syntax)?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(ParseError::Syntax);
    }
    let path = rest[keyword.len()..].trim_start();
    let path = path.strip_prefix('<').ok_or(ParseError::Syntax)?;
    let end = path.find('>').ok_or(ParseError::Syntax)?;
    let (address, params) = (&path[..end], &path[end + 1..]);
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(ParseError::Syntax);
    }
    // RFC 5321 §4.1.2: a source route `@a,@b:` is ignored.
    let address = match address.split_once(':') {
        Some((route, address)) if route.starts_with('@') => address,
        _ => address,
    };
    Ok((address.to_owned(), params))
}

/// Whether `text` is a plausible mailbox: one `@`, non-empty local part
/// and domain, no spaces or control characters, bounded length.
pub fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let printable = |s: &str| s.chars().all(|c| !c.is_control() && !c.is_whitespace());
    !local.is_empty()
        && !domain.is_empty()
        && text.len() <= MAX_ADDRESS_LEN
        && !local.contains('@')
        && !local.contains(['<', '>'])
        && printable(text)
        && is_domain(domain)
}

fn is_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        return literal
            .strip_suffix(']')
            .is_some_and(|l| !l.contains(['[', ']']));
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// `AUTH mechanism [initial-response]` (RFC 4954 §4).
fn parse_auth(rest: &str) -> Result<Command, ParseError> {
    let mut words = rest.split_ascii_whitespace();
    let mechanism = match words.next().map(str::to_ascii_uppercase).as_deref() {
        Some("PLAIN") => Mechanism::Plain,
        Some("LOGIN") => Mechanism::Login,
        Some(_) => return Err(ParseError::Mechanism),
        None => return Err(ParseError::Syntax),
    };
    let initial = words.next().map(str::to_owned);
    if words.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(address: &str, size: Option<u64>) -> Command {
        Command::Mail(MailFrom {
            address: address.into(),
            size,
        })
    }

    #[test]
    fn parses_what_delta_chat_sends() {
        assert_eq!(
            parse_command(b"EHLO [127.0.0.1]"),
            Ok(Command::Ehlo("[127.0.0.1]".into()))
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8"),
            Ok(mail("a@example.org", None))
        );
        assert_eq!(
            parse_command(b"RCPT TO:<b@example.org>"),
            Ok(Command::Rcpt("b@example.org".into()))
        );
        assert_eq!(parse_command(b"data"), Ok(Command::Data));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
        assert_eq!(
            parse_command(b"AUTH PLAIN AGFAYgBj"),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGFAYgBj".into())
            })
        );
    }

    #[test]
    fn accepts_address_literals_and_size() {
        assert_eq!(
            parse_command(b"mail from: <u@[192.0.2.1]> SIZE=1234"),
            Ok(mail("u@[192.0.2.1]", Some(1234)))
        );
        assert_eq!(parse_command(b"MAIL FROM:<>"), Ok(mail("", None)));
    }

    #[test]
    fn rejects_malformed_paths_and_parameters() {
        assert_eq!(
            parse_command(b"RCPT TO:<nobody>"),
            Err(ParseError::Recipient)
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a b@x.org>"),
            Err(ParseError::Recipient)
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a@@x.org>"),
            Err(ParseError::Recipient)
        );
        assert_eq!(parse_command(b"RCPT TO:b@x.org"), Err(ParseError::Syntax));
        assert_eq!(
            parse_command(b"RCPT TO:<b@x.org> NOTIFY=NEVER"),
            Err(ParseError::Parameter)
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@x.org> SIZE=big"),
            Err(ParseError::Syntax)
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@x.org> FOO"),
            Err(ParseError::Parameter)
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@x.org>X"),
            Err(ParseError::Syntax)
        );
        assert_eq!(parse_command(b"XYZZY"), Err(ParseError::Unknown));
        assert_eq!(parse_command(b"AUTH CRAM-MD5"), Err(ParseError::Mechanism));
        assert_eq!(parse_command(b"DATA now"), Err(ParseError::Syntax));
        assert_eq!(parse_command(&[0xff, 0xfe]), Err(ParseError::Syntax));
    }

    #[test]
    fn drops_source_routes() {
        assert_eq!(
            parse_command(b"RCPT TO:<@relay.example:b@x.org>"),
            Ok(Command::Rcpt("b@x.org".into()))
        );
    }
}
