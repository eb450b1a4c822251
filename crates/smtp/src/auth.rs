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
use crate::reply::{Reply, Status};
use crate::sasl::{self, Credentials, SaslError};
use crate::session::{Flow, Role, Session};
use crate::wire::Line;

/// Outcome of reading the client's side of an exchange.
enum Exchange {
    Done(Credentials),
    Failed(Status),
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Why AUTH cannot run now, if it cannot.
    pub(crate) fn auth_refusal(&self) -> Option<Status> {
        if self.role == Role::Mx {
            // docs/specifications.md §3: the MX takes mail for local users, never logins.
            return Some(Status::AuthNotOffered);
        }
        if !self.tls {
            // RFC 3207 §4 / RFC 4954 §4: no credentials in cleartext.
            return Some(Status::TlsRequired);
        }
        if !self.has_hello() {
            return Some(Status::HelloFirst);
        }
        if self.login.is_some() {
            return Some(Status::AlreadyAuthenticated); // RFC 4954 §4
        }
        if self.transaction().is_some() {
            return Some(Status::AuthDuringMail);
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
            Exchange::Failed(status) => return Ok(self.reply(status)),
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
                self.reply(Status::AuthSucceeded)
            }
            Err(LoginError::Invalid) => {
                if self.log() {
                    tracing::info!(user = %credentials.username, "authentication failed");
                }
                self.reply(Status::CredentialsInvalid);
                if self.too_many_auth_failures() {
                    self.reply(Status::TooManyAuthFailures);
                    return Flow::Close;
                }
                Flow::Continue
            }
            Err(LoginError::Temporary(error)) => {
                if self.log() {
                    tracing::warn!(%error, "login failed temporarily");
                }
                self.reply(Status::AuthTemporary)
            }
            // Too many password checks in flight: try again shortly.
            Err(LoginError::Busy) => self.reply(Status::AuthBusy),
            // RFC 4954 §6: 454 is the temporary authentication failure, as
            // for Busy; the password was not checked, so 535 would be wrong.
            Err(LoginError::Throttled) => {
                if self.log() {
                    tracing::info!("authentication refused: too many failures from this client");
                }
                self.reply(Status::AuthThrottled);
                if self.too_many_auth_failures() {
                    self.reply(Status::TooManyAuthFailures);
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
            None => match self.challenge(Status::EmptyPrompt).await? {
                Some(response) => response,
                None => return Ok(Exchange::Closed),
            },
        };
        Ok(
            match sasl::decode(&response).and_then(|m| sasl::parse_plain(&m)) {
                Ok(credentials) => Exchange::Done(credentials),
                Err(error) => Exchange::Failed(sasl_error_status(&error)),
            },
        )
    }

    /// LOGIN: username (possibly as initial response), then password.
    async fn exchange_login(&mut self, initial: Option<String>) -> std::io::Result<Exchange> {
        let mut parts = Vec::with_capacity(2);
        let mut initial = initial;
        for prompt in [Status::UsernamePrompt, Status::PasswordPrompt] {
            let response = match initial.take() {
                Some(response) => response,
                None => match self.challenge(prompt).await? {
                    Some(response) => response,
                    None => return Ok(Exchange::Closed),
                },
            };
            match sasl::decode(&response).and_then(|m| sasl::parse_login_part(&m)) {
                Ok(part) => parts.push(part),
                Err(error) => return Ok(Exchange::Failed(sasl_error_status(&error))),
            }
        }
        let (Some(password), Some(username)) = (parts.pop(), parts.pop()) else {
            return Ok(Exchange::Failed(sasl_error_status(&SaslError::Malformed)));
        };
        Ok(Exchange::Done(Credentials { username, password }))
    }

    /// Sends a `334` challenge and reads the client's line; `None` if the
    /// connection ends.
    async fn challenge(&mut self, prompt: Status) -> std::io::Result<Option<String>> {
        self.wire.queue(&Reply::from(prompt));
        Ok(match self.next_line().await? {
            Line::Text(line) => Some(String::from_utf8_lossy(&line).into_owned()),
            Line::TooLong => Some("!".to_owned()), // not base64: fails decoding
            Line::Eof => None,
        })
    }
}

fn sasl_error_status(error: &SaslError) -> Status {
    match error {
        SaslError::Cancelled => Status::AuthCancelled,
        SaslError::Base64 => Status::CannotDecode,
        SaslError::Malformed => Status::CredentialsInvalid,
    }
}
