# Typed options for the keys of `chatmail.toml` people set most. Every other
# key of crates/config/src/schema.rs (see docs/config.md) can still be set
# through the free-form part of `services.madmail.settings`.
{ lib, format, domain }:

let
  inherit (lib) mkOption types;

  # "ip:port" with an IPv4 address or a bracketed IPv6 address.
  listenAddress = types.strMatching "(([0-9]{1,3}\\.){3}[0-9]{1,3}|[[][0-9a-fA-F:.]+[]]):[0-9]{1,5}";

  listen =
    port: service:
    mkOption {
      type = types.listOf listenAddress;
      default = [ "0.0.0.0:${port}" ];
      example = [
        "0.0.0.0:${port}"
        "[::]:${port}"
      ];
      description = "Addresses (`ip:port`) for ${service}; an empty list turns the service off.";
    };
in
types.submodule {
  freeformType = format.type;

  options = {
    mail_domain = mkOption {
      type = types.str;
      default = domain;
      defaultText = lib.literalExpression "config.services.madmail.domain";
      readOnly = true;
      description = "The mail domain; set it with {option}`services.madmail.domain`.";
    };

    state_dir = mkOption {
      type = types.str;
      default = "/var/lib/madmail";
      readOnly = true;
      description = "Directory for the database, the DKIM key and self-signed certificates (the unit's `StateDirectory`).";
    };

    log = {
      no_log = mkOption {
        type = types.bool;
        default = true;
        description = "No-log mode: only startup, shutdown and fatal errors are logged; addresses and IP addresses never are.";
      };
      level = mkOption {
        type = types.str;
        default = "info";
        example = "info,chatmail_smtp=debug";
        description = "Log filter in `tracing` syntax, used when `no_log` is false.";
      };
    };

    listen = {
      smtp = listen "25" "SMTP from other relays (MX)";
      submission = listen "587" "SMTP submission with STARTTLS";
      submissions = listen "465" "SMTP submission with implicit TLS";
      imap = listen "143" "IMAP with STARTTLS";
      imaps = listen "993" "IMAP with implicit TLS";
      https = listen "443" "HTTPS (account creation, `/mxdeliv` federation, web pages)";
      http = listen "80" "plain HTTP (redirects to HTTPS; answers the HTTP-01 challenges of madmail's own ACME client)";
    };

    turn = {
      enabled = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to run the TURN server for Delta Chat calls and hand its
          credentials to clients. Relayed addresses are the specific
          `turn.listen` addresses, else `turn.relay_addresses` (set it when
          listening on `0.0.0.0`).
        '';
      };
      listen = mkOption {
        type = types.listOf listenAddress;
        default = [ "0.0.0.0:3478" ];
        description = "Addresses (`ip:port`) the TURN server listens on, UDP and TCP each.";
      };
      relay_port_min = mkOption {
        type = types.port;
        default = 49152;
        description = "Lowest UDP port of relayed addresses.";
      };
      relay_port_max = mkOption {
        type = types.port;
        default = 65535;
        description = "Highest UDP port of relayed addresses.";
      };
    };

    iroh = {
      enabled = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to run the built-in iroh relay for webxdc realtime apps.
          It is served under `/relay` on the HTTPS port (and its
          captive-portal probe on port 80), so it needs no port of its own.
        '';
      };
      url = mkOption {
        type = types.nullOr (types.strMatching "https?://[^/[:space:]]+.*");
        default = null;
        example = "https://iroh.example.org/";
        description = ''
          The iroh relay URL published to clients; null: this relay while
          the built-in one runs. With `iroh.enabled = false`, an external
          relay.
        '';
      };
    };

    shadowsocks = {
      enabled = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to run the Shadowsocks proxy for clients behind censoring
          networks. It forwards only to this relay's IMAP, submission and
          HTTPS ports; its `ss://` link is on the index page and printed by
          `madmail proxy-link`.
        '';
      };
      listen = mkOption {
        type = types.listOf listenAddress;
        default = [ "0.0.0.0:8388" ];
        description = "Addresses (`ip:port`) the proxy listens on (TCP).";
      };
      cipher = mkOption {
        type = types.enum [
          "chacha20-ietf-poly1305"
          "aes-128-gcm"
          "aes-256-gcm"
          "2022-blake3-aes-128-gcm"
          "2022-blake3-aes-256-gcm"
          "2022-blake3-chacha20-poly1305"
        ];
        default = "chacha20-ietf-poly1305";
        description = "The AEAD cipher of the proxy.";
      };
    };

    registration.open = mkOption {
      type = types.bool;
      default = true;
      description = "Whether a first login with an unknown address creates the account.";
    };

    limits.max_message_size = mkOption {
      type = types.ints.between 1024 1073741824;
      default = 31457280;
      description = "Largest accepted message in bytes (the SMTP `SIZE` keyword).";
    };

    federation = {
      policy = mkOption {
        type = types.enum [ "open" "allow" "block" ];
        default = "open";
        description = "Which peer domains may exchange mail with this relay: all, only `domains`, or all but `domains`.";
      };
      domains = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "The domains `policy` lists.";
      };
    };

    dkim = {
      selector = mkOption {
        type = types.strMatching "[A-Za-z0-9_-]+";
        default = "opendkim";
        description = "DKIM selector: the key is published at `<selector>._domainkey.<domain>`.";
      };
      algorithm = mkOption {
        type = types.enum [ "rsa" "ed25519" ];
        default = "rsa";
        description = "Key type generated on first start (`rsa` is 2048 bits).";
      };
    };
  };
}
