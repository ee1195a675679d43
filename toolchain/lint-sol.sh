#!/usr/bin/env bash
# Lints the Solidity sources with solhint (pinned in toolchain/package.json; rules in .solhint.json,
# the reason for each rule turned off or relaxed in docs/contract.md, "Static analysis").
# Exits non-zero on any finding: the recommended rules report mostly warnings, and contracts/ is
# kept at zero, so a warning is a regression too. Extra arguments go to solhint (e.g. -f json).
#
#   toolchain/lint-sol.sh            (or ./run toolchain/lint-sol.sh, which installs solhint first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOLHINT="$ROOT/toolchain/node_modules/.bin/solhint"
if [ ! -x "$SOLHINT" ]; then
  echo "lint-sol: solhint is not installed; run ./run once (it runs npm ci in toolchain/)" >&2
  exit 2
fi
cd "$ROOT"
# --disc: no online update check (the build machines are offline); --noPoster: no advertisement.
exec "$SOLHINT" --config .solhint.json --max-warnings 0 --disc --noPoster "$@" 'contracts/**/*.sol'
