#!/usr/bin/env bash
# Installs everything fedoracle needs, inside the project folder. Idempotent: each step is skipped
# when its inputs have not changed since it last succeeded (a second run takes about a second).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/toolchain/env.sh"
STAMPS="$ROOT/.cache/stamps"
mkdir -p "$STAMPS" "$ROOT/.cache/bin" "$SOLCX_BINARY_PATH" "$APE_DATA_FOLDER"
say() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
# fresh STEP FILES...: true when the files changed since STEP last succeeded.
fresh() { local step=$1; shift; local sum; sum=$(cat "$@" 2>/dev/null | sha256sum | cut -c1-16)
          [ "$(cat "$STAMPS/$step" 2>/dev/null)" != "$sum" ] && echo "$sum" > "$STAMPS/$step.want"; }
done_() { mv "$STAMPS/$1.want" "$STAMPS/$1"; }

# 1. System packages (only where apt exists): the MQTT broker, Redis for the queue tests, Fashion-MNIST.
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v redis-server >/dev/null || need+=(redis-server)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "apt-get install ${need[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    say "sudo apt-get install ${need[*]}"
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    say "no apt-get: skipping ${need[*]} (the embedded MQTT broker is used; queue and Fashion-MNIST tests skip)"
  fi
fi

# 2. uv, pinned, installed into the project when the machine has none.
if ! command -v uv >/dev/null; then
  say "installing uv into .cache/bin"
  python3.11 -m pip install --quiet --disable-pip-version-check --target "$ROOT/.cache/uv-pkg" "uv==0.13.9" \
    || python3.11 -m pip install --quiet --disable-pip-version-check --target "$ROOT/.cache/uv-pkg" uv
  ln -sf "$ROOT/.cache/uv-pkg/bin/uv" "$ROOT/.cache/bin/uv"
fi

# 3. The Python environment from the committed lock file.
if fresh uv "$ROOT/uv.lock" "$ROOT/pyproject.toml" || [ ! -x "$ROOT/.venv/bin/python" ]; then
  say "uv sync (first run: ~1-3 min, ~3 GB)"
  (cd "$ROOT" && uv sync --frozen --quiet)
  [ -f "$STAMPS/uv.want" ] && done_ uv || true
fi

# 4. npm toolchain: solcjs, anvil, OpenZeppelin, solhint.
if fresh npm "$ROOT/toolchain/package-lock.json" || [ ! -d "$ROOT/toolchain/node_modules/solc" ] \
   || [ ! -x "$ROOT/toolchain/node_modules/.bin/solhint" ]; then
  say "npm ci in toolchain/ (solc, anvil, @openzeppelin/contracts, solhint)"
  (cd "$ROOT/toolchain" && npm ci --no-audit --no-fund --silent)
  [ -f "$STAMPS/npm.want" ] && done_ npm || true
fi

# 5. The solc stand-in where py-solc-x looks (absolute paths: py-solc-x may copy the file).
SOLC_VERSION=$(cd "$ROOT/toolchain" && node -p "require('solc').version().split('+')[0]")
SHIM="$SOLCX_BINARY_PATH/solc-v$SOLC_VERSION"
WANT="#!/bin/sh
exec node \"$ROOT/toolchain/solc-shim.js\" \"\$@\""
if [ "$(cat "$SHIM" 2>/dev/null)" != "$WANT" ]; then
  say "registering the solc $SOLC_VERSION stand-in at $SHIM"
  printf '%s\n' "$WANT" > "$SHIM" && chmod +x "$SHIM"
  ln -sf "$SHIM" "$ROOT/.cache/bin/solc"
fi

# 6. Compile the contracts (ape's build output is what the Python client loads).
if fresh contracts "$ROOT"/contracts/*.sol "$ROOT/ape-config.yaml" "$ROOT/toolchain/package-lock.json" \
   || [ ! -f "$ROOT/.build/__local__.json" ]; then
  say "ape compile"
  (cd "$ROOT" && "$ROOT/.venv/bin/ape" compile --force >/dev/null)
  [ -f "$STAMPS/contracts.want" ] && done_ contracts || true
fi
