"""Raw IMAP/SMTP probes: the encryption gate and login checks."""

from __future__ import annotations

import contextlib
import email.message
import email.policy
import email.utils
import imaplib
import smtplib

import pytest
from deltachat_rpc_client.rpc import JsonRpcError

from support import insecure_tls

FOREIGN_ADDRESS = "abcdefghi@example.org"


@contextlib.contextmanager
def imap_session(relay, address: str, password: str):
    """A logged-in IMAP session over implicit TLS."""
    imap = imaplib.IMAP4_SSL(relay.host, relay.imaps_port, ssl_context=insecure_tls(), timeout=30)
    try:
        # The user name is quoted: `user@[1.2.3.4]` is no IMAP atom (RFC 9051 §4.1).
        imap.login(f'"{address}"', password)
        yield imap
    finally:
        with contextlib.suppress(Exception):
            imap.logout()


def inbox_count(imap) -> int:
    status, data = imap.select("INBOX", readonly=True)
    assert status == "OK", data
    return int(data[0])


def smtp_session(relay, starttls: bool) -> smtplib.SMTP:
    """An SMTP submission session, TLS established, not yet authenticated."""
    if not starttls:
        return smtplib.SMTP_SSL(relay.host, relay.submissions_port, context=insecure_tls(), timeout=30)
    smtp = smtplib.SMTP(relay.host, relay.submission_port, timeout=30)
    smtp.starttls(context=insecure_tls())
    return smtp


def plaintext_message(sender: str, recipient: str) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "plain"
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain="madmail.test")
    message.set_content("This is not encrypted.\n")
    # CRLF line ends: the relay refuses bare LF (RFC 5321 §2.3.8).
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit-tls", "starttls"])
def test_plaintext_submission_is_refused_with_523_and_not_stored(relay, starttls):
    if starttls and relay.submission_port is None:
        pytest.skip("MADMAIL_SUBMISSION_PORT not set")
    sender, sender_password = relay.new_credentials()
    recipient, recipient_password = relay.new_credentials()
    with imap_session(relay, recipient, recipient_password) as imap:
        assert inbox_count(imap) == 0

    with smtp_session(relay, starttls) as smtp:
        smtp.login(sender, sender_password)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(sender, [recipient], plaintext_message(sender, recipient))
    assert refused.value.smtp_code == 523, refused.value
    assert b"Encryption Needed" in refused.value.smtp_error

    with imap_session(relay, recipient, recipient_password) as imap:
        assert inbox_count(imap) == 0


def test_wrong_password_is_refused_over_imap_and_smtp(relay):
    address, password = relay.new_credentials()
    with imap_session(relay, address, password) as imap:
        assert inbox_count(imap) == 0

    with pytest.raises(imaplib.IMAP4.error):
        with imap_session(relay, address, "wrong" + password):
            pass
    with smtp_session(relay, starttls=False) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(address, "wrong" + password)
    assert refused.value.smtp_code == 535


def test_foreign_domain_login_is_refused_over_imap_and_smtp(relay):
    password = "foreignpassword123"
    with pytest.raises(imaplib.IMAP4.error):
        with imap_session(relay, FOREIGN_ADDRESS, password):
            pass
    with smtp_session(relay, starttls=False) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(FOREIGN_ADDRESS, password)
    assert refused.value.smtp_code == 535


def test_delta_chat_cannot_configure_with_wrong_password(relay, unconfigured_profile):
    address, password = relay.new_credentials()
    with imap_session(relay, address, password):
        pass
    with pytest.raises(JsonRpcError):
        unconfigured_profile.add_transport_from_qr(relay.dclogin(address, "wrong" + password))
    assert not unconfigured_profile.is_configured()


def test_delta_chat_cannot_configure_a_foreign_address(relay, unconfigured_profile):
    with pytest.raises(JsonRpcError):
        unconfigured_profile.add_transport_from_qr(relay.dclogin(FOREIGN_ADDRESS, "foreignpassword123"))
    assert not unconfigured_profile.is_configured()


def test_envelope_sender_other_than_the_login_is_refused_with_553(relay):
    sender, sender_password = relay.new_credentials()
    other, _ = relay.new_credentials()
    with smtp_session(relay, starttls=False) as smtp:
        smtp.login(sender, sender_password)
        code, reply = smtp.mail(other)
    assert code == 553, reply


def test_imap_advertises_chatmail_capabilities_after_login(relay):
    address, password = relay.new_credentials()
    with imap_session(relay, address, password) as imap:
        status, data = imap.capability()
    assert status == "OK"
    capabilities = data[0].decode().upper().split()
    for wanted in ("IMAP4REV1", "IDLE", "XCHATMAIL", "XDELTAPUSH"):
        assert wanted in capabilities, capabilities
