# The NixOS module for madmail: `services.madmail`.
#
# Import this directory (or the flake's `nixosModules.default`, which also
# sets the package) and enable the relay:
#
#   services.madmail = {
#     enable = true;
#     domain = "chat.example.org";
#     stateVersion = 1;
#     openFirewall = true;
#   };
{
  imports = [
    ./madmail.nix
    ./tls.nix
    ./dns.nix
  ];
}
