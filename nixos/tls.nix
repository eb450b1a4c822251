# Where the relay's TLS certificate comes from.
#
# - `acme` (default for DNS names): NixOS' `security.acme` orders one
#   certificate for `<domain>`, `mta-sts.<domain>` and `www.<domain>`. Until
#   the first order succeeds, `security.acme` puts a self-signed placeholder
#   in place so the relay can start; a failed order is retried every 15
#   minutes (a new relay's DNS often is not there yet). Each new certificate
#   restarts the relay (`reloadServices`), which reads the files in place
#   through the certificate's group. lego answers the HTTP-01 challenges on
#   port 80 itself, so madmail's own port 80 listener is off by default.
# - `builtin-acme`: madmail's own ACME client (`[tls] mode = "acme"`):
#   challenges answered on madmail's port 80, the certificate kept in the
#   state directory and swapped in without a restart.
# - `self-signed` (default for IPv4 and `_`-prefixed domains): madmail
#   generates and keeps its own certificate in the state directory.
# - `files`: certificate and key from paths outside the Nix store, handed to
#   the service with `LoadCredential`, so they may stay readable by root only.
{ config, lib, ... }:

let
  inherit (lib) mkOption types;

  cfg = config.services.madmail;
  tls = cfg.tls;
  domain = cfg.domain;
  acmeCert = config.security.acme.certs.${domain};
  credentialDir = "/run/credentials/madmail.service";

  # IP-only and `_`-prefixed domains cannot get a public certificate.
  wantsSelfSigned = builtins.match "([0-9]{1,3}\\.){3}[0-9]{1,3}" domain != null || lib.hasPrefix "_" domain;

  inStore = path: path != null && lib.hasPrefix builtins.storeDir (toString path);

  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));

  # The port lego listens on for HTTP-01 challenges, or null.
  legoPort = if acmeCert.listenHTTP == null then null else portOf acmeCert.listenHTTP;

  # Both ACME modes need a name a public CA can validate.
  acmeMode = tls.mode == "acme" || tls.mode == "builtin-acme";
in
{
  options.services.madmail.tls = {
    mode = mkOption {
      type = types.enum [
        "acme"
        "builtin-acme"
        "self-signed"
        "files"
      ];
      default = if wantsSelfSigned then "self-signed" else "acme";
      defaultText = lib.literalMD "`self-signed` for IPv4 and `_`-prefixed domains, else `acme`";
      description = ''
        Where the certificate comes from: `acme` (NixOS' `security.acme`
        with `mta-sts.` and `www.` names; lego answers the challenges on
        port 80), `builtin-acme` (madmail's own ACME client, challenges on
        madmail's port 80, certificates swapped without a restart; set
        `settings.tls.acme_contact` and, for another CA,
        `settings.tls.acme_directory`), `self-signed` (made by madmail on
        first start) or `files` ({option}`certFile` and {option}`keyFile`).
      '';
    };

    certFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/secrets/chat.example.org/fullchain.pem";
      description = "PEM certificate chain for the `files` mode (a path as a string).";
    };

    keyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/secrets/chat.example.org/key.pem";
      description = ''
        PEM private key for the `files` mode: a path as a string, outside
        the Nix store. It may be readable by root only: the service gets a
        copy through `LoadCredential`.
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = !acmeMode || !wantsSelfSigned;
            message = "services.madmail.tls.mode = \"${tls.mode}\" needs a public DNS name; ${domain} cannot get an ACME certificate (use \"self-signed\").";
          }
          {
            assertion = tls.mode != "builtin-acme" || cfg.settings.listen.http != [ ];
            message = "services.madmail.tls.mode = \"builtin-acme\" answers HTTP-01 challenges on madmail's port 80; services.madmail.settings.listen.http must not be empty.";
          }
          {
            assertion =
              tls.mode != "acme" || legoPort == null || !(lib.elem legoPort (map portOf cfg.settings.listen.http));
            message = "services.madmail.settings.listen.http and security.acme.certs.${domain}.listenHTTP both want port ${toString legoPort}; leave listen.http empty (the default with `acme`), or answer challenges with dnsProvider.";
          }
          {
            assertion = tls.mode != "files" || (tls.certFile != null && tls.keyFile != null);
            message = "services.madmail.tls.mode = \"files\" needs services.madmail.tls.certFile and services.madmail.tls.keyFile.";
          }
          {
            assertion = !(inStore tls.keyFile);
            message = "services.madmail.tls.keyFile must not be in the Nix store (it is world-readable there); give a path as a string.";
          }
        ];
      }

      (lib.mkIf (tls.mode == "self-signed") {
        services.madmail.settings.tls.mode = "self-signed";
      })

      (lib.mkIf (tls.mode == "builtin-acme") {
        services.madmail.settings.tls.mode = "acme";
      })

      (lib.mkIf (tls.mode == "files") {
        services.madmail.settings.tls = {
          mode = "files";
          cert_path = "${credentialDir}/tls-cert.pem";
          key_path = "${credentialDir}/tls-key.pem";
        };
        systemd.services.madmail.serviceConfig.LoadCredential = [
          "tls-cert.pem:${toString tls.certFile}"
          "tls-key.pem:${toString tls.keyFile}"
        ];
      })

      (lib.mkIf (tls.mode == "acme") {
        services.madmail.settings = {
          tls = {
            mode = "files";
            cert_path = "${acmeCert.directory}/fullchain.pem";
            key_path = "${acmeCert.directory}/key.pem";
          };
          # Port 80 belongs to lego while it answers challenges.
          listen.http = lib.mkIf (legoPort != null) (lib.mkDefault [ ]);
        };

        security.acme.certs.${domain} = {
          extraDomainNames = [
            "mta-sts.${domain}"
            "www.${domain}"
          ];
          reloadServices = [ "madmail.service" ];
          group = lib.mkDefault "madmail";
          # lego answers HTTP-01 itself. Set it to null when using
          # `dnsProvider` instead; madmail's port 80 (`listen.http`) then
          # redirects to HTTPS again.
          listenHTTP = lib.mkDefault ":80";
        };

        # Retry a failed first order instead of waiting for the daily timer.
        systemd.services."acme-order-renew-${domain}" = {
          serviceConfig.Restart = "on-failure";
          unitConfig.StartLimitIntervalSec = 0;
        };

        systemd.services.madmail = {
          wants = [ "acme-${domain}.service" ];
          after = [ "acme-${domain}.service" ];
          serviceConfig.SupplementaryGroups = [ acmeCert.group ];
        };

        networking.firewall.allowedTCPPorts = lib.mkIf (cfg.openFirewall && legoPort != null) [ legoPort ];
      })
    ]
  );
}
