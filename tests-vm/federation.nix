# NixOS VM test `federation`: two relays that find each other only through
# DNS, a DNS node serving exactly the records the module computes for them
# (`services.madmail.dns.zone`, DKIM included), and a client node running
# tests-vm/scenarios/test_federation.py (1:1 chat, SecureJoin, a group
# spanning both relays) with real Delta Chat profiles.
#
# What it proves:
# 1. The zone fragment of each relay loads into a real DNS server (BIND) and
#    answers MX, A and the DKIM TXT record; the relays use it for MX lookups
#    and DKIM verification (`federation.dns_servers`): relay1 signs with RSA,
#    relay2 with ed25519. The keys are test-only fixtures put in place before
#    the first start; the `openssl` commands docs/nix.md gives for
#    `dns.dkimPublicKey` yield exactly the published keys.
# 2. Mail between the relays goes over `POST /mxdeliv` on port 443: in each
#    relay's journal every delivery attempt that delivered went
#    `via="mxdeliv"`.
# 3. With port 443 between the relays rejected (iptables on each relay, for
#    the other relay's address only), the same scenarios pass again and every
#    new delivery went `via="smtp"`: the SMTP fallback on port 25.
#
#   nix build .#checks.x86_64-linux.vm-federation      (needs KVM)
{ pkgs, module }:

