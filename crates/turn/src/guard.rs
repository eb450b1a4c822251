//! What a client's STUN message must pass before the TURN protocol sees
//! it: the REST credential and the peer rule.
//!
//! The protocol crate knows users only by a list it is given, so the guard
//! decides per request (RFC 8656 §5, RFC 8489 §9.2):
//! - a Binding request: passed on (it needs no credential);
//! - any other request without USERNAME (a client's first Allocate):
//!   answered 401 here with the realm and a fresh nonce, never passed on:
//!   the protocol keeps a nonce for every client address it sees and never
//!   forgets one, so only clients that hold a credential may reach it (the
//!   client's next request carries our nonce, which the protocol answers
//!   438 with its own; one more round trip, RFC 8489 §9.2.4);
//! - a USERNAME whose expiry has passed, that is not a number, or whose
//!   MESSAGE-INTEGRITY does not check out under the password the
//!   installation secret gives it: answered 401 here (so an expired
//!   credential can never ride on an entry the protocol still holds);
//! - a valid one not seen before: registered with the protocol, then
//!   passed on;
//! - CreatePermission or ChannelBind naming a peer the rule denies:
//!   answered 403 (RFC 8656 §9.1, §11.2), signed with the client's key; a
//!   Send indication to such a peer: dropped (indications get no answer).
//!
//! Invariants: every answer is built from the request it answers; only
//! holders of a credential reach the protocol; the registered usernames
//! are minted ones only (integrity checked first), and the minter rounds
//! expiries to the hour, so there are at most a few hundred of them alive
//! (the server starts its protocol state afresh when idle, which drops the
//! expired ones).

use std::collections::HashSet;
use std::sync::Arc;

use turn_server_proto::types::attribute::XorPeerAddress;
use turn_server_proto::types::message::{CHANNEL_BIND, CREATE_PERMISSION, SEND};
use turn_server_proto::types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::types::stun::message::{
    BINDING, IntegrityAlgorithm, LongTermCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec,
};

use crate::credentials::{Credentials, expiry};
use crate::peers::Peers;

/// What to do with one message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the protocol.
    Pass,
    /// Register this user with the protocol, then hand it over.
    AddUser { username: String, password: String },
    /// Send this answer instead.
    Answer(Vec<u8>),
    /// Ignore it.
    Drop,
}

/// The checks of one TURN server.
pub struct Guard {
    /// The realm answers carry.
    realm: String,
    /// Gives the password of a username and checks its expiry.
    credentials: Arc<Credentials>,
    /// The peer rule.
    peers: Peers,
    /// Usernames registered with the protocol.
    registered: HashSet<String>,
}

impl Guard {
    pub fn new(realm: String, credentials: Arc<Credentials>, peers: Peers) -> Self {
        Self {
            realm,
            credentials,
            peers,
            registered: HashSet::new(),
        }
    }

    /// The verdict on `data` from a client, at Unix time `now`.
    pub fn check(&mut self, data: &[u8], now: u64) -> Verdict {
        // ChannelData (first two bits not 00) goes to a channel whose peer
        // was checked when it was bound.
        if data.first().is_none_or(|byte| byte >> 6 != 0) {
            return Verdict::Pass;
        }
        let Ok(message) = Message::from_bytes(data) else {
            return Verdict::Drop;
        };
        if message.has_class(MessageClass::Indication) {
            let denied = message.has_method(SEND) && !self.peers_allowed(&message);
            return if denied { Verdict::Drop } else { Verdict::Pass };
        }
        if !message.has_class(MessageClass::Request) {
            return Verdict::Drop;
        }
        if message.has_method(BINDING) {
            return Verdict::Pass;
        }
        let Ok(username) = message.attribute::<Username>() else {
            return Verdict::Answer(self.challenge(&message));
        };
        let username = username.username();
        let Some(password) = self.credentials.password_if_current(username, now) else {
            chatmail_metrics::turn_auth_failed();
            return Verdict::Answer(self.error(&message, ErrorCode::UNAUTHORIZED, Extra::Nothing));
        };
        let key: MessageIntegrityCredentials =
            LongTermCredentials::new(username.to_owned(), password.clone())
                .to_key(self.realm.clone())
                .into();
        if message.validate_integrity(&key).is_err() {
            chatmail_metrics::turn_auth_failed();
            return Verdict::Answer(self.error(&message, ErrorCode::UNAUTHORIZED, Extra::Nothing));
        }
        let names_peers = message.has_method(CREATE_PERMISSION) || message.has_method(CHANNEL_BIND);
        if names_peers && !self.peers_allowed(&message) {
            chatmail_metrics::turn_peer_refused();
            return Verdict::Answer(self.error(
                &message,
                ErrorCode::FORBIDDEN,
                Extra::Signed(&key),
            ));
        }
        if self.registered.contains(username) {
            return Verdict::Pass;
        }
        self.registered
            .retain(|known| expiry(known).is_some_and(|at| at >= now));
        self.registered.insert(username.to_owned());
        Verdict::AddUser {
            username: username.to_owned(),
            password,
        }
    }

