# Module evaluation tests for `services.madmail`, run with nixpkgs' `lib`
# only (no package set): the NixOS options the module sets are typed stubs
# (./stubs.nix). Each case evaluates the module with one configuration and
# either checks the resulting NixOS configuration or expects a rejection:
# the value of one option failing its type, or a failed assertion with a
# given text while everything else evaluates.
#
#   nix-instantiate --eval --strict --json tests-vm/nix/eval.nix --argstr libPath /path/to/nixpkgs/lib
#
# The result is a list of `{ name; ok; detail; }`. Two other entry points:
#
# - `--arg unit true`: the madmail service of the default configuration as
#   unit-file text, rendered the way NixOS writes units, for
#   `systemd-analyze security --offline=true`;
# - `--argstr explain <case>`: what that case evaluates, forced without
#   `tryEval`, so that Nix prints the error a failed case hides.
{ libPath, unit ? false, explain ? null }:

let
  lib = import libPath;

  # Defaults, so that a case can override any of them.
  base = {
    services.madmail = {
      enable = true;
      domain = lib.mkDefault "chat.example.org";
      stateVersion = lib.mkDefault 1;
    };
  };

  evaluate =
    module:
    (lib.evalModules {
      modules = [
        ./stubs.nix
        ../../nixos
        base
        module
      ];
    }).config;

  # The flake's outputs with its inputs replaced by `lib` and stubs.
  flake =
    let
      outputs = (import ../../flake.nix).outputs {
        self = outputs // {
          packages.x86_64-linux.default = "/nix/store/00000000000000000000000000000000-madmail-flake";
        };
        nixpkgs = { inherit lib; };
        rust-overlay.overlays.default = _final: _prev: { };
      };
    in
    outputs;

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # Everything the module produces, forced together.
  everything = config: {
    inherit (config)
      users
      environment
      networking
      security
      system
      warnings
      ;
    assertions = failedAssertions config;
    inherit (config.services.madmail)
      settings
      dns
      configFile
      stateVersion
      ;
    services = config.systemd.services;
  };

  forced = value: builtins.tryEval (builtins.deepSeq value value);

  # A unit as NixOS writes it (nixos/lib/systemd-lib.nix, `attrsToSection`
  # and `serviceToUnit`): one `Key=value` line per value, lists repeated,
  # booleans as `true`/`false`, environment variables quoted.
  unitValue =
    value:
    if value == true then
      "true"
    else if value == false then
      "false"
    else
      toString value;
  unitSection = attrs:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (name: value: map (v: "${name}=${unitValue v}\n") (lib.toList value)) attrs
      )
    );
  unitText =
    service:
    "[Unit]\n"
    + unitSection (
      {
        Description = service.description;
        After = lib.concatStringsSep " " service.after;
        Wants = lib.concatStringsSep " " service.wants;
      }
      // service.unitConfig
    )
    + "\n[Service]\n"
    + lib.concatStrings (lib.mapAttrsToList (name: value: "Environment=${builtins.toJSON "${name}=${value}"}\n") service.environment)
    + unitSection service.serviceConfig;

  defaultUnit = unitText (evaluate { }).systemd.services.madmail;

  # The rejections below only count when the unchanged base evaluates.
  baseEvaluates = (forced (everything (evaluate { }))).success;

  # A case passes when `checks` (a list of `{ what; ok; }`) all hold.
  accepts =
    name: module: checks:
    let
      config = evaluate module;
      result = forced (everything config);
      failed = if result.success then lib.filter (c: !c.ok) (checks config) else [ ];
      unexpected = failedAssertions config;
    in
    {
      inherit name;
      explain = everything config;
      ok = result.success && unexpected == [ ] && failed == [ ];
      detail =
        if !result.success then
          "evaluation failed (cargo xtask nix-check prints the error)"
        else if unexpected != [ ] then
          "assertion failed: ${lib.head unexpected}"
        else
          lib.concatMapStringsSep "; " (c: "not true: ${c.what}") failed;
    };

  # A case passes when the value of the option at `expect.option` (a path)
  # fails to evaluate, or when everything evaluates and an assertion whose
  # message contains `expect.assertion` fails.
  rejects =
    name: module: expect:
    let
      config = evaluate module;
      value = forced (lib.getAttrFromPath expect.option config);
      result = forced (everything config);
      messages = forced (failedAssertions config);
      matching =
        result.success && messages.success && lib.any (lib.hasInfix expect.assertion) messages.value;
    in
    {
      inherit name;
      explain = everything config;
      ok = baseEvaluates && (if expect ? option then !value.success else matching);
      detail =
        if !baseEvaluates then
          "the base configuration does not evaluate"
        else if expect ? option then
          "accepted ${lib.concatStringsSep "." expect.option}, expected a type error"
        else
          "expected a failed assertion containing: ${expect.assertion}";
    };

  option = path: { option = lib.splitString "." path; };
  assertion = text: { assertion = text; };

  # A case that is a plain condition, guarded like the others.
  plain = name: ok: detail:
    let
      result = forced ok;
    in
    {
      inherit name;
      explain = ok;
      ok = result.success && result.value;
      detail = if result.success then detail else "evaluation failed (cargo xtask nix-check prints the error)";
    };

  check = what: ok: { inherit what ok; };
  svc = config: config.systemd.services.madmail.serviceConfig;
  recordsOf = config: type: lib.filter (r: r.type == type) config.services.madmail.dns.records;
  hasRecord =
    config: name: type:
    lib.any (r: r.name == name && r.type == type) config.services.madmail.dns.records;
  tcpPorts = config: lib.sort lib.lessThan config.networking.firewall.allowedTCPPorts;
  filesMode = {
    mode = "files";
    certFile = "/var/lib/secrets/cert.pem";
    keyFile = "/var/lib/secrets/key.pem";
  };

  cases = [
    (accepts "a_name_domain_gets_an_acme_certificate_with_mta_sts_and_www" { } (config: [
      (check "extraDomainNames" (
        config.security.acme.certs."chat.example.org".extraDomainNames == [
          "mta-sts.chat.example.org"
          "www.chat.example.org"
        ]
      ))
      (check "reloadServices" (config.security.acme.certs."chat.example.org".reloadServices == [ "madmail.service" ]))
      (check "cert group" (config.security.acme.certs."chat.example.org".group == "madmail"))
      (check "tls files mode" (config.services.madmail.settings.tls.mode == "files"))
      (check "cert path" (config.services.madmail.settings.tls.cert_path == "/var/lib/acme/chat.example.org/fullchain.pem"))
      (check "order retried" (config.systemd.services."acme-order-renew-chat.example.org".serviceConfig.Restart == "on-failure"))
      (check "ordered after acme" (lib.elem "acme-chat.example.org.service" config.systemd.services.madmail.after))
    ]))

    (accepts "acme_leaves_port_80_to_lego" { services.madmail.openFirewall = true; } (config: [
      (check "lego on :80" (config.security.acme.certs."chat.example.org".listenHTTP == ":80"))
      (check "madmail off port 80" (config.services.madmail.settings.listen.http == [ ]))
      (check "port 80 open for lego" (lib.elem 80 config.networking.firewall.allowedTCPPorts))
    ]))

    (accepts "acme_by_dns_gives_port_80_back_to_madmail"
      {
        services.madmail.openFirewall = true;
        security.acme.certs."chat.example.org".listenHTTP = null;
      }
      (config: [
        (check "madmail on port 80" (config.services.madmail.settings.listen.http == [ "0.0.0.0:80" ]))
        (check "port 80 open" (lib.elem 80 config.networking.firewall.allowedTCPPorts))
      ])
    )

    (accepts "builtin_acme_is_madmails_own_client_on_port_80"
      {
        services.madmail = {
          tls.mode = "builtin-acme";
          openFirewall = true;
        };
      }
      (config: [
        (check "tls acme mode" (config.services.madmail.settings.tls.mode == "acme"))
        (check "no security.acme" (config.security.acme.certs == { }))
        (check "port 80 listener" (config.services.madmail.settings.listen.http == [ "0.0.0.0:80" ]))
        (check "ports" (tcpPorts config == [ 25 80 143 443 465 587 993 ]))
        (check "CAA" (hasRecord config "@" "CAA"))
        (check "no acme group" (!((svc config) ? SupplementaryGroups)))
      ])
    )

    (accepts "the_service_is_sandboxed_with_only_cap_net_bind_service" { } (config: [
      (check "bounding set" ((svc config).CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ]))
      (check "ambient" ((svc config).AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ]))
      (check "ProtectSystem" ((svc config).ProtectSystem == "strict"))
      (check "StateDirectory" ((svc config).StateDirectory == "madmail"))
      (check "syscall filter" (lib.elem "@system-service" (svc config).SystemCallFilter))
      (check "dedicated user" ((svc config).User == "madmail" && config.users.users.madmail.isSystemUser))
      (check "ExecStart" (
        lib.hasSuffix "/bin/madmail run --config /nix/store/00000000000000000000000000000000-chatmail.toml" (svc config).ExecStart
      ))
      (check "rendered settings" (config.services.madmail.configFile.script != ""))
    ]))

    (plain "the_unit_renders_as_nixos_writes_it"
      (lib.all (line: lib.hasInfix line defaultUnit) [
        "[Service]\n"
        "Environment=\"MALLOC_ARENA_MAX=2\"\n"
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
        "NoNewPrivileges=true\n"
        "ProtectSystem=strict\n"
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n"
        "User=madmail\n"
        "After=network-online.target acme-chat.example.org.service\n"
      ])
      "the rendered unit lacks an expected line:\n${defaultUnit}"
    )

    (accepts "the_firewall_stays_closed_unless_asked" { } (config: [
      (check "no TCP ports" (config.networking.firewall.allowedTCPPorts == [ ]))
      (check "no UDP ports" (config.networking.firewall.allowedUDPPorts == [ ]))
    ]))

    (accepts "open_firewall_opens_exactly_the_enabled_ports" { services.madmail.openFirewall = true; } (config: [
      (check "ports" (tcpPorts config == [ 25 80 143 443 465 587 993 ]))
      (check "no UDP ports" (config.networking.firewall.allowedUDPPorts == [ ]))
      (check "no UDP ranges" (config.networking.firewall.allowedUDPPortRanges == [ ]))
    ]))

    (accepts "turn_opens_its_ports_and_the_relay_range_over_udp"
      {
        services.madmail = {
          openFirewall = true;
          settings.turn = {
            enabled = true;
            listen = [ "203.0.113.7:3478" ];
            relay_port_min = 50000;
            relay_port_max = 50999;
          };
        };
      }
      (config: [
        (check "TCP ports" (tcpPorts config == [ 25 80 143 443 465 587 993 3478 ]))
        (check "UDP ports" (config.networking.firewall.allowedUDPPorts == [ 3478 ]))
        (check "relay range" (
          config.networking.firewall.allowedUDPPortRanges == [
            {
              from = 50000;
              to = 50999;
            }
          ]
        ))
      ])
    )

    (accepts "the_iroh_relay_runs_by_default_behind_the_https_port" { services.madmail.openFirewall = true; } (config: [
      (check "enabled" config.services.madmail.settings.iroh.enabled)
      (check "no port of its own" (tcpPorts config == [ 25 80 143 443 465 587 993 ]))
      (check "no UDP ports" (config.networking.firewall.allowedUDPPorts == [ ]))
    ]))

    (accepts "the_shadowsocks_proxy_is_off_by_default_and_opens_its_port_when_on"
      {
        services.madmail = {
          openFirewall = true;
          settings.shadowsocks = {
            enabled = true;
            listen = [ "0.0.0.0:8443" ];
          };
        };
      }
      (config: [
        (check "TCP ports" (tcpPorts config == [ 25 80 143 443 465 587 993 8443 ]))
        (check "no UDP ports" (config.networking.firewall.allowedUDPPorts == [ ]))
        (check "default cipher" (config.services.madmail.settings.shadowsocks.cipher == "chacha20-ietf-poly1305"))
      ])
    )

    (rejects "rejects_a_shadowsocks_cipher_delta_chat_lacks" { services.madmail.settings.shadowsocks.cipher = "rc4-md5"; } (
      option "services.madmail.settings.shadowsocks.cipher"
    ))

    (accepts "a_self_signed_relay_serves_its_own_port_80"
      {
        services.madmail = {
          domain = "_relay.test";
          openFirewall = true;
        };
      }
      (config: [
        (check "port 80 listener" (config.services.madmail.settings.listen.http == [ "0.0.0.0:80" ]))
        (check "ports" (tcpPorts config == [ 25 80 143 443 465 587 993 ]))
      ])
    )

    (accepts "a_disabled_service_closes_its_port_and_loses_its_srv_record"
      {
        services.madmail = {
          openFirewall = true;
          settings.listen.submission = [ ];
          settings.listen.imap = [ ];
          tls = filesMode;
        };
      }
      (config: [
        (check "ports" (tcpPorts config == [ 25 80 443 465 993 ]))
        (check "no submission SRV" (!hasRecord config "_submission._tcp" "SRV"))
        (check "submissions SRV" (hasRecord config "_submissions._tcp" "SRV"))
        (check "key by credential" (lib.elem "tls-key.pem:/var/lib/secrets/key.pem" (svc config).LoadCredential))
        (check "key path" (config.services.madmail.settings.tls.key_path == "/run/credentials/madmail.service/tls-key.pem"))
        (check "no acme" (config.security.acme.certs == { }))
      ])
    )

    (accepts "an_ip_domain_is_self_signed_without_acme_or_dns" { services.madmail.domain = "203.0.113.7"; } (config: [
      (check "self-signed" (config.services.madmail.settings.tls.mode == "self-signed"))
      (check "no acme" (config.security.acme.certs == { }))
      (check "no records" (config.services.madmail.dns.records == [ ]))
      (check "no DKIM warning" (config.warnings == [ ]))
      (check "mail_domain" (config.services.madmail.settings.mail_domain == "203.0.113.7"))
    ]))

    (accepts "dns_records_cover_mx_mta_sts_spf_dmarc_caa_and_srv"
      {
        services.madmail.dns = {
          ipv4 = "203.0.113.7";
          ipv6 = "2001:db8::7";
        };
      }
      (config: [
        (check "A" (
          recordsOf config "A" == [
            {
              name = "@";
              type = "A";
              value = "203.0.113.7";
            }
          ]
        ))
        (check "AAAA" (hasRecord config "@" "AAAA"))
        (check "MX" (
          recordsOf config "MX" == [
            {
              name = "@";
              type = "MX";
              value = "10 chat.example.org.";
            }
          ]
        ))
        (check "MTA-STS" (hasRecord config "_mta-sts" "TXT" && hasRecord config "mta-sts" "CNAME"))
        (check "SPF and DMARC" (hasRecord config "@" "TXT" && hasRecord config "_dmarc" "TXT"))
        (check "CAA" (hasRecord config "@" "CAA"))
        (check "SRV imaps" (lib.any (r: r.value == "0 1 993 chat.example.org.") (recordsOf config "SRV")))
        (check "no DKIM yet" (!hasRecord config "opendkim._domainkey" "TXT"))
        (check "DKIM warning names the key file" (
          lib.any (lib.hasInfix "/var/lib/madmail/dkim/dkim-opendkim.pem") config.warnings
        ))
        (check "zone line" (lib.hasInfix "chat.example.org. 3600 IN MX 10 chat.example.org.\n" config.services.madmail.dns.zone))
      ])
    )

    (accepts "a_dkim_key_appears_in_dns_split_into_255_byte_strings"
      { services.madmail.dns.dkimPublicKey = lib.concatStrings (lib.replicate 40 "ABCDEFGHIJ"); }
      (config: [
        (check "record" (hasRecord config "opendkim._domainkey" "TXT"))
        (check "no warning" (config.warnings == [ ]))
        (check "split" (lib.hasInfix "\" \"" config.services.madmail.dns.zone))
      ])
    )

    (accepts "free_form_settings_reach_the_rendered_file" { services.madmail.settings.storage.max_commit_batch = 64; } (
      config: [
        (check "value" (
          config.services.madmail.configFile.script != ""
          && config.services.madmail.settings.storage.max_commit_batch == 64
        ))
      ]
    ))

    (
      let
        options =
          (lib.evalModules {
            modules = [
              ./stubs.nix
              ../../nixos
              base
            ];
          }).options.services.madmail;
        undocumented = lib.filter (o: (o.description or "") == "") (lib.optionAttrSetToDocList options);
      in
      plain "every_option_has_a_description" (undocumented == [ ])
        "undocumented: ${lib.concatMapStringsSep ", " (o: o.name) undocumented}"
    )

    (accepts "the_flake_module_imports_the_module_and_sets_the_flake_package" flake.nixosModules.default (config: [
      (check "attrset with imports" (lib.isAttrs flake.nixosModules.default && flake.nixosModules.default ? imports))
      (check "package" (toString config.services.madmail.package == "/nix/store/00000000000000000000000000000000-madmail-flake"))
      (check "overlay" (lib.isFunction flake.overlays.default))
    ]))

    # The valid twins of the rejected values below.
    (accepts "accepts_ipv6_listen_addresses_and_underscore_test_domains"
      {
        services.madmail.domain = "_relay.test";
        services.madmail.settings.listen.smtp = [ "[::]:25" ];
      }
      (config: [
        (check "self-signed" (config.services.madmail.settings.tls.mode == "self-signed"))
        (check "records for test DNS" (hasRecord config "@" "MX"))
        (check "no CAA" (!hasRecord config "@" "CAA"))
      ])
    )

    (rejects "rejects_a_domain_that_is_not_a_name_or_ipv4" { services.madmail.domain = "not a domain!"; } (
      option "services.madmail.domain"
    ))
    (rejects "rejects_a_listen_address_without_a_port" { services.madmail.settings.listen.smtp = [ "0.0.0.0" ]; } (
      option "services.madmail.settings.listen.smtp"
    ))
    (rejects "rejects_a_message_size_below_1024" { services.madmail.settings.limits.max_message_size = 10; } (
      option "services.madmail.settings.limits.max_message_size"
    ))
    (rejects "rejects_an_iroh_url_that_is_not_http" { services.madmail.settings.iroh.url = "iroh.example.org"; } (
      option "services.madmail.settings.iroh.url"
    ))
    (rejects "rejects_an_unknown_federation_policy" { services.madmail.settings.federation.policy = "maybe"; } (
      option "services.madmail.settings.federation.policy"
    ))
    (rejects "rejects_an_unknown_state_version" { services.madmail.stateVersion = 2; } (
      option "services.madmail.stateVersion"
    ))
    (rejects "rejects_an_unknown_tls_mode" { services.madmail.tls.mode = "letsencrypt"; } (
      option "services.madmail.tls.mode"
    ))
    (rejects "rejects_a_tls_key_in_the_nix_store"
      {
        services.madmail.tls = filesMode // {
          keyFile = "/nix/store/00000000000000000000000000000000-key.pem";
        };
      }
      (assertion "must not be in the Nix store")
    )
    (rejects "rejects_an_environment_file_in_the_nix_store"
      { services.madmail.environmentFile = "/nix/store/00000000000000000000000000000000-env"; }
      (assertion "must not be in the Nix store")
    )
    (rejects "rejects_credentials_in_the_nix_store"
      { services.madmail.credentials.turn = "/nix/store/00000000000000000000000000000000-turn"; }
      (assertion "must not point into the Nix store")
    )
    (rejects "rejects_files_mode_without_a_key" { services.madmail.tls.mode = "files"; } (
      assertion "needs services.madmail.tls.certFile"
    ))
    (rejects "rejects_acme_for_an_ip_domain"
      {
        services.madmail.domain = "203.0.113.7";
        services.madmail.tls.mode = "acme";
      }
      (assertion "needs a public DNS name")
    )
    (rejects "rejects_builtin_acme_for_an_underscore_domain"
      {
        services.madmail.domain = "_relay.test";
        services.madmail.tls.mode = "builtin-acme";
      }
      (assertion "needs a public DNS name")
    )
    (rejects "rejects_builtin_acme_without_a_port_80_listener"
      {
        services.madmail.tls.mode = "builtin-acme";
        services.madmail.settings.listen.http = [ ];
      }
      (assertion "must not be empty")
    )
    (rejects "rejects_madmail_and_lego_both_on_port_80" { services.madmail.settings.listen.http = [ "0.0.0.0:80" ]; } (
      assertion "both want port 80"
    ))

    # The harness itself: a broken value fails an `accepts` case, and a
    # valid one fails a `rejects` case.
    (plain "a_broken_value_fails_an_accepting_case"
      (!(accepts "broken" { services.madmail.domain = "not a domain!"; } (_: [ ])).ok)
      "an accepting case passed although its domain is invalid"
    )
    (plain "a_valid_value_fails_a_rejecting_case"
      (
        !(rejects "valid" { } (option "services.madmail.domain")).ok
        && !(rejects "valid" { } (assertion "must not be in the Nix store")).ok
      )
      "a rejecting case passed although nothing was rejected"
    )
  ];

  explained = lib.findFirst (c: c.name == explain) (throw "no case named ${explain}") cases;
in
if unit then
  defaultUnit
else if explain != null then
  explained.explain
else
  map
    (c: {
      inherit (c) name ok;
      detail = if c.ok then "" else c.detail;
    })
    cases
