# NixOS VM test `acme`: the relay's certificate comes from the module's
# default `tls.mode = "acme"` (NixOS' `security.acme`, lego answering HTTP-01
# on port 80) and nixpkgs' pebble test CA (nixos/tests/common/acme, whose
# server node maps every node's certificate names to that node).
#
# What it proves:
# 1. The first order succeeds through the firewall `openFirewall` opens, for
#    the domain and its `mta-sts.` and `www.` names, while madmail keeps off
#    port 80; `reloadServices` restarts madmail, which then serves the
#    issued certificate (not the self-signed placeholder) on 993, 465 and
#    443, verified by a client against pebble's root.
# 2. A forced renewal (a specialisation raising `validMinDays` beyond the
#    certificate's lifetime, as nixpkgs' own ACME tests do) writes a new
#    certificate and restarts madmail, and the client sees the new serial.
#
#   nix build .#checks.x86_64-linux.vm-acme      (needs KVM)
{ pkgs, module }:

let
  domain = "relay.test";
  acmeTests = "${pkgs.path}/nixos/tests/common/acme";
in
pkgs.testers.runNixOSTest {
  name = "madmail-acme";

  # pebble on https://acme.test/dir.
  nodes.acme = {
    imports = [ "${acmeTests}/server" ];
  };

  nodes.relay = {
    # Trusts the CA's endpoint and points `security.acme` at it.
    imports = [
      module
      "${acmeTests}/client"
    ];
    environment.systemPackages = [ pkgs.openssl ];
    services.madmail = {
      enable = true;
      inherit domain;
      stateVersion = 1;
      openFirewall = true;
      settings.log.no_log = false;
    };
    specialisation.renew.configuration = {
      # pebble's certificates are valid for years: ask for a renewal now.
      security.acme.certs.${domain}.validMinDays = 9999;
    };
  };

  nodes.client =
    { nodes, ... }:
    {
      environment.systemPackages = [
        pkgs.openssl
        pkgs.curl
      ];
      networking.extraHosts = "${nodes.relay.networking.primaryIPAddress} ${domain} mta-sts.${domain} www.${domain}";
      # For pebble's management endpoint, which hands out its root.
      security.pki.certificateFiles = [ nodes.acme.test-support.acme.caCert ];
    };

  testScript =
    { nodes, ... }:
    ''
      domain = "${domain}"
      ca = "${nodes.acme.test-support.acme.caDomain}"
      cert_file = f"/var/lib/acme/{domain}/cert.pem"


      def served_serial(port):
          """The serial of the certificate madmail presents on `port`."""
          return client.succeed(
              f"openssl s_client -connect {domain}:{port} -servername {domain} </dev/null 2>/dev/null"
              " | openssl x509 -noout -serial"
          ).strip()


      def file_serial():
          return relay.succeed(f"openssl x509 -noout -serial -in {cert_file}").strip()


      def serves(serial):
          """Waits until 993 serves `serial`, then checks 465 and 443 do too."""
          client.wait_until_succeeds(
              f"test \"$(openssl s_client -connect {domain}:993 -servername {domain} </dev/null 2>/dev/null"
              f" | openssl x509 -noout -serial)\" = '{serial}'",
              timeout=120,
          )
          for port in (465, 443):
              assert served_serial(port) == serial, f"port {port} serves {served_serial(port)}, not {serial}"


      acme.start()
      acme.wait_for_unit("pebble.service")
      acme.wait_for_open_port(443)
      acme.wait_for_open_port(15000)
      relay.start()
      client.start()

      with subtest("the order succeeds and madmail stays off port 80"):
          relay.wait_until_succeeds(f"openssl x509 -noout -issuer -in {cert_file} | grep -i pebble", timeout=180)
          for name in (domain, f"mta-sts.{domain}", f"www.{domain}"):
              relay.succeed(f"openssl x509 -noout -checkhost {name} -in {cert_file} | grep -q ' does match'")
          relay.succeed(f"test \"$(stat -L -c %G /var/lib/acme/{domain}/key.pem)\" = madmail")
          client.wait_for_unit("multi-user.target")
          client.fail(f"curl --silent --max-time 5 http://{domain}/")

      with subtest("madmail serves the issued certificate, valid against pebble's root"):
          relay.wait_for_unit("madmail.service")
          issued = file_serial()
          serves(issued)
          client.succeed(f"curl --silent --fail https://{ca}:15000/roots/0 > /tmp/pebble-root.pem")
          for port in (993, 465, 443):
              client.succeed(
                  f"openssl s_client -connect {domain}:{port} -servername {domain}"
                  f" -CAfile /tmp/pebble-root.pem -verify_return_error -verify_hostname {domain} </dev/null"
              )

      with subtest("a renewal restarts madmail with the new certificate"):
          invocation = relay.succeed("systemctl show --value -p InvocationID madmail.service").strip()
          relay.succeed("/run/current-system/specialisation/renew/bin/switch-to-configuration test")
          relay.wait_until_succeeds(f"test \"$(openssl x509 -noout -serial -in {cert_file})\" != '{issued}'", timeout=180)
          serves(file_serial())
          restarted = relay.succeed("systemctl show --value -p InvocationID madmail.service").strip()
          assert restarted != invocation, "madmail was not restarted for the new certificate"
    '';
}
