# The admin web UI (`admin-leptos/`) as the relay embeds it: `index.html`,
# the glue `admin.js` and the module `admin_bg.wasm`, built the way
# `cargo xtask admin-ui` builds them (xtask/src/admin_ui.rs).
#
# `rustPlatform` must carry the wasm32-unknown-unknown standard library.
{ lib
, rustPlatform
, buildWasmBindgenCli
, fetchCrate
, binaryen
, src
, version
}:
let
  # Must equal the `wasm-bindgen = "=…"` pin of admin-leptos/Cargo.toml: the
  # glue and the module are only compatible at the same version. nixpkgs
  # 25.11 has no wasm-bindgen-cli of this version, so it is built here, with
  # the Cargo.lock the crate ships (copied unchanged next to this file).
  wasm-bindgen-cli = buildWasmBindgenCli {
    src = fetchCrate {
      pname = "wasm-bindgen-cli";
      version = "0.2.130";
      hash = "sha256-9Og1O/6/VC3sc5hBjoIWBErmLW2UHGMsTQO+6+m/dng=";
    };
    cargoDeps = rustPlatform.importCargoLock {
      lockFile = ./wasm-bindgen-cli-0.2.130.Cargo.lock;
    };
  };

  # The wasm features rustc emits for this target by default, which
  # wasm-opt must accept and may use.
  wasmFeatures = [
    "--enable-bulk-memory"
    "--enable-mutable-globals"
    "--enable-nontrapping-float-to-int"
    "--enable-sign-ext"
    "--enable-reference-types"
    "--enable-multivalue"
  ];
in
rustPlatform.buildRustPackage {
  pname = "madmail-admin-ui";
  inherit version src;
  # Reads every crate's checksum from the UI's own Cargo.lock.
  cargoLock.lockFile = src + "/Cargo.lock";

  # binaryen older than 120 breaks the module; nixpkgs 25.11 has a newer one.
  nativeBuildInputs = [
    wasm-bindgen-cli
    binaryen
  ];
  # No cargo-auditable section: the module stays as the xtask build makes it.
  auditable = false;

  # Not the host build of the cargo hooks: the wasm target, then
  # wasm-bindgen and wasm-opt.
  buildPhase = ''
    runHook preBuild
    # A RUSTFLAGS in the environment, even an empty one, makes cargo ignore
    # the wasm32 rustflags of .cargo/config.toml (`--cfg erase_components`).
    unset RUSTFLAGS
    cargo build --release --locked --offline -j "$NIX_BUILD_CORES" \
      --target wasm32-unknown-unknown --target-dir target
    wasm-bindgen target/wasm32-unknown-unknown/release/madmail-admin-ui.wasm \
      --out-dir dist --target web --no-typescript --out-name admin
    wasm-opt -Oz ${lib.escapeShellArgs wasmFeatures} \
      --strip-debug --strip-producers dist/admin_bg.wasm -o dist/admin_bg.wasm
    runHook postBuild
  '';
  # The UI's tests are host builds, not part of the wasm module.
  doCheck = false;
  installPhase = ''
    runHook preInstall
    install -Dm644 -t $out index.html dist/admin.js dist/admin_bg.wasm
    runHook postInstall
  '';

  meta = {
    description = "The madmail admin web UI, as embedded in the relay";
    license = lib.licenses.gpl3Plus;
    platforms = lib.platforms.linux;
  };
}