    /// Forgets the registered users (the protocol state they were
    /// registered with was started afresh).
    pub fn forget_users(&mut self) {
        self.registered.clear();
    }

    /// Whether every XOR-PEER-ADDRESS of `message` is allowed (and it
    /// names one at all).
    fn peers_allowed(&self, message: &Message<'_>) -> bool {
        let transaction = message.transaction_id();
        let mut seen = false;
        for n in 0.. {
            let Ok(peer) = message.nth_attribute::<XorPeerAddress>(n) else {
                break;
            };
            seen = true;
            if !self.peers.allows(peer.addr(transaction).ip()) {
                return false;
            }
        }
        seen
    }

    /// The 401 that asks for a credential: realm and a fresh nonce.
    fn challenge(&self, request: &Message<'_>) -> Vec<u8> {
        self.error(request, ErrorCode::UNAUTHORIZED, Extra::Nonce)
    }

    /// An error response to `request` with `code`, the realm and `extra`.
    fn error(&self, request: &Message<'_>, code: u16, extra: Extra<'_>) -> Vec<u8> {
        let mut reply = Message::builder_error(request, MessageWriteVec::new());
        // None of these can fail: the code is a fixed valid one, a domain
        // name is far below the realm's limit, the nonce is 32 hex digits.
        if let Ok(error) = ErrorCode::builder(code).build() {
            let _ = reply.add_attribute(&error);
        }
        if let Ok(realm) = Realm::new(&self.realm) {
            let _ = reply.add_attribute(&realm);
        }
        match extra {
            Extra::Nothing => {}
            Extra::Nonce => {
                let nonce: [u8; 16] = rand::random();
                let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
                if let Ok(nonce) = Nonce::new(&nonce) {
                    let _ = reply.add_attribute(&nonce);
                }
            }
            Extra::Signed(key) => {
                let _ = reply.add_message_integrity(key, IntegrityAlgorithm::Sha1);
            }
        }
        let _ = reply.add_fingerprint();
        reply.finish()
    }
}

