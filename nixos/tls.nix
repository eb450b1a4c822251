# Where the relay's TLS certificate comes from.
#
# - `acme` (default for DNS names): NixOS' `security.acme` orders one
#   certificate for `<domain>`, `mta-sts.<domain>` and `www.<domain>`. Until
#   the first order succeeds, `security.acme` puts a self-signed placeholder
#   in place so the relay can start; a failed order is retried every 15
#   minutes (a new relay's DNS often is not there yet). Each new certificate
#   restarts the relay (`reloadServices`), which reads the files in place
#   through the certificate's group.
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

  httpPort =
    address: if address == null then null else lib.toInt (lib.last (lib.splitString ":" address));
in
{
  options.services.madmail.tls = {
    mode = mkOption {
      type = types.enum [
        "acme"
        "self-signed"
        "files"
      ];
      default = if wantsSelfSigned then "self-signed" else "acme";
      defaultText = lib.literalMD "`self-signed` for IPv4 and `_`-prefixed domains, else `acme`";
      description = ''
        Where the certificate comes from: `acme` (NixOS' `security.acme`
        with `mta-sts.` and `www.` names), `self-signed` (made by madmail on
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
            assertion = tls.mode != "acme" || !wantsSelfSigned;
            message = "services.madmail.tls.mode = \"acme\" needs a public DNS name; ${domain} cannot get an ACME certificate (use \"self-signed\").";
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
        services.madmail.settings.tls = {
          mode = "files";
          cert_path = "${acmeCert.directory}/fullchain.pem";
          key_path = "${acmeCert.directory}/key.pem";
        };

        security.acme.certs.${domain} = {
          extraDomainNames = [
            "mta-sts.${domain}"
            "www.${domain}"
          ];
          reloadServices = [ "madmail.service" ];
          group = lib.mkDefault "madmail";
          # madmail does not serve port 80; lego answers HTTP-01 itself.
          # Set it to null when using `webroot` or `dnsProvider` instead.
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

        networking.firewall.allowedTCPPorts = lib.mkIf (cfg.openFirewall && httpPort acmeCert.listenHTTP != null) [
          (httpPort acmeCert.listenHTTP)
        ];
      })
    ]
  );
}
