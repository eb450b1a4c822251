# The DNS records a relay needs, computed from its configuration.
#
# `services.madmail.dns.records` lists them (read-only) and
# `system.build.madmailDnsZone` renders them as a zone-file fragment to paste
# or include. IP-only relays need no DNS at all; `_`-prefixed test domains
# get the same records as public ones (test DNS servers serve them).
#
# DKIM is a two-step flow: madmail creates its key on first start
# (`/var/lib/madmail/dkim/dkim-<selector>.pem`); the operator copies the
# public key into `dns.dkimPublicKey` and rebuilds, and the DKIM record
# appears.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  cfg = config.services.madmail;
  dns = cfg.dns;
  domain = cfg.domain;
  fqdn = name: if name == "@" then "${domain}." else "${name}.${domain}.";
  isIp = builtins.match "([0-9]{1,3}\\.){3}[0-9]{1,3}" domain != null;

  record = name: type: value: { inherit name type value; };

  # First port of a `listen` list, or null when the service is off.
  firstPort =
    addresses:
    if addresses == [ ] then null else lib.toInt (lib.last (lib.splitString ":" (lib.head addresses)));

  # RFC 6186 §3: one SRV record per client service that is enabled.
  srv =
    service: addresses:
    let
      port = firstPort addresses;
    in
    lib.optional (port != null) (record "_${service}._tcp" "SRV" "0 1 ${toString port} ${domain}.");

  listen = cfg.settings.listen;

  # RFC 8461 §3.2: the policy id must change whenever the policy does.
  mtaStsPolicy = "version: STSv1\nmode: enforce\nmx: ${domain}\nmax_age: 2419200\n";
  mtaStsId = builtins.substring 0 20 (builtins.hashString "sha256" mtaStsPolicy);

  dkimKeyType = if cfg.settings.dkim.algorithm == "ed25519" then "ed25519" else "rsa";

  records =
    lib.optional (dns.ipv4 != null) (record "@" "A" dns.ipv4)
    ++ lib.optional (dns.ipv6 != null) (record "@" "AAAA" dns.ipv6)
    ++ [
      # RFC 5321 §5.1: the relay is its own mail exchanger.
      (record "@" "MX" "10 ${domain}.")
      (record "mta-sts" "CNAME" "${domain}.")
      (record "www" "CNAME" "${domain}.")
      (record "_mta-sts" "TXT" "v=STSv1; id=${mtaStsId}")
      # RFC 7208: only the relay's own address sends for the domain.
      (record "@" "TXT" "v=spf1 a ~all")
      # RFC 7489: reject mail failing strictly aligned SPF or DKIM.
      (record "_dmarc" "TXT" "v=DMARC1;p=reject;adkim=s;aspf=s")
    ]
    ++ lib.optional (dns.caaIssuer != null) (record "@" "CAA" "0 issue \"${dns.caaIssuer}\"")
    ++ srv "submission" listen.submission
    ++ srv "submissions" listen.submissions
    ++ srv "imap" listen.imap
    ++ srv "imaps" listen.imaps
    ++ lib.optional (dns.dkimPublicKey != null) (
      # RFC 6376 §3.6.1 (RFC 8463 for ed25519 keys).
      record "${cfg.settings.dkim.selector}._domainkey" "TXT" "v=DKIM1; k=${dkimKeyType}; p=${dns.dkimPublicKey}"
    );

  # RFC 1035 §3.3.14: a TXT record is a sequence of strings of at most 255 bytes.
  quoteTxt =
    text:
    let
      starts = lib.range 0 ((builtins.stringLength text - 1) / 255);
      chunk = index: builtins.substring (index * 255) 255 text;
      quote = part: "\"${lib.replaceStrings [ "\\" "\"" ] [ "\\\\" "\\\"" ] part}\"";
    in
    lib.concatMapStringsSep " " (index: quote (chunk index)) starts;

  zoneLine =
    r:
    "${fqdn r.name} ${toString dns.ttl} IN ${r.type} ${if r.type == "TXT" then quoteTxt r.value else r.value}";

  zone = lib.concatMapStrings (r: zoneLine r + "\n") dns.records;
in
{
  options.services.madmail.dns = {
    ipv4 = mkOption {
      type = types.nullOr (types.strMatching "([0-9]{1,3}\\.){3}[0-9]{1,3}");
      default = null;
      example = "203.0.113.7";
      description = "Public IPv4 address of the relay, published as the domain's A record (none when null).";
    };

    ipv6 = mkOption {
      type = types.nullOr (types.strMatching "[0-9a-fA-F:.]+");
      default = null;
      example = "2001:db8::7";
      description = "Public IPv6 address of the relay, published as the domain's AAAA record (none when null).";
    };

    ttl = mkOption {
      type = types.ints.positive;
      default = 3600;
      description = "TTL in seconds for the records of the zone fragment.";
    };

    caaIssuer = mkOption {
      type = types.nullOr types.str;
      default = if lib.elem cfg.tls.mode [ "acme" "builtin-acme" ] then "letsencrypt.org" else null;
      defaultText = lib.literalMD "`letsencrypt.org` when `tls.mode` is `acme` or `builtin-acme`, else null";
      description = "Certificate authority allowed to issue for the domain (a CAA record, RFC 8659); null for none.";
    };

    dkimPublicKey = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9+/=]+");
      default = null;
      description = ''
        The DKIM public key (the base64 `p=` value), known only after the
        first start created the private key in
        `/var/lib/madmail/dkim/dkim-<selector>.pem` (`madmail dns` prints
        the whole record). For an RSA key:
        `openssl pkey -in /var/lib/madmail/dkim/dkim-opendkim.pem -pubout -outform DER | base64 -w0`;
        for an ed25519 key, the raw 32 key bytes (RFC 8463):
        `openssl pkey -in ... -pubout -outform DER | tail -c 32 | base64 -w0`.
        While null, the DKIM record is missing from {option}`records` and
        other relays reject this relay's mail.
      '';
    };

    records = mkOption {
      type = types.listOf (types.attrsOf types.str);
      readOnly = true;
      default = if isIp then [ ] else records;
      defaultText = lib.literalMD "the records computed from the configuration";
      description = ''
        Every DNS record the relay needs, as `{ name; type; value; }` with
        `name` relative to the domain (`@` for the domain itself). Empty for
        an IP-only relay. Rendered as a zone file in
        `system.build.madmailDnsZone`.
      '';
    };

    zone = mkOption {
      type = types.str;
      readOnly = true;
      default = zone;
      defaultText = lib.literalMD "{option}`records` in zone-file syntax";
      description = "{option}`records` in zone-file syntax (RFC 1035 §5), with absolute names.";
    };
  };

  config = lib.mkIf cfg.enable {
    system.build.madmailDnsZone = pkgs.writeText "${domain}.zone" dns.zone;

    warnings = lib.optional (!isIp && dns.dkimPublicKey == null) ''
      services.madmail.dns.dkimPublicKey is not set, so the DNS records lack DKIM
      and other relays will reject mail from ${domain}. After the first start, set it
      to the public key of /var/lib/madmail/dkim/dkim-${cfg.settings.dkim.selector}.pem (see docs/nix.md).
    '';
  };
}
