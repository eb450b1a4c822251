# NixOS VM test `basic`: a relay configured only through `services.madmail`
# and a client node running the Delta Chat scenarios of ./scenarios with the
# real Delta Chat core from nixpkgs. Two profiles chat, the raw-protocol
# rules hold, and a service restart keeps the accounts.
#
#   nix build .#checks.x86_64-linux.vm-basic
{ pkgs, module }:

let
  domain = "_relay.test";

  python = pkgs.python3.withPackages (ps: [
    ps.deltachat-rpc-client
    ps.pytest
    ps.pytest-timeout
  ]);

  # The scenarios read everything about the relay from the environment.
  scenarioEnv = lib.concatStringsSep " " [
    "MADMAIL_DOMAIN=${domain}"
    "MADMAIL_HOST=relay"
    "MADMAIL_SUBMISSION_PORT=587"
    "MADMAIL_IMAP_PORT=143"
    "PYTHONDONTWRITEBYTECODE=1"
  ];

  inherit (pkgs) lib;
in
pkgs.testers.runNixOSTest {
  name = "madmail-basic";

  nodes.relay = {
    imports = [ module ];
    services.madmail = {
      enable = true;
      inherit domain;
      stateVersion = 1;
      openFirewall = true;
      settings.log.no_log = false;
    };
  };

  nodes.client = {
    environment.systemPackages = [
      python
      pkgs.deltachat-rpc-server
    ];
  };

  testScript = ''
    start_all()

    relay.wait_for_unit("madmail.service")
    for port in (25, 143, 443, 465, 587, 993):
        relay.wait_for_open_port(port)
    client.wait_for_unit("multi-user.target")

    client.succeed("cp -r ${./scenarios} /tmp/scenarios && chmod -R u+w /tmp/scenarios")

    with subtest("Delta Chat profiles chat over the relay"):
        client.succeed("cd /tmp/scenarios && ${scenarioEnv} python -m pytest -v test_messaging.py test_protocol.py")

    list_accounts = "runuser -u madmail -- madmail accounts list --config /etc/madmail/chatmail.toml"

    with subtest("a restart keeps the accounts"):
        before = relay.succeed(list_accounts)
        assert before.strip() != "", "the scenarios created no accounts"
        relay.systemctl("restart madmail.service")
        relay.wait_for_unit("madmail.service")
        relay.wait_for_open_port(993)
        after = relay.succeed(list_accounts)
        assert before == after, f"accounts changed across a restart:\n{before}\n---\n{after}"
        client.succeed("cd /tmp/scenarios && ${scenarioEnv} python -m pytest -v test_messaging.py -k exchange_encrypted_texts")

    with subtest("the on-disk generation was recorded"):
        relay.succeed("test \"$(cat /var/lib/madmail/nixos-state-version)\" = 1")
  '';
}
