# Typed stand-ins for the NixOS options and packages the madmail module
# touches, so the module can be evaluated with nixpkgs' `lib` alone. Types
# follow NixOS where the module relies on them (systemd unit options
# concatenate lists, ACME certificates are submodules with defaults); the
# packages are fake derivations: only their store paths are used.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  fakeDrv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  } // extra;

  # Like NixOS' systemd unit option: scalars must agree, lists concatenate.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if lib.any (def: lib.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  service = types.submodule {
    options = {
      description = mkOption { type = types.str; default = ""; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      environment = mkOption { type = types.attrsOf types.str; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  acmeCert = types.submodule (
    { name, ... }:
    {
      options = {
        directory = mkOption { type = types.str; readOnly = true; default = "/var/lib/acme/${name}"; };
        extraDomainNames = mkOption { type = types.listOf types.str; default = [ ]; };
        reloadServices = mkOption { type = types.listOf types.str; default = [ ]; };
        group = mkOption { type = types.str; default = "acme"; };
        listenHTTP = mkOption { type = types.nullOr types.str; default = null; };
        webroot = mkOption { type = types.nullOr types.str; default = null; };
      };
    }
  );

  formats.toml = {}: {
    type = (types.attrsOf types.anything) // { description = "TOML value"; };
    generate = name: value: fakeDrv name { inherit value; };
  };
in
{
  options = {
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; };
    users.users = mkOption { type = types.attrsOf (types.attrsOf types.unspecified); default = { }; };
    users.groups = mkOption { type = types.attrsOf (types.attrsOf types.unspecified); default = { }; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.etc = mkOption { type = types.attrsOf (types.attrsOf types.unspecified); default = { }; };
    networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
    networking.firewall.allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
    networking.firewall.allowedUDPPortRanges = mkOption { type = types.listOf (types.attrsOf types.port); default = [ ]; };
    security.acme.certs = mkOption { type = types.attrsOf acmeCert; default = { }; };
    systemd.services = mkOption { type = types.attrsOf service; default = { }; };
    system.build = mkOption { type = types.lazyAttrsOf types.unspecified; default = { }; };
  };

  config._module.args.pkgs = {
    inherit formats;
    stdenv.hostPlatform.system = "x86_64-linux";
    madmail = fakeDrv "madmail" { meta.mainProgram = "madmail"; };
    runCommand = name: _env: script: fakeDrv name { inherit script; };
    writeText = name: text: fakeDrv name { inherit text; };
    writeShellScript = name: text: fakeDrv name { inherit text; };
  };
}