/// What an error response carries besides its code and the realm.
enum Extra<'a> {
    /// Nothing more.
    Nothing,
    /// A fresh nonce (a challenge, RFC 8489 §9.2.4).
    Nonce,
    /// MESSAGE-INTEGRITY under the client's key.
    Signed(&'a MessageIntegrityCredentials),
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use turn_server_proto::types::attribute::RequestedTransport;
    use turn_server_proto::types::message::ALLOCATE;

    use super::*;

    const REALM: &str = "relay.test";

    fn guard(allowed: &str) -> Guard {
        let credentials = Arc::new(Credentials::from_secret([3; 32], 5 * 24 * 3600));
        let peers = Peers::new(vec![allowed.parse().unwrap()], vec![]);
        Guard::new(REALM.into(), credentials, peers)
    }

    /// A signed request of `method` from `username` with `password`.
    fn request(method: u16, username: &str, password: &str, peer: Option<&str>) -> Vec<u8> {
        let method = turn_server_proto::types::stun::message::Method::new(method);
        let mut message = Message::builder_request(method, MessageWriteVec::new());
        let transaction = message.transaction_id();
        message.add_attribute(&RequestedTransport::new(17)).unwrap();
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().unwrap();
            message
                .add_attribute(&XorPeerAddress::new(peer, transaction))
                .unwrap();
        }
        message
            .add_attribute(&Username::new(username).unwrap())
            .unwrap();
        message.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
        message.add_attribute(&Nonce::new("n").unwrap()).unwrap();
        let key: MessageIntegrityCredentials =
            LongTermCredentials::new(username.into(), password.into())
                .to_key(REALM.into())
                .into();
        message
            .add_message_integrity(&key, IntegrityAlgorithm::Sha1)
            .unwrap();
        message.finish()
    }

    fn error_code(answer: &Verdict) -> u16 {
        let Verdict::Answer(data) = answer else {
            panic!("not an answer: {answer:?}");
        };
        let message = Message::from_bytes(data).unwrap();
        message.attribute::<ErrorCode>().unwrap().code()
    }

    #[test]
    fn registers_a_current_credential_once() {
        let mut guard = guard("127.0.0.0/8");
        let (username, password) = guard.credentials.mint(1000);
        let allocate = request(ALLOCATE.value(), &username, &password, None);
        assert_eq!(
            guard.check(&allocate, 1000),
            Verdict::AddUser {
                username: username.clone(),
                password
            }
        );
        assert_eq!(guard.check(&allocate, 1000), Verdict::Pass);
    }

    #[test]
    fn answers_401_to_expired_and_foreign_credentials() {
        let mut guard = guard("127.0.0.0/8");
        let (username, password) = guard.credentials.mint(1000);
        let allocate = request(ALLOCATE.value(), &username, &password, None);
        let expired = guard.check(&allocate, expiry(&username).unwrap() + 1);
        assert_eq!(error_code(&expired), 401);
        let foreign = Credentials::from_secret([4; 32], 5 * 24 * 3600).mint(1000);
        let allocate = request(ALLOCATE.value(), &foreign.0, &foreign.1, None);
        assert_eq!(error_code(&guard.check(&allocate, 1000)), 401);
        let allocate = request(ALLOCATE.value(), "alice", &password, None);
        assert_eq!(error_code(&guard.check(&allocate, 1000)), 401);
    }

    #[test]
    fn answers_403_to_permissions_for_denied_peers() {
        let mut guard = guard("127.0.0.0/8");
        let (username, password) = guard.credentials.mint(1000);
        let denied = request(
            CREATE_PERMISSION.value(),
            &username,
            &password,
            Some("10.0.0.1:9"),
        );
        assert_eq!(error_code(&guard.check(&denied, 1000)), 403);
        let bind = request(
            CHANNEL_BIND.value(),
            &username,
            &password,
            Some("192.168.0.1:9"),
        );
        assert_eq!(error_code(&guard.check(&bind, 1000)), 403);
        let allowed = request(
            CREATE_PERMISSION.value(),
            &username,
            &password,
            Some("127.0.0.1:9"),
        );
        assert!(matches!(
            guard.check(&allowed, 1000),
            Verdict::AddUser { .. }
        ));
    }

    #[test]
    fn challenges_requests_without_a_credential_itself() {
        let mut guard = guard("127.0.0.0/8");
        let method = turn_server_proto::types::stun::message::Method::new(ALLOCATE.value());
        let mut allocate = Message::builder_request(method, MessageWriteVec::new());
        allocate
            .add_attribute(&RequestedTransport::new(17))
            .unwrap();
        let allocate = allocate.finish();
        let answer = guard.check(&allocate, 1000);
        assert_eq!(error_code(&answer), 401);
        let Verdict::Answer(data) = answer else {
            unreachable!()
        };
        let reply = Message::from_bytes(&data).unwrap();
        assert_eq!(reply.attribute::<Realm>().unwrap().realm(), REALM);
        assert!(reply.attribute::<Nonce>().is_ok());
        let binding = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        assert_eq!(guard.check(&binding, 1000), Verdict::Pass);
    }

    #[test]
    fn passes_channel_data_and_drops_garbage() {
        let mut guard = guard("127.0.0.0/8");
        assert_eq!(guard.check(&[0x40, 0, 0, 4, 1, 2, 3, 4], 0), Verdict::Pass);
        assert_eq!(guard.check(&[0; 7], 0), Verdict::Drop);
        let mut truncated = request(ALLOCATE.value(), "1", "x", None);
        truncated.truncate(30);
        assert_eq!(guard.check(&truncated, 0), Verdict::Drop);
    }
}