let
  client = import ./scenario-client.nix { inherit pkgs; };

  # Test-only DKIM keys, never to be used anywhere else: PKCS#8 PEM as
  # madmail stores them, and the base64 `p=` value of the DNS record.
  dkim = {
    relay1 = {
      algorithm = "rsa";
      pem = ''
        -----BEGIN PRIVATE KEY-----
        MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDI5QXzK86bgkLM
        rqblj4plc5mfOsBbNGld/dqy7nu8W/qlaE+JO/q/YgGKA2RK0si7v+54Nt5sDoho
        jZSljDP+7fyrzkRXFpaPQdg2ociZTMR9cov1rxAY9G6oK/qv9j8Ev03/BZmp8VGi
        BXT7pelVqxfELgdC0oRdAofZDd5zHunQQV1Pjkj/hIoV5agxPk0UyWuLnTU+pdw4
        qHVMsUCDhjN8WBcXa8BEh9yjNZvzbwdhvDNQAp1MDMtO+HrZaqXGJlAnjo1Cp14E
        /FuCeNncmeerdQjsK/Re7TTUFj6T1fgtlrokCSAWLChEdYrM/wv9ov8WjHR+irim
        O5Gz3eg/AgMBAAECggEABdIKBJeK+T+915OZRLmOb03m5whWhRur/iLMYK1+5iBC
        GFEuuePNMz2Y5az6xGbHcM0ftWwUZ4LskPpYkq+aATN8H2VTcSI3nqVdzayNS9Dk
        XVuGLdxyiCn9ZMRjJaL8TbeM7eLQ3bb6ZLfXCujkmyNOqnh/NqUPN2k4t2FGRgVl
        3pJwCWMG1rpth8fj2PWBP6rkps6FA46LgJTJ6Rv07KAAsHlRD4pVf6g9Kv1YN6td
        dGbfR8CJAKfnZ6Q84+NtCwd95DWCl8o2QQRJQtvN6U/hd16UbzKCKoSF29PwPyJQ
        I29STcfq0yRslGPFKYUIQIQ2ztRYOjQfgnPszgohEQKBgQD1v7en59WWEUJ21HBd
        8ZEMApTYhaRPC2kUkaQ221Yr1C/sKRCP3EeJYMe9ZpsHBXxLLjklz/cWspEVTJ8O
        kkflCM9yvOw0vD5AJ81JZS4JPkZq4Sp+3IL6qu68M/BkcGrvZGDKABr0wLItv6Sp
        rMwC+1T5GOvkjF3cI6mvZ5xocQKBgQDRRlHeG1rex/1+EyXGesct+uQIRew2Jkbf
        v9ygVos8qw1CKqsA8oPT2ozsJ/lm3cSW9rX41hPNZPaJQtVPt4agoP4uawhbQhJw
        VdDvu/rPKIJb1K0LWRQyhwiyJdBOdimZSt4gX7kyzvxhWygX33yrceUHkudihf2E
        9g35G2QzrwKBgQDNSPvIHRgEpiJZVZkQQO0jlTx1qx3YkfWTox4EXTEcp8Hoi100
        b5Sqo9f21bGHKgPsYY6HkbQcl8ouerUb3QKFxthURpEidGWj/hu0xfqw6f605ac0
        FkyrzQJk4RZdMLODitx3oaLi9d1h7gdFXf2GOCGBfFoBr2fwrzHePrUfYQKBgEvF
        q0TBINDDFpx8cFQCBnY2fjQkpRciGs1O2aJQU4++20kWy93G8UZWvmmPO7UsHM8Q
        OukDEh5vLPib80Iu0Bb+06mY5WitbqGv4Lu8k15Ia5K2WYVfVnnI/LQMDvUpwXwY
        aH7OSe8ElMrnR4gFSk2FKojoftDkdNucf4ivi0NPAoGBANrxpx5gnLrFBBcfDGPA
        jWinxjrVe5RIMDS8r3cYQ84vzXsHfwUHV4a41fnbCXLCLZMLMo2T1lunoRXMRFR2
        yr9/xUtcR40YHzDoSO+TRwlwyAJUN5SpsQo6/RLC/XEHWOofwZ56/zLiQaq5lZTD
        4M1bF8TTiX1LcggVOVzu7d1t
        -----END PRIVATE KEY-----
      '';
      public = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyOUF8yvOm4JCzK6m5Y+KZXOZnzrAWzRpXf3asu57vFv6pWhPiTv6v2IBigNkStLIu7/ueDbebA6IaI2UpYwz/u38q85EVxaWj0HYNqHImUzEfXKL9a8QGPRuqCv6r/Y/BL9N/wWZqfFRogV0+6XpVasXxC4HQtKEXQKH2Q3ecx7p0EFdT45I/4SKFeWoMT5NFMlri501PqXcOKh1TLFAg4YzfFgXF2vARIfcozWb828HYbwzUAKdTAzLTvh62WqlxiZQJ46NQqdeBPxbgnjZ3Jnnq3UI7Cv0Xu001BY+k9X4LZa6JAkgFiwoRHWKzP8L/aL/Fox0foq4pjuRs93oPwIDAQAB";
      # docs/nix.md, "DNS": the public key of an RSA key.
      publicCommand = "openssl pkey -in /var/lib/madmail/dkim/dkim-opendkim.pem -pubout -outform DER | base64 -w0";
    };
    relay2 = {
      algorithm = "ed25519";
      pem = ''
        -----BEGIN PRIVATE KEY-----
        MC4CAQAwBQYDK2VwBCIEIJ8B9+eJuziwG6K/VPFRr9tVk+sFGu9hroqOMjAub4Jv
        -----END PRIVATE KEY-----
      '';
      public = "2fJb/FOLRpKVb6GsAtlZbHWSvF9EbR1HKVOx/N+kk1w=";
      # docs/nix.md, "DNS": the raw 32 bytes of an ed25519 key (RFC 8463).
      publicCommand = "openssl pkey -in /var/lib/madmail/dkim/dkim-opendkim.pem -pubout -outform DER | tail -c 32 | base64 -w0";
    };
  };

  domainOf = name: "_${name}.test";

  relay =
    name:
    { config, nodes, ... }:
    {
      imports = [ module ];
      # madmail refuses new accounts with less than 1 GB free in its state
      # directory or 200 MB of available memory.
      virtualisation = {
        diskSize = 4096;
        memorySize = 1536;
      };
      environment.systemPackages = [
        pkgs.openssl
        pkgs.iptables
      ];
      services.madmail = {
        enable = true;
        domain = domainOf name;
        stateVersion = 1;
        openFirewall = true;
        dns = {
          ipv4 = config.networking.primaryIPAddress;
          dkimPublicKey = dkim.${name}.public;
        };
        settings = {
          log.no_log = false;
          dkim.algorithm = dkim.${name}.algorithm;
          federation.dns_servers = [ "${nodes.dns.networking.primaryIPAddress}:53" ];
        };
      };
      # The fixture key, in place before madmail would generate one.
      systemd.services.madmail.preStart = ''
        if [ ! -e /var/lib/madmail/dkim/dkim-opendkim.pem ]; then
          install -D -m 0600 ${pkgs.writeText "dkim-${name}.pem" dkim.${name}.pem} /var/lib/madmail/dkim/dkim-opendkim.pem
        fi
      '';
    };

  env = client.relayEnv "MADMAIL" (domainOf "relay1") "relay1" // client.relayEnv "MADMAIL2" (domainOf "relay2") "relay2";
