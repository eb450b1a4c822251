# NixOS VM test `firewall`: `openFirewall = true` opens exactly the TCP ports
# of the services madmail runs. A scanner node probes all 65535 TCP ports of
# two relays and finds open exactly:
# - on `relay` (every service on its default port, self-signed): 25, 80,
#   143, 443, 465, 587 and 993;
# - on `trimmed` (submission, IMAP STARTTLS and plain HTTP turned off with
#   empty `listen` lists): 25, 443, 465 and 993.
# A listener on a port the module did not open (8080 on `relay`) answers on
# the relay itself but not from the scanner, so the closed ports are closed
# by the firewall, not merely unused.
#
#   nix build .#checks.x86_64-linux.vm-firewall      (needs KVM)
{ pkgs, module }:

let
  relay =
    domain: settings:
    {
      imports = [ module ];
      services.madmail = {
        enable = true;
        inherit domain settings;
        stateVersion = 1;
        openFirewall = true;
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "madmail-firewall";

  nodes.relay = relay "_relay.test" { };
  nodes.trimmed = relay "_trimmed.test" {
    listen = {
      submission = [ ];
      imap = [ ];
      http = [ ];
    };
  };
  nodes.scanner = {
    environment.systemPackages = [ pkgs.nmap ];
  };

  testScript = ''
    import re


    def open_ports(host):
        """TCP ports of `host` that answer from the scanner (SYN scan, all ports)."""
        report = scanner.succeed(f"nmap -Pn -sS -p- -T4 --max-retries 1 --min-rate 2000 -oG - {host}")
        return sorted(int(port) for port in re.findall(r"(\d+)/open/tcp", report))


    full = [25, 80, 143, 443, 465, 587, 993]
    reduced = [25, 443, 465, 993]

    start_all()
    relay.wait_for_unit("madmail.service")
    for port in full:
        relay.wait_for_open_port(port)
    trimmed.wait_for_unit("madmail.service")
    for port in reduced:
        trimmed.wait_for_open_port(port)
    scanner.wait_for_unit("multi-user.target")

    relay.succeed("systemd-run --unit=probe-listener ${pkgs.python3}/bin/python3 -m http.server 8080")
    relay.wait_for_open_port(8080)

    with subtest("exactly the enabled services answer on a full relay"):
        found = open_ports("relay")
        assert found == full, f"open on relay: {found}"

    with subtest("turned-off services leave their ports closed"):
        found = open_ports("trimmed")
        assert found == reduced, f"open on trimmed: {found}"
        for port in (80, 143, 587):
            trimmed.fail(f"timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'")
  '';
}
