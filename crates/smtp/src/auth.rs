//! `AUTH PLAIN` and `AUTH LOGIN` (RFC 4954) against the account service,
//! which creates accounts on first login (docs/specifications.md §1).
//!
//! Invariants: AUTH is refused before TLS; the password never reaches a
//! log line; three failed attempts close the connection. A client address
//! with too many recent failures (over all its connections) gets
//! `454 4.7.0` without a password check (`chatmail_accounts`), which also
//! counts towards the three.

use chatmail_accounts::LoginError;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::command::Mechanism;
use crate::reply::Reply;
use crate::sasl::{self, Credentials, SaslError};
use crate::session::{Flow, Session};
use crate::wire::Line;

/// Outcome of reading the client's side of an exchange.
enum Exchange {
    Done(Credentials),
    Failed(Reply),
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Why AUTH cannot run now, if it cannot.
    pub(crate) fn auth_refusal(&self) -> Option<Reply> {
        if self.mx {
            // docs/specifications.md §3: the MX takes mail for local users, never logins.
            return Some(Reply::line(502, "5.5.1 AUTH not available on this port"));
        }
        if !self.tls {
            // RFC 3207 §4 / RFC 4954 §4: no credentials in cleartext.
            return Some(Reply::line(
                530,
                "5.7.0 Must issue a STARTTLS command first",
            ));
        }
        if !self.has_hello() {
            return Some(Reply::line(503, "5.5.1 Send EHLO first"));
        }
        if self.login.is_some() {
            return Some(Reply::line(503, "5.5.1 Already authenticated")); // RFC 4954 §4
        }
        if self.transaction.is_some() {
            return Some(Reply::line(
                503,
                "5.5.1 Not allowed during a mail transaction",
            ));
        }
        None
    }

    pub(crate) async fn handle_auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
    ) -> std::io::Result<Flow> {
        let exchange = match mechanism {
            Mechanism::Plain => self.exchange_plain(initial).await?,
            Mechanism::Login => self.exchange_login(initial).await?,
        };
        let credentials = match exchange {
            Exchange::Done(credentials) => credentials,
            Exchange::Failed(reply) => return Ok(self.send(reply)),
            Exchange::Closed => return Ok(Flow::Close),
        };
        Ok(self.verify(credentials).await)
    }

    async fn verify(&mut self, credentials: Credentials) -> Flow {
        let accounts = self.shared.ctx.accounts.clone();
        let (username, password) = (&credentials.username, &credentials.password);
        match accounts.login_from(username, password, self.peer).await {
            Ok(account) => {
                if self.log() {
                    tracing::info!(user = %account.address, "authenticated");
                }
                self.login = Some(account);
                self.logged_in();
                self.reply(235, "2.7.0 Authentication successful")
            }
            Err(LoginError::Invalid) => {
                if self.log() {
                    tracing::info!(user = %credentials.username, "authentication failed");
                }
                self.reply(535, "5.7.8 Authentication credentials invalid");
                if self.too_many_auth_failures() {
                    self.reply(421, "4.7.0 Too many failed authentications");
                    return Flow::Close;
                }
                Flow::Continue
            }
            Err(LoginError::Temporary(error)) => {
                if self.log() {
                    tracing::warn!(%error, "login failed temporarily");
                }
                self.reply(454, "4.7.0 Temporary authentication failure")
            }
            // Too many password checks in flight: try again shortly.
            Err(LoginError::Busy) => self.reply(454, "4.7.0 Server busy, try again later"),
            // RFC 4954 §6: 454 is the temporary authentication failure, as
            // for Busy; the password was not checked, so 535 would be wrong.
            Err(LoginError::Throttled) => {
                if self.log() {
                    tracing::info!("authentication refused: too many failures from this client");
                }
                self.reply(454, "4.7.0 Too many failed logins, try again later");
                if self.too_many_auth_failures() {
                    self.reply(421, "4.7.0 Too many failed authentications");
                    return Flow::Close;
                }
                Flow::Continue
            }
        }
    }

    /// PLAIN (RFC 4616), with the initial response or one `334` round.
    async fn exchange_plain(&mut self, initial: Option<String>) -> std::io::Result<Exchange> {
        let response = match initial {
            Some(initial) => initial,
            None => match self.challenge("").await? {
                Some(response) => response,
                None => return Ok(Exchange::Closed),
            },
        };
        Ok(
            match sasl::decode(&response).and_then(|m| sasl::parse_plain(&m)) {
                Ok(credentials) => Exchange::Done(credentials),
                Err(error) => Exchange::Failed(sasl_error_reply(&error)),
            },
        )
    }

    /// LOGIN: username (possibly as initial response), then password.
    async fn exchange_login(&mut self, initial: Option<String>) -> std::io::Result<Exchange> {
        let mut parts = Vec::with_capacity(2);
        let mut initial = initial;
        for prompt in [sasl::LOGIN_USERNAME, sasl::LOGIN_PASSWORD] {
            let response = match initial.take() {
                Some(response) => response,
                None => match self.challenge(prompt).await? {
                    Some(response) => response,
                    None => return Ok(Exchange::Closed),
                },
            };
            match sasl::decode(&response).and_then(|m| sasl::parse_login_part(&m)) {
                Ok(part) => parts.push(part),
                Err(error) => return Ok(Exchange::Failed(sasl_error_reply(&error))),
            }
        }
        let (Some(password), Some(username)) = (parts.pop(), parts.pop()) else {
            return Ok(Exchange::Failed(sasl_error_reply(&SaslError::Malformed)));
        };
        Ok(Exchange::Done(Credentials { username, password }))
    }

    /// Sends `334 <text>` and reads the client's line; `None` if the
    /// connection ends.
    async fn challenge(&mut self, text: &'static str) -> std::io::Result<Option<String>> {
        self.wire.queue(&Reply::line(334, text));
        Ok(match self.next_line().await? {
            Line::Text(line) => Some(String::from_utf8_lossy(&line).into_owned()),
            Line::TooLong => Some("!".to_owned()), // not base64: fails decoding
            Line::Eof => None,
        })
    }
}

fn sasl_error_reply(error: &SaslError) -> Reply {
    match error {
        SaslError::Cancelled => Reply::line(501, "5.0.0 Authentication cancelled"),
        SaslError::Base64 => Reply::line(501, "5.5.2 Cannot decode response"),
        SaslError::Malformed => Reply::line(535, "5.7.8 Authentication credentials invalid"),
    }
}