in
pkgs.testers.runNixOSTest {
  name = "madmail-federation";

  nodes.dns =
    { config, nodes, ... }:
    {
      networking.firewall = {
        allowedUDPPorts = [ 53 ];
        allowedTCPPorts = [ 53 ];
      };
      environment.systemPackages = [ pkgs.dnsutils ];
      services.bind = {
        enable = true;
        zones."test" = {
          master = true;
          # Both relays' zone fragments, verbatim, under one SOA.
          file = pkgs.writeText "test.zone" (
            ''
              $TTL 60
              @ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60
              @ IN NS ns.test.
              ns IN A ${config.networking.primaryIPAddress}
            ''
            + nodes.relay1.services.madmail.dns.zone
            + nodes.relay2.services.madmail.dns.zone
          );
          # The test domains start with `_`, which BIND's host-name checks
          # refuse in A and MX records.
          extraConfig = "check-names ignore;";
        };
      };
    };

  nodes.relay1 = relay "relay1";
  nodes.relay2 = relay "relay2";
  nodes.client = client.node;

  testScript =
    { nodes, ... }:
    let
      ip = name: nodes.${name}.networking.primaryIPAddress;
    in
    ''
      import re

      relays = {"relay1": relay1, "relay2": relay2}
      ip = {"relay1": "${ip "relay1"}", "relay2": "${ip "relay2"}"}
      public_key = {"relay1": "${dkim.relay1.public}", "relay2": "${dkim.relay2.public}"}
      public_command = {"relay1": "${dkim.relay1.publicCommand}", "relay2": "${dkim.relay2.publicCommand}"}


      def deliveries(relay):
          """(transport, delivered recipients) of every outbound delivery attempt the relay logged."""
          found = []
          log = relay.succeed("journalctl -u madmail.service -o cat --no-pager")
          for line in log.splitlines():
              if "outbound delivery attempt" not in line:
                  continue
              via = re.search(r'\bvia="?(\w+)', line)
              count = re.search(r"\bdelivered=(\d+)", line)
              if via and count:
                  found.append((via.group(1), int(count.group(1))))
          return found


      def expect_transport(transport, before):
          for name, relay in relays.items():
              new = deliveries(relay)[len(before[name]):]
              used = {via for via, count in new if count > 0}
              assert used == {transport}, f"{name} delivered over {used or 'nothing'} ({new}), expected only {transport}"


      def dig(record_type, name):
          return dns.succeed(f"dig +short @127.0.0.1 {record_type} {name}").strip()


      start_all()
      dns.wait_for_unit("bind.service")
      dns.wait_for_open_port(53)
      for relay in relays.values():
          relay.wait_for_unit("madmail.service")
          for port in (25, 80, 143, 443, 465, 587, 993):
              relay.wait_for_open_port(port)
      client.wait_for_unit("multi-user.target")

      with subtest("the DNS node serves the records the module computed"):
          for name in relays:
              domain = f"_{name}.test"
              assert dig("MX", domain) == f"10 {domain}.", dig("MX", domain)
              assert dig("A", domain) == ip[name], dig("A", domain)
              txt = "".join(re.findall(r'"([^"]*)"', dig("TXT", f"opendkim._domainkey.{domain}")))
              assert txt.endswith(f"p={public_key[name]}"), txt

      with subtest("the relays sign with the published keys"):
          for name, relay in relays.items():
              assert relay.succeed(public_command[name]).strip() == public_key[name]
              printed = relay.succeed("runuser -u madmail -- madmail dns --config /etc/madmail/chatmail.toml")
              assert public_key[name][:64] in printed, printed

      client.succeed("${client.copyScenarios}")

      with subtest("federation over POST /mxdeliv"):
          before = {name: deliveries(relay) for name, relay in relays.items()}
          client.succeed("${client.pytest env "test_federation.py"}")
          expect_transport("mxdeliv", before)

      with subtest("SMTP fallback when port 443 between the relays is closed"):
          for name, other in (("relay1", "relay2"), ("relay2", "relay1")):
              relays[name].succeed(
                  f"iptables -I INPUT -p tcp --dport 443 -s {ip[other]} -j REJECT --reject-with tcp-reset"
              )
              relays[other].fail(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ip[name]}/443'")
              relays[other].succeed(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ip[name]}/25'")
          before = {name: deliveries(relay) for name, relay in relays.items()}
          client.succeed("${client.pytest env "test_federation.py"}")
          expect_transport("smtp", before)
    '';
}
