#!/bin/sh
# Regenerates the encryption-gate fixtures (*.eml, CRLF line endings) from
# real GnuPG output. Run from anywhere: crates/gate/testdata/make-fixtures.sh
# Needs: gpg (2.2+), base64, od, sed, head, tail.
#
# OpenPGP data made here:
#   encrypted      gpg --armor --encrypt      old-format PKESK + SEIPD v1 (definite length)
#   partial        gpg --encrypt from a pipe  PKESK + SEIPD v1 with partial body lengths
#   symmetric      gpg --armor --symmetric    SKESK + SEIPD v1
#   literal        gpg --armor --store        a bare literal-data packet
# Derived by re-framing the binary packets (see below): trailing junk, two
# SEIPDs, lone SEIPD, truncated SEIPD. Header re-framing variants (new/old
# format lengths, partial chunks) are built by the Rust tests from these.
set -eu

cd "$(dirname "$0")"
GNUPGHOME=$(mktemp -d /tmp/gate-fixtures.XXXXXX)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
w=$GNUPGHOME

g() { gpg --batch --quiet --yes --pinentry-mode loopback --trust-model always "$@"; }

g --passphrase '' --quick-gen-key 'Bob <bob@example.net>' future-default default never

# --- OpenPGP payloads --------------------------------------------------------
printf 'Hello Bob!\n' | g --armor -r bob@example.net --encrypt >"$w/encrypted.asc"
g --dearmor <"$w/encrypted.asc" >"$w/encrypted.bin"
# 3000 incompressible octets read from a pipe: gpg streams, so partial lengths.
head -c 3000 /dev/urandom | g -z 0 -r bob@example.net --encrypt >"$w/partial.bin"
printf 'Hello channel!\n' | g --armor --passphrase 'secret' --symmetric >"$w/symmetric.asc"
printf 'Hello Bob!\n' | g --armor --compress-algo none --store >"$w/literal.asc"

# gpg writes the PKESK with an old-format header and a one-octet length
# (CTB 0x84): the SEIPD starts right after it.
ctb=$(od -An -tu1 -N1 "$w/encrypted.bin" | tr -d ' ')
[ "$ctb" = 132 ] || { echo "unexpected PKESK header $ctb" >&2; exit 1; }
esk_len=$(($(od -An -tu1 -j1 -N1 "$w/encrypted.bin" | tr -d ' ') + 2))
tail -c +$((esk_len + 1)) "$w/encrypted.bin" >"$w/seipd.bin"

armor() { # binary file -> armor without CRC (the CRC line is optional)
	echo '-----BEGIN PGP MESSAGE-----'
	echo
	base64 -w 64 "$1"
	echo '-----END PGP MESSAGE-----'
}
armor "$w/partial.bin" >"$w/partial.asc"
{ cat "$w/encrypted.bin"; printf 'JUNK'; } >"$w/junk.bin" && armor "$w/junk.bin" >"$w/junk.asc"
cat "$w/encrypted.bin" "$w/seipd.bin" >"$w/two.bin" && armor "$w/two.bin" >"$w/two.asc"
armor "$w/seipd.bin" >"$w/lone.asc"
head -c -7 "$w/encrypted.bin" >"$w/trunc.bin" && armor "$w/trunc.bin" >"$w/trunc.asc"
sed '1a Version: GnuPG v2' "$w/encrypted.asc" >"$w/version.asc"
sed '/^=/d' "$w/encrypted.asc" >"$w/nocrc.asc"
sed '3s/^./*/' "$w/encrypted.asc" >"$w/badb64.asc"

# --- MIME --------------------------------------------------------------------
head_() { # from to subject [extra header lines]
	printf 'From: <%s>\nTo: <%s>\nSubject: %s\n' "$1" "$2" "$3"
	printf 'Date: Mon, 02 Mar 2026 10:00:00 +0000\nMessage-ID: <fixture@example.org>\n'
	printf 'MIME-Version: 1.0\n'
}
version_part() {
	printf -- '--BOUNDARY\nContent-Type: application/pgp-encrypted\n'
	printf 'Content-Description: PGP/MIME version identification\n\nVersion: 1\n\n'
}
payload_part() { # armor file
	printf -- '--BOUNDARY\nContent-Type: application/octet-stream; name="encrypted.asc"\n'
	printf 'Content-Description: OpenPGP encrypted message\n'
	printf 'Content-Disposition: inline; filename="encrypted.asc"\n\n'
	cat "$1"
	echo
}
encrypted_ct='Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n boundary="BOUNDARY"\n\n'
pgp_mime() { # armor file -> well-formed PGP/MIME message
	head_ alice@example.org bob@example.net '[...]'
	printf "$encrypted_ct"
	version_part
	payload_part "$1"
	printf -- '--BOUNDARY--\n'
}

