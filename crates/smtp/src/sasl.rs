//! SASL PLAIN (RFC 4616) and LOGIN response decoding. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why a client response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("not valid base64")]
    Base64,
    #[error("malformed response")]
    Malformed,
    #[error("cancelled by the client")]
    Cancelled,
}

/// Credentials from a completed exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Decodes one base64 client response (RFC 4954 §4: `*` cancels, `=` is an
/// empty initial response).
pub fn decode(response: &str) -> Result<Vec<u8>, SaslError> {
    match response.trim() {
        "*" => Err(SaslError::Cancelled),
        "=" => Ok(Vec::new()),
        text => STANDARD.decode(text).map_err(|_| SaslError::Base64),
    }
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616 §2); an authorisation
/// identity other than the login itself is refused.
pub fn parse_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if username.is_empty() || (!authzid.is_empty() && authzid != username) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// One LOGIN step's decoded text.
pub fn parse_login_part(message: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(message.to_vec()).map_err(|_| SaslError::Malformed)
}

/// Server challenges of the LOGIN mechanism.
pub const LOGIN_USERNAME: &str = "VXNlcm5hbWU6"; // "Username:"
pub const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6"; // "Password:"

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_with_and_without_authzid() {
        let creds = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("alice", "secret")
        );
        assert!(parse_plain(b"alice\0alice\0secret").is_ok());
        assert_eq!(
            parse_plain(b"bob\0alice\0secret"),
            Err(SaslError::Malformed)
        );
        assert_eq!(parse_plain(b"\0alice"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"\0\0pw"), Err(SaslError::Malformed));
    }

    #[test]
    fn decodes_responses() {
        assert_eq!(decode("YWJj").unwrap(), b"abc");
        assert_eq!(decode("=").unwrap(), b"");
        assert_eq!(decode("*"), Err(SaslError::Cancelled));
        assert_eq!(decode("!!"), Err(SaslError::Base64));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let creds = parse_plain(b"\0alice\0hunter22").unwrap();
        assert!(!format!("{creds:?}").contains("hunter22"));
    }
}
