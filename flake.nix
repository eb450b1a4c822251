{
  description = "madmail: a chatmail relay (the mail server behind Delta Chat)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # The workspace needs Rust 1.95 (Cargo.toml `rust-version`), newer than
    # the release branch's rustc; rust-overlay provides that exact toolchain.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    { self, nixpkgs, rust-overlay }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));
      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ rust-overlay.overlays.default ];
        };
      rustVersion = "1.95.0";
      version = (lib.importTOML ./Cargo.toml).workspace.package.version;

      # Only what cargo needs, so edits to docs or tests-vm do not rebuild.
      src = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [
          ./Cargo.toml
          ./Cargo.lock
          ./crates
          ./xtask
          # The Debian unit and example config, embedded by `madmail install`.
          ./dist/madmail.service
          ./dist/chatmail.toml.example
        ];
      };

      # The admin web UI: a cargo workspace of its own, built for wasm and
      # embedded into the server (so its edits rebuild the server too).
      uiSrc = lib.fileset.toSource {
        root = ./admin-leptos;
        fileset = lib.fileset.unions [
          ./admin-leptos/Cargo.toml
          ./admin-leptos/Cargo.lock
          # The wasm32 rustflags (`--cfg erase_components`).
          ./admin-leptos/.cargo/config.toml
          ./admin-leptos/src
          ./admin-leptos/index.html
        ];
      };

      # Builds for one package set: `pkgs` for native builds, a static
      # (musl) set for the static binaries. The toolchain always runs on the
      # build machine and carries the standard library of the target.
      build =
        pkgs:
        let
          # Built once, on the build machine, for every variant below: the
          # module is the same whatever the server's target.
          adminUi =
            let
              toolchain = pkgs.rust-bin.stable.${rustVersion}.default.override {
                targets = [ "wasm32-unknown-unknown" ];
              };
            in
            pkgs.callPackage ./nix/admin-ui.nix {
              rustPlatform = pkgs.makeRustPlatform {
                cargo = toolchain;
                rustc = toolchain;
              };
              src = uiSrc;
              inherit version;
            };
          toolchainFor =
            hostPkgs:
            pkgs.rust-bin.stable.${rustVersion}.default.override {
              targets = [ hostPkgs.stdenv.hostPlatform.rust.rustcTarget ];
            };
          madmailFor =
            hostPkgs:
            let
              toolchain = toolchainFor hostPkgs;
              rustPlatform = hostPkgs.makeRustPlatform {
                cargo = toolchain;
                rustc = toolchain;
              };
            in
            rustPlatform.buildRustPackage {
              pname = "madmail";
              inherit version src;
              # Reads every crate's checksum from Cargo.lock: no vendor hash.
              cargoLock.lockFile = ./Cargo.lock;
              cargoBuildFlags = [
                "--package"
                "chatmail"
              ];
              cargoTestFlags = [ "--workspace" ];
              # crates/http/build.rs embeds the admin web UI from here.
              env.MADMAIL_ADMIN_UI_DIR = "${adminUi}";
              # The test suite runs as its own check (`checks.tests`).
              doCheck = false;
              meta = {
                description = "Chatmail relay: the mail server behind the Delta Chat messenger";
                license = lib.licenses.gpl3Plus;
                mainProgram = "madmail";
                platforms = lib.platforms.linux;
              };
            };
          madmail = madmailFor pkgs;
          toolchain = toolchainFor pkgs;
        in
        {
          inherit madmail adminUi;
          static = madmailFor pkgs.pkgsStatic;
          staticAarch64 = madmailFor pkgs.pkgsCross.aarch64-multiplatform.pkgsStatic;

          clippy = madmail.overrideAttrs {
            pname = "madmail-clippy";
            buildPhase = "cargo clippy --workspace --all-targets --offline -- --deny warnings";
            installPhase = "touch $out";
          };

          fmt = pkgs.runCommand "madmail-fmt" { nativeBuildInputs = [ toolchain ]; } ''
            cd ${src}
            cargo fmt --all --check
            touch $out
          '';
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          b = build pkgs;
        in
        {
          default = b.madmail;
          madmail = b.madmail;
          admin-ui = b.adminUi;
          static = b.static;
        }
        // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          static-aarch64 = b.staticAarch64;
        }
      );

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${pkgs.writeShellScript "madmail-demo" ''
            exec ${lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default} demo "$@"
          ''}";
          meta.description = "A complete madmail relay on loopback for a quick trial";
        };
      });

      overlays.default = final: _prev: {
        madmail = self.packages.${final.stdenv.hostPlatform.system}.default;
      };

      nixosModules.default = {
        imports = [
          ./nixos
          (
            { lib, pkgs, ... }:
            {
              services.madmail.package =
                lib.mkDefault
                  self.packages.${pkgs.stdenv.hostPlatform.system}.default;
            }
          )
        ];
      };

      checks = forAllSystems (
        pkgs:
        let
          b = build pkgs;
          vmTest = file: import file {
            inherit pkgs;
            module = self.nixosModules.default;
          };

          # The module in a real NixOS evaluation, for its rendered unit.
          relay = nixpkgs.lib.nixosSystem {
            modules = [
              self.nixosModules.default
              {
                nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
                system.stateVersion = lib.trivial.release;
                services.madmail = {
                  enable = true;
                  domain = "chat.example.org";
                  stateVersion = 1;
                };
                security.acme = {
                  acceptTerms = true;
                  defaults.email = "admin@example.org";
                };
              }
            ];
          };

          nixFiles = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
          };
        in
        {
          inherit (b) clippy fmt;
          tests = b.madmail.overrideAttrs { doCheck = true; };
          module-eval =
            pkgs.runCommand "madmail-module-eval"
              {
                results = builtins.toJSON (import ./tests-vm/nix/eval.nix { libPath = nixpkgs + "/lib"; });
              }
              ''
                echo "$results" | ${lib.getExe pkgs.jq} -e 'all(.ok)' > /dev/null \
                  || { echo "$results" | ${lib.getExe pkgs.jq} '.[] | select(.ok | not)'; exit 1; }
                touch $out
              '';
          # The same checks as `cargo xtask nix-check`.
          nix-lint = pkgs.runCommand "madmail-nix-lint" { nativeBuildInputs = [ pkgs.nixpkgs-fmt pkgs.deadnix ]; } ''
            cd ${nixFiles}
            nixpkgs-fmt --check $(find . -name '*.nix')
            deadnix --fail .
            touch $out
          '';
          # systemd's "OK" ends at an exposure of 4.9 (the threshold is in tenths).
          unit-security = pkgs.runCommand "madmail-unit-security" { nativeBuildInputs = [ pkgs.systemd ]; } ''
            systemd-analyze security --offline=true --threshold=49 --no-pager \
              ${relay.config.systemd.units."madmail.service".unit}/madmail.service > $out
            grep 'Overall exposure level' $out
          '';
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          # NixOS VM tests (need KVM); see the comment at the top of each file.
          vm-basic = vmTest ./tests-vm/basic.nix;
          vm-federation = vmTest ./tests-vm/federation.nix;
          vm-acme = vmTest ./tests-vm/acme.nix;
          vm-firewall = vmTest ./tests-vm/firewall.nix;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.rust-bin.stable.${rustVersion}.default.override {
              extensions = [
                "rust-src"
                "clippy"
                "rustfmt"
              ];
            })
            pkgs.nixpkgs-fmt
            pkgs.deadnix
            pkgs.python3
            pkgs.deltachat-rpc-server
          ];
        };
      });

      # The same formatter `cargo xtask nix-check` enforces.
      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
