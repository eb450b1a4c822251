# `services.madmail`: the relay as a hardened systemd service.
#
# Flow: `settings` (typed keys plus free-form TOML) is rendered to
# `chatmail.toml` with `pkgs.formats.toml`, checked at build time with
# `madmail check-config`, and passed to `madmail run --config`. State lives in
# the unit's `StateDirectory` (/var/lib/madmail), owned by the dedicated
# `madmail` user. Certificates come from ./tls.nix, DNS records from ./dns.nix.
#
# Invariants: nothing secret is ever copied into the Nix store (secrets are
# file paths, asserted to lie outside it); the service holds no capability
# but CAP_NET_BIND_SERVICE; the on-disk format generation (`stateVersion`) is
# recorded in the state directory and a mismatch stops the service instead of
# letting it touch data it may not understand.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  cfg = config.services.madmail;
  format = pkgs.formats.toml { };
  stateDir = "/var/lib/madmail";

  # The highest on-disk format generation this module knows.
  latestStateVersion = 1;

  rendered = format.generate "chatmail-unchecked.toml" cfg.settings;

  # The rendered file, refused at build time when madmail rejects it.
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "chatmail.toml"
        {
          nativeBuildInputs = [ cfg.package ];
          preferLocalBuild = true;
        }
        ''
          madmail check-config ${rendered}
          cp ${rendered} $out
        ''
    else
      rendered;

  # Refuses to start on a state directory written for another generation.
  checkStateVersion = pkgs.writeShellScript "madmail-state-version" ''
    marker=${stateDir}/nixos-state-version
    want=${toString cfg.stateVersion}
    if [ -e "$marker" ]; then
      have=$(cat "$marker")
      if [ "$have" != "$want" ]; then
        echo "madmail: ${stateDir} holds state generation $have but services.madmail.stateVersion is $want; migrate it first (see docs/nix.md)" >&2
        exit 1
      fi
    else
      echo "$want" > "$marker"
    fi
  '';

  inStore = path: path != null && lib.hasPrefix builtins.storeDir (toString path);

  # Ports of the addresses in one `listen` list.
  portsOf = addresses: map (address: lib.toInt (lib.last (lib.splitString ":" address))) addresses;
  turn = cfg.settings.turn;
  proxy = cfg.settings.shadowsocks;
in
{
  options.services.madmail = {
    enable = lib.mkEnableOption "madmail, a chatmail relay for Delta Chat";

    package = lib.mkPackageOption pkgs "madmail" { };

    domain = mkOption {
      type = types.strMatching "(([0-9]{1,3}\\.){3}[0-9]{1,3}|_?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z]{2,63})";
      example = "chat.example.org";
      description = ''
        The mail domain: users get addresses `name@<domain>`. A DNS name, or
        an IPv4 address for an IP-only relay (`name@[203.0.113.7]`, with a
        self-signed certificate). A name starting with `_` also gets a
        self-signed certificate.
      '';
    };

    stateVersion = mkOption {
      type = types.ints.between 1 latestStateVersion;
      example = 1;
      description = ''
        The generation of madmail's on-disk state this host was set up with.
        Set it once, when first deploying, and do not change it with
        upgrades: it is written to `${stateDir}/nixos-state-version`, and
        the service refuses to start when the two differ, so a format change
        is never applied to data behind the operator's back.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to open exactly the ports of the enabled services: the TCP
        ports in `settings.listen` (an empty list opens nothing), the port
        lego answers HTTP-01 challenges on with `tls.mode = "acme"`, and
        with `settings.turn.enabled` the TURN ports (UDP and TCP) and the
        UDP range of relayed addresses, and with
        `settings.shadowsocks.enabled` the proxy's TCP ports.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to run `madmail check-config` on the rendered file at build
        time. Turn it off only when the package cannot run on the build
        machine (cross-compilation).
      '';
    };

    settings = mkOption {
      type = import ./settings.nix {
        inherit lib format;
        inherit (cfg) domain;
      };
      default = { };
      example = lib.literalExpression ''
        {
          log.no_log = false;
          registration.open = false;
          federation.static_routes."other.test" = { host = "192.0.2.2"; https_port = 443; smtp_port = 25; };
        }
      '';
      description = ''
        Contents of `chatmail.toml`; see `docs/config.md` for every key.
        Secrets do not belong here: everything here is world-readable in the
        Nix store.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/madmail.env";
      description = ''
        File with `NAME=value` lines passed to the service environment
        (systemd `EnvironmentFile`). A path as a string, outside the Nix
        store.
      '';
    };

    credentials = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        turn-secret = "/run/secrets/madmail-turn";
      };
      description = ''
        Secret files handed to the service with systemd `LoadCredential`,
        readable by it as `/run/credentials/madmail.service/<name>` (refer to
        that path from `settings`). Paths as strings, outside the Nix store.
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = configFile;
      defaultText = lib.literalMD "the rendered and checked `chatmail.toml`";
      description = "The configuration file the service runs with (also linked at `/etc/madmail/chatmail.toml`).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(inStore cfg.environmentFile);
        message = "services.madmail.environmentFile must not be in the Nix store (it is world-readable there); give a path as a string.";
      }
      {
        assertion = lib.all (path: !(inStore path)) (lib.attrValues cfg.credentials);
        message = "services.madmail.credentials must not point into the Nix store (it is world-readable there); give paths as strings.";
      }
    ];

    users.users.madmail = {
      isSystemUser = true;
      group = "madmail";
      home = stateDir;
      description = "madmail chatmail relay";
    };
    users.groups.madmail = { };

    environment.systemPackages = [ cfg.package ];
    environment.etc."madmail/chatmail.toml".source = configFile;

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = lib.unique (
        lib.concatMap portsOf (lib.attrValues cfg.settings.listen)
        ++ lib.optionals (turn.enabled && (turn.tcp or true)) (portsOf turn.listen)
        ++ lib.optionals proxy.enabled (portsOf proxy.listen)
      );
      allowedUDPPorts = lib.optionals (turn.enabled && (turn.udp or true)) (
        lib.unique (portsOf turn.listen)
      );
      allowedUDPPortRanges = lib.optional turn.enabled {
        from = turn.relay_port_min;
        to = turn.relay_port_max;
      };
    };

    systemd.services.madmail = {
      description = "madmail chatmail relay";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      restartTriggers = [ configFile ];
      # Fewer glibc malloc arenas: about 8 KiB less per idle connection
      # (docs/benchmarks.md, "Idle IMAP connections").
      environment.MALLOC_ARENA_MAX = "2";

      serviceConfig = import ./hardening.nix // {
        ExecStartPre = "${checkStateVersion}";
        ExecStart = "${lib.getExe' cfg.package "madmail"} run --config ${configFile}";
        Restart = "on-failure";
        RestartSec = 5;
        User = "madmail";
        Group = "madmail";
        StateDirectory = "madmail";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        # One descriptor per connection: up to 10000 IMAP plus SMTP and HTTPS.
        LimitNOFILE = 65536;
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") cfg.credentials;
      };
    };
  };
}