pgp_mime "$w/encrypted.asc" >encrypted.eml
pgp_mime "$w/partial.asc" >encrypted-partial.eml
pgp_mime "$w/nocrc.asc" >encrypted-no-crc.eml
pgp_mime "$w/symmetric.asc" >symmetric.eml
pgp_mime "$w/literal.asc" >literal.eml
pgp_mime "$w/version.asc" >version-header.eml
pgp_mime "$w/junk.asc" >trailing-junk.eml
pgp_mime "$w/two.asc" >two-seipd.eml
pgp_mime "$w/lone.asc" >lone-seipd.eml
pgp_mime "$w/trunc.asc" >truncated-seipd.eml
pgp_mime "$w/badb64.asc" >invalid-base64.eml

{
	head_ alice@example.org bob@example.net '[...]'
	printf "$encrypted_ct"
	payload_part "$w/encrypted.asc"
	version_part
	printf -- '--BOUNDARY--\n'
} >swapped-parts.eml

{
	head_ alice@example.org bob@example.net '[...]'
	printf "$encrypted_ct"
	version_part
	payload_part "$w/encrypted.asc"
	printf -- '--BOUNDARY\nContent-Type: text/plain\n\nextra\n\n--BOUNDARY--\n'
} >three-parts.eml

{
	head_ alice@example.org bob@example.net 'Hello'
	printf 'Content-Type: text/plain; charset=utf-8\n\n'
	cat "$w/encrypted.asc"
} >fake-encrypted.eml

{
	head_ alice@example.org bob@example.net 'Hello'
	printf 'Content-Type: text/plain; charset=utf-8\n\nHello Bob, this is not encrypted.\n'
} >plain.eml

{
	head_ bob@example.net alice@example.org 'Receipt Notification'
	printf 'Auto-Submitted: auto-replied\n'
	printf 'Content-Type: multipart/report; report-type=disposition-notification;\n boundary="BOUNDARY"\n\n'
	printf -- '--BOUNDARY\nContent-Type: text/plain; charset=utf-8\n\nThis is a receipt notification.\n\n'
	printf -- '--BOUNDARY\nContent-Type: message/disposition-notification\n\n'
	printf 'Reporting-UA: Delta Chat\nOriginal-Recipient: rfc822;bob@example.net\n'
	printf 'Final-Recipient: rfc822;bob@example.net\nOriginal-Message-ID: <orig@example.org>\n'
	printf 'Disposition: manual-action/MDN-sent-automatically; displayed\n\n--BOUNDARY--\n'
} >mdn.eml

{
	head_ MAILER-DAEMON@example.net alice@example.org 'Undelivered Mail Returned to Sender'
	printf 'Auto-Submitted: auto-replied\n'
	printf 'Content-Type: multipart/report; report-type=delivery-status;\n boundary="BOUNDARY"\n\n'
	printf -- '--BOUNDARY\nContent-Type: text/plain; charset=us-ascii\n\n'
	printf 'Your message could not be delivered to carol@example.net.\n\n'
	printf -- '--BOUNDARY\nContent-Type: message/delivery-status\n\n'
	printf 'Reporting-MTA: dns; example.net\n\nFinal-Recipient: rfc822; carol@example.net\n'
	printf 'Action: failed\nStatus: 5.1.1\n\n'
	printf -- '--BOUNDARY\nContent-Type: text/rfc822-headers\n\n'
	printf 'From: <alice@example.org>\nTo: <carol@example.net>\nSubject: [...]\n\n--BOUNDARY--\n'
} >bounce.eml

# The real payload is an encrypted key export; random octets stand in for it.
head -c 600 /dev/urandom |
	g --armor --passphrase '1234-5678' --symmetric |
	sed '1a Passphrase-Format: numeric9x4\nPassphrase-Begin: 12' >"$w/setup.asc"
{
	head_ bob@example.net bob@example.net 'Autocrypt Setup Message'
	printf 'Autocrypt-Setup-Message: v1\n'
	printf 'Content-Type: multipart/mixed; boundary="BOUNDARY"\n\n'
	printf -- '--BOUNDARY\nContent-Type: text/plain; charset=utf-8\n\n'
	printf 'This is the Autocrypt Setup Message used to transfer your end-to-end setup.\n\n'
	printf -- '--BOUNDARY\nContent-Type: application/autocrypt-setup\n'
	printf 'Content-Disposition: attachment; filename="autocrypt-setup-message.html"\n\n'
	cat "$w/setup.asc"
	printf '\n--BOUNDARY--\n'
} >autocrypt-setup.eml

securejoin() { # step body
	head_ alice@example.org bob@example.net 'Message from alice@example.org'
	printf 'Secure-Join: %s\nSecure-Join-Invitenumber: 0123456789abcdef\n' "$1"
	printf 'Chat-Version: 1.0\nContent-Type: multipart/mixed; boundary="BOUNDARY"\n\n'
	printf -- '--BOUNDARY\nContent-Type: text/plain; charset=utf-8\n\n%s\n\n--BOUNDARY--\n' "$2"
}
securejoin vc-request 'Secure-Join: vc-request' >securejoin-vc.eml
securejoin vg-request 'Secure-Join: vg-request' >securejoin-vg.eml
securejoin vc-request 'Cheap watches at unbeatable prices!' >securejoin-spam.eml

# CRLF line endings, as on the wire.
for f in *.eml; do
	sed -i 's/\r$//; s/$/\r/' "$f"
done
