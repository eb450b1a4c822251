//! Not-authenticated and any-state commands: CAPABILITY, ID, LOGOUT,
//! ENABLE, STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 3501 §6.1–6.2,
//! RFC 4959 SASL-IR, RFC 4616 PLAIN, RFC 2971 ID, RFC 5161 ENABLE).
//!
//! Invariants: before TLS, LOGINDISABLED is advertised and every password
//! is refused unread (RFC 3501 §6.2.3); passwords never reach the log; a
//! failed login looks the same whatever the reason; a client address with
//! too many recent failures gets `NO [UNAVAILABLE]` (RFC 5530 §3, a
//! temporary refusal) without its password being checked.

use std::time::Duration;

use base64::Engine;
use chatmail_accounts::LoginError;
use imap_codec::imap_types::auth::AuthMechanism;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::session::{Done, Flow, Handled, HandlerError, Session, State};
use crate::status::{Closing, Status};

/// How long the client may take to send the AUTHENTICATE response.
const SASL_TIMEOUT: Duration = Duration::from_secs(60);

/// Capabilities after login (docs/specifications.md §4). Delta Chat turns
/// COMPRESS=DEFLATE on as soon as it sees it; COMPRESS is only allowed
/// once authenticated, so it is not advertised before.
pub const AUTHENTICATED_CAPABILITIES: &str = "IMAP4rev1 IDLE MOVE UIDPLUS UNSELECT QUOTA METADATA ID ENABLE COMPRESS=DEFLATE XCHATMAIL XDELTAPUSH";

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The capability list for the current state.
    pub(crate) fn capabilities(&self) -> &'static str {
        match (self.state.account().is_some(), self.tls) {
            (true, _) => AUTHENTICATED_CAPABILITIES,
            (false, true) => "IMAP4rev1 SASL-IR ID ENABLE IDLE AUTH=PLAIN",
            // RFC 3501 §6.2.3 / §7.2.1: no plaintext passwords before TLS.
            (false, false) => "IMAP4rev1 SASL-IR ID ENABLE IDLE STARTTLS LOGINDISABLED",
        }
    }

    pub(crate) fn handle_capability(&mut self) -> Done {
        let caps = self.capabilities();
        self.io.line(&format!("* CAPABILITY {caps}"));
        Status::completed("CAPABILITY").into()
    }

    /// RFC 2971 §3.1: the server's identification.
    pub(crate) fn handle_id(&mut self) -> Done {
        self.io.line("* ID (\"name\" \"madmail\")");
        Status::completed("ID").into()
    }

    /// RFC 3501 §6.1.3: BYE before the tagged OK.
    pub(crate) fn handle_logout(&mut self) -> Done {
        self.io.status(None, &Status::bye(Closing::LoggingOut));
        Done {
            status: Status::completed("LOGOUT"),
            flow: Flow::Logout,
        }
    }

    /// RFC 5161 §3.1: nothing we could enable is supported, so the ENABLED
    /// response lists nothing.
    pub(crate) fn handle_enable(&mut self) -> Done {
        self.io.line("* ENABLED");
        Status::completed("ENABLE").into()
    }

    pub(crate) fn handle_starttls(&mut self) -> Done {
        if self.tls {
            return Status::tls_active().into();
        }
        Done {
            status: Status::begin_tls(),
            flow: Flow::StartTls,
        }
    }

    pub(crate) async fn handle_login(&mut self, username: &[u8], password: &[u8]) -> Handled {
        if !self.tls {
            return Ok(Status::privacy_required("LOGIN").into());
        }
        let (Ok(username), Ok(password)) =
            (std::str::from_utf8(username), std::str::from_utf8(password))
        else {
            return Ok(Status::login_failed().into());
        };
        self.login(username, password).await
    }

    pub(crate) async fn handle_authenticate(
        &mut self,
        mechanism: &AuthMechanism<'_>,
        initial: Option<&[u8]>,
    ) -> Handled {
        if !self.tls {
            return Ok(Status::privacy_required("AUTHENTICATE").into());
        }
        if *mechanism != AuthMechanism::Plain {
            return Ok(Status::unsupported_mechanism().into());
        }
        let response = match initial {
            Some(bytes) => bytes.to_vec(),
            None => match self.read_sasl_response().await? {
                Some(bytes) => bytes,
                None => return Ok(Status::authenticate_cancelled().into()),
            },
        };
        match parse_plain(&response) {
            Some((username, password)) => self.login(&username, &password).await,
            None => Ok(Status::login_failed().into()),
        }
    }

    /// Sends the empty challenge and reads one base64 line; `None` for a
    /// cancel (`*`, RFC 3501 §6.2.2) or malformed data.
    async fn read_sasl_response(&mut self) -> Result<Option<Vec<u8>>, HandlerError> {
        self.io.line("+ ");
        self.io.flush().await?;
        let deadline = self.sasl_deadline();
        let evicted = chatmail_limits::slots::evicted(self.slot.clone());
        let read = self.io.framer.read_line(
            &mut self.io.stream,
            crate::framing::Bounds::PRE_LOGIN.max_line,
            Some(deadline),
        );
        let line = tokio::select! {
            line = read => line,
            // The client takes its time: a newcomer may have its slot.
            () = evicted => Err(crate::framing::FrameError::Timeout),
        };
        let line = match line {
            Ok(line) => line,
            Err(crate::framing::FrameError::Io(e)) => return Err(e.into()),
            Err(e) => return Err(std::io::Error::other(e.to_string()).into()),
        };
        let text = line.strip_suffix(b"\r\n").unwrap_or(&line);
        if text == b"*" {
            return Ok(None);
        }
        Ok(base64::engine::general_purpose::STANDARD.decode(text).ok())
    }

    /// The SASL response is due within [`SASL_TIMEOUT`], and before the
    /// login deadline.
    fn sasl_deadline(&self) -> tokio::time::Instant {
        let deadline = tokio::time::Instant::now() + SASL_TIMEOUT;
        self.io.login_deadline.map_or(deadline, |d| d.min(deadline))
    }

    async fn login(&mut self, username: &str, password: &str) -> Handled {
        let no_log = self.ctx.settings.config.log.no_log;
        let accounts = &self.ctx.accounts;
        match accounts.login_from(username, password, self.peer).await {
            Ok(account) => {
                if !no_log {
                    tracing::info!(user = %account.address, "login");
                }
                // A ban or delete by the operator cancels this token.
                let guard = accounts
                    .sessions()
                    .register(&account.address, &self.shutdown);
                self.shutdown = guard.token().clone();
                self.io.shutdown = guard.token().clone();
                self.registration = Some(guard);
                self.state = State::Authenticated { account };
                self.io.write_timeout = crate::session::AUTHENTICATED_WRITE_TIMEOUT;
                self.io.login_deadline = None;
                if let Some(slot) = &self.slot {
                    slot.protect();
                }
                // docs/specifications.md §4: Delta Chat reads capabilities from this OK.
                Ok(Status::logged_in(AUTHENTICATED_CAPABILITIES).into())
            }
            Err(LoginError::Invalid) => {
                if !no_log {
                    tracing::info!(user = %username, "login failed");
                }
                Ok(Status::login_failed().into())
            }
            Err(LoginError::Temporary(e)) => Err(e.into()),
            // Password checks saturated: a temporary refusal (RFC 5530 §3).
            Err(LoginError::Busy) => Ok(Status::login_busy().into()),
            // Too many failures from this client address, password not
            // checked. RFC 5530 §3: UNAVAILABLE is the temporary failure
            // (the login may work later); AUTHENTICATIONFAILED would tell
            // the client its password is wrong, which nobody checked.
            Err(LoginError::Throttled) => {
                if !no_log {
                    tracing::info!("login refused: too many failures from this client");
                }
                Ok(Status::throttled().into())
            }
        }
    }
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`; an authorization
/// identity other than the authentication identity is refused.
pub fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let (authzid, authcid, passwd) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return None;
    }
    Some((
        String::from_utf8(authcid.to_vec()).ok()?,
        String::from_utf8(passwd.to_vec()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_responses() {
        assert_eq!(
            parse_plain(b"\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
    }

    #[test]
    fn refuses_foreign_authorization_identities_and_garbage() {
        assert_eq!(parse_plain(b"bob\0alice\0secret"), None);
        assert_eq!(parse_plain(b"alice\0secret"), None);
        assert_eq!(parse_plain(b"\0\0secret"), None);
        assert_eq!(parse_plain(b"\0a\0b\0c"), None);
    }

    #[test]
    fn advertises_compression_and_the_chatmail_extensions_after_login() {
        assert!(AUTHENTICATED_CAPABILITIES.contains(" COMPRESS=DEFLATE "));
        assert!(AUTHENTICATED_CAPABILITIES.contains("XCHATMAIL"));
        assert!(AUTHENTICATED_CAPABILITIES.contains("XDELTAPUSH"));
    }
}
