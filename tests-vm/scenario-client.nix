# The client side of the VM tests that run the Delta Chat scenarios of
# ./scenarios: a NixOS module for the client node (the Delta Chat core and
# its Python client from nixpkgs, pytest), and helpers for the test script.
# The scenarios read everything about the relays from environment variables
# (tests-vm/README.md, "Parameters").
{ pkgs }:

let
  inherit (pkgs) lib;

  python = pkgs.python3.withPackages (ps: [
    ps.deltachat-rpc-client
    ps.pytest
    ps.pytest-timeout
  ]);
in
{
  node = {
    environment.systemPackages = [
      python
      pkgs.deltachat-rpc-server
    ];
    # Each scenario runs its own deltachat-rpc-server.
    virtualisation.memorySize = 2048;
  };

  # Shell command: a writable copy of the scenarios in /tmp/scenarios.
  copyScenarios = "rm -rf /tmp/scenarios && cp -r ${./scenarios} /tmp/scenarios && chmod -R u+w /tmp/scenarios";

  # Shell command: pytest with `args` in the copy, `env` (an attribute set)
  # in its environment.
  pytest =
    env: args:
    let
      assignments = lib.mapAttrsToList (name: value: "${name}=${lib.escapeShellArg value}") (
        env // { PYTHONDONTWRITEBYTECODE = "1"; }
      );
    in
    "cd /tmp/scenarios && ${lib.concatStringsSep " " assignments} python -m pytest -v ${args}";

  # The `MADMAIL_*` (or `prefix`) variables of a relay on the standard ports.
  relayEnv = prefix: domain: host: {
    "${prefix}_DOMAIN" = domain;
    "${prefix}_HOST" = host;
    "${prefix}_SUBMISSION_PORT" = "587";
    "${prefix}_IMAP_PORT" = "143";
  };
}
