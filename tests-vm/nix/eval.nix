# Module evaluation tests for `services.madmail`, run with nixpkgs' `lib`
# only (no package set): the NixOS options the module sets are typed stubs
# (./stubs.nix). Each case evaluates the module with one configuration and
# either checks the resulting NixOS configuration or expects a rejection: a
# type error, or a failed assertion whose message contains `rejects`.
#
#   nix-instantiate --eval --strict --json tests-vm/nix/eval.nix --argstr libPath /path/to/nixpkgs/lib
#
# The result is a list of `{ name; ok; detail; }`.
{ libPath }:

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
    inherit (config) users environment networking security system;
    assertions = failedAssertions config;
    inherit (config.services.madmail) settings dns configFile stateVersion;
    services = config.systemd.services;
  };

  forced = value: builtins.tryEval (builtins.deepSeq value value);

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
      ok = result.success && unexpected == [ ] && failed == [ ];
      detail =
        if !result.success then
          "evaluation failed"
        else if unexpected != [ ] then
          "assertion failed: ${lib.head unexpected}"
        else
          lib.concatMapStringsSep "; " (c: "not true: ${c.what}") failed;
    };

  # A case passes when evaluation fails (`reason` null: a type error), or
  # when an assertion whose message contains `reason` fails.
  rejects =
    name: module: reason:
    let
      config = evaluate module;
      result = forced (everything config);
      messages = forced (failedAssertions config);
      matching =
        messages.success && lib.any (message: lib.hasInfix reason message) messages.value;
    in
    {
      inherit name;
      ok = if reason == null then !result.success else matching;
      detail =
        if reason == null then
          "accepted, expected a type error"
        else
          "expected a failed assertion containing: ${reason}";
    };

  check = what: ok: { inherit what ok; };
  svc = config: config.systemd.services.madmail.serviceConfig;
  recordsOf = config: type: lib.filter (r: r.type == type) config.services.madmail.dns.records;
  hasRecord = config: name: type: lib.any (r: r.name == name && r.type == type) config.services.madmail.dns.records;
  tcpPorts = config: lib.sort lib.lessThan config.networking.firewall.allowedTCPPorts;
in
[
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

  (accepts "the_service_is_sandboxed_with_only_cap_net_bind_service" { } (config: [
    (check "bounding set" ((svc config).CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ]))
    (check "ambient" ((svc config).AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ]))
    (check "ProtectSystem" ((svc config).ProtectSystem == "strict"))
    (check "StateDirectory" ((svc config).StateDirectory == "madmail"))
    (check "syscall filter" (lib.elem "@system-service" (svc config).SystemCallFilter))
    (check "dedicated user" ((svc config).User == "madmail" && config.users.users.madmail.isSystemUser))
    (check "ExecStart" (lib.hasSuffix "/bin/madmail run --config /nix/store/00000000000000000000000000000000-chatmail.toml" (svc config).ExecStart))
    (check "rendered settings" (config.services.madmail.configFile.script != ""))
  ]))

  (accepts "the_firewall_stays_closed_unless_asked" { } (config: [
    (check "no ports" (config.networking.firewall.allowedTCPPorts == [ ]))
  ]))

  (accepts "open_firewall_opens_exactly_the_enabled_ports" { services.madmail.openFirewall = true; } (config: [
    (check "ports" (tcpPorts config == [ 25 80 143 443 465 587 993 ]))
  ]))

  (accepts "a_disabled_service_closes_its_port_and_loses_its_srv_record"
    {
      services.madmail = {
        openFirewall = true;
        settings.listen.submission = [ ];
        settings.listen.imap = [ ];
        tls.mode = "files";
        tls.certFile = "/var/lib/secrets/cert.pem";
        tls.keyFile = "/var/lib/secrets/key.pem";
      };
    }
    (config: [
      (check "ports" (tcpPorts config == [ 25 443 465 993 ]))
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
      (check "A" (recordsOf config "A" == [ { name = "@"; type = "A"; value = "203.0.113.7"; } ]))
      (check "AAAA" (hasRecord config "@" "AAAA"))
      (check "MX" (recordsOf config "MX" == [ { name = "@"; type = "MX"; value = "10 chat.example.org."; } ]))
      (check "MTA-STS" (hasRecord config "_mta-sts" "TXT" && hasRecord config "mta-sts" "CNAME"))
      (check "SPF and DMARC" (hasRecord config "@" "TXT" && hasRecord config "_dmarc" "TXT"))
      (check "CAA" (hasRecord config "@" "CAA"))
      (check "SRV imaps" (lib.any (r: r.value == "0 1 993 chat.example.org.") (recordsOf config "SRV")))
      (check "no DKIM yet" (!hasRecord config "opendkim._domainkey" "TXT"))
      (check "DKIM warning" (lib.any (lib.hasInfix "dkimPublicKey") config.warnings))
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

  (accepts "free_form_settings_reach_the_rendered_file"
    { services.madmail.settings.storage.max_commit_batch = 64; }
    (config: [ (check "value" (config.services.madmail.configFile.script != "" && config.services.madmail.settings.storage.max_commit_batch == 64)) ])
  )

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
    {
      name = "every_option_has_a_description";
      ok = undocumented == [ ];
      detail = "undocumented: ${lib.concatMapStringsSep ", " (o: o.name) undocumented}";
    }
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

  (rejects "rejects_a_domain_that_is_not_a_name_or_ipv4" { services.madmail.domain = "not a domain!"; } null)
  (rejects "rejects_a_listen_address_without_a_port" { services.madmail.settings.listen.smtp = [ "0.0.0.0" ]; } null)
  (rejects "rejects_a_message_size_below_1024" { services.madmail.settings.limits.max_message_size = 10; } null)
  (rejects "rejects_an_unknown_federation_policy" { services.madmail.settings.federation.policy = "maybe"; } null)
  (rejects "rejects_an_unknown_state_version" { services.madmail.stateVersion = 2; } null)
  (rejects "rejects_a_tls_key_in_the_nix_store"
    {
      services.madmail.tls = {
        mode = "files";
        certFile = "/var/lib/secrets/cert.pem";
        keyFile = "/nix/store/00000000000000000000000000000000-key.pem";
      };
    }
    "must not be in the Nix store"
  )
  (rejects "rejects_an_environment_file_in_the_nix_store"
    { services.madmail.environmentFile = "/nix/store/00000000000000000000000000000000-env"; }
    "must not be in the Nix store"
  )
  (rejects "rejects_credentials_in_the_nix_store"
    { services.madmail.credentials.turn = "/nix/store/00000000000000000000000000000000-turn"; }
    "must not point into the Nix store"
  )
  (rejects "rejects_files_mode_without_a_key" { services.madmail.tls.mode = "files"; } "needs services.madmail.tls.certFile")
  (rejects "rejects_acme_for_an_ip_domain"
    {
      services.madmail.domain = "203.0.113.7";
      services.madmail.tls.mode = "acme";
    }
    "needs a public DNS name"
  )
]
