# NixOS VM test `basic`: a relay configured only through `services.madmail`
# and a client node running the Delta Chat scenarios of ./scenarios with the
# real Delta Chat core from nixpkgs. Two profiles chat, the raw-protocol
# rules hold, and a service restart keeps the accounts.
#
#   nix build .#checks.x86_64-linux.vm-basic      (needs KVM)
{ pkgs, module }:

let
  domain = "_relay.test";
  client = import ./scenario-client.nix { inherit pkgs; };
  env = client.relayEnv "MADMAIL" domain "relay";
in
pkgs.testers.runNixOSTest {
  name = "madmail-basic";

  nodes.relay = {
    imports = [ module ];
    # madmail refuses new accounts with less than 1 GB free in its state
    # directory or 200 MB of available memory.
    virtualisation = {
      diskSize = 4096;
      memorySize = 1536;
    };
    services.madmail = {
      enable = true;
      inherit domain;
      stateVersion = 1;
      openFirewall = true;
      settings.log.no_log = false;
    };
  };

  nodes.client = client.node;

  testScript = ''
    start_all()

    relay.wait_for_unit("madmail.service")
    for port in (25, 80, 143, 443, 465, 587, 993):
        relay.wait_for_open_port(port)
    client.wait_for_unit("multi-user.target")

    client.succeed("${client.copyScenarios}")

    with subtest("Delta Chat profiles chat over the relay"):
        client.succeed("${client.pytest env "test_messaging.py test_protocol.py"}")

    list_accounts = "runuser -u madmail -- madmail accounts list --config /etc/madmail/chatmail.toml"

    with subtest("a restart keeps the accounts"):
        before = relay.succeed(list_accounts)
        assert before.strip() != "", "the scenarios created no accounts"
        relay.systemctl("restart madmail.service")
        relay.wait_for_unit("madmail.service")
        relay.wait_for_open_port(993)
        after = relay.succeed(list_accounts)
        assert before == after, f"accounts changed across a restart:\n{before}\n---\n{after}"
        client.succeed("${client.pytest env "test_messaging.py -k exchange_encrypted_texts"}")

    with subtest("the on-disk generation was recorded"):
        relay.succeed("test \"$(cat /var/lib/madmail/nixos-state-version)\" = 1")
  '';
}
