# NixOS VM test `basic`: a relay configured only through `services.madmail`
# and a client node running the Delta Chat scenarios of ./scenarios with the
# real Delta Chat core from nixpkgs. Two profiles chat, the raw-protocol
# rules hold, they are handed the relay's TURN server (and coturn's client
# relays through it with their credential), they exchange webxdc realtime
# data through the built-in iroh relay, a profile behind the Shadowsocks
# proxy chats through it, and a service restart keeps the accounts. iroh's client trusts only the public web roots, so the profiles
# reach the self-signed relay's `/relay` through socat on the client, which
# terminates TLS (the published `irohrelay` URL names that front).
#
#   nix build .#checks.x86_64-linux.vm-basic      (needs KVM)
{ pkgs, module }:

let
  domain = "_relay.test";
  client = import ./scenario-client.nix { inherit pkgs; };
  # Where the client's socat listens (on loopback), in front of the
  # relay's port 443.
  irohPort = "3340";
  env = client.relayEnv "MADMAIL" domain "relay";
in
pkgs.testers.runNixOSTest {
  name = "madmail-basic";

  nodes.relay =
    { config, ... }:
    {
      imports = [ module ];
      environment.systemPackages = [ pkgs.curl ];
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
        settings = {
          log.no_log = false;
          turn = {
            enabled = true;
            host = config.networking.primaryIPAddress;
            relay_addresses = [ config.networking.primaryIPAddress ];
            # coturn's echo peer runs on the client, a private address.
            allowed_peers = [ "192.168.0.0/16" ];
          };
          iroh.url = "http://127.0.0.1:${irohPort}/";
          # The link names the address the client reaches.
          shadowsocks = {
            enabled = true;
            host = config.networking.primaryIPAddress;
          };
          metrics.enabled = true;
        };
      };
    };

  nodes.client = {
    imports = [ client.node ];
    # coturn's echo peer receives the relayed UDP here.
    networking.firewall.enable = false;
    environment.systemPackages = [
      pkgs.socat
      pkgs.coturn
    ];
  };

  testScript =
    { nodes, ... }:
    let
      realtime = env // {
        MADMAIL_TURN_HOST = nodes.relay.networking.primaryIPAddress;
        MADMAIL_TURN_PORT = "3478";
        MADMAIL_TURN_PEER = nodes.client.networking.primaryIPAddress;
        MADMAIL_IROH_URL = "http://127.0.0.1:${irohPort}/";
      };
      proxied = env // {
        MADMAIL_PROXY_PORT = "8388";
      };
    in
    ''
      start_all()

      relay.wait_for_unit("madmail.service")
      for port in (25, 80, 143, 443, 465, 587, 993):
          relay.wait_for_open_port(port)
      client.wait_for_unit("multi-user.target")

      client.succeed("${client.copyScenarios}")

      with subtest("Delta Chat profiles chat over the relay"):
          client.succeed("${client.pytest env "test_messaging.py test_protocol.py"}")

      with subtest("calls get the relay's TURN server, webxdc apps its iroh relay"):
          relay.wait_for_open_port(3478)
          client.succeed(
              "systemd-run --unit iroh-front socat TCP-LISTEN:${irohPort},bind=127.0.0.1,fork,reuseaddr OPENSSL:relay:443,verify=0"
          )
          client.wait_for_open_port(${irohPort})
          client.succeed("${client.pytest realtime "test_relay_features.py test_realtime.py -k 'turn or realtime'"}")
          # Both profiles connected to the built-in iroh relay.
          relay.succeed(
              "curl -sf http://127.0.0.1:9465/metrics"
              " | awk '$1 == \"madmail_iroh_clients_accepted_total\" && $2 >= 2 { found = 1 } END { exit !found }'"
          )

      with subtest("a profile behind the Shadowsocks proxy chats through it"):
          relay.wait_for_open_port(8388)
          link = relay.succeed(
              "runuser -u madmail -- madmail proxy-link --config /etc/madmail/chatmail.toml"
          ).strip()
          assert link.startswith("ss://"), link
          client.succeed("${client.pytest proxied "test_proxy.py"}")
          relay.succeed(
              "curl -sf http://127.0.0.1:9465/metrics"
              " | awk '$1 == \"madmail_shadowsocks_tunnels_total\" && $2 >= 2 { found = 1 } END { exit !found }'"
          )

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
