#!/usr/bin/env bash
# The static checks, run by `./run test` before the suite (alone: `./run toolchain/check.sh`).
#
#   1. ruff check          lint: pyflakes, pycodestyle, bugbear, pydocstyle (Google), isort, pyupgrade
#   2. mypy                types of the shared core and the roles (pyproject.toml [tool.mypy])
#   3. toolchain/lint-sol.sh   solhint on contracts/, when that script exists
#   4. ruff format --check     formatting; last, so the other findings show even while it fails
#
# Every step runs; the script fails at the end if any step did. Settings: pyproject.toml.
set -uo pipefail
ROOT="${FEDORACLE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$ROOT"
failed=()
step() {
  local name=$1; shift
  printf '\033[1;34m[check]\033[0m %s\n' "$*" >&2
  "$@" || failed+=("$name")
}

step "ruff check" ruff check .
step "mypy" mypy
if [ -f toolchain/lint-sol.sh ]; then
  step "solidity lint" bash toolchain/lint-sol.sh
else
  printf '\033[1;34m[check]\033[0m %s\n' "no toolchain/lint-sol.sh: Solidity lint skipped" >&2
fi
step "ruff format" ruff format --check .

if [ ${#failed[@]} -gt 0 ]; then
  printf '\033[1;31m[check]\033[0m failed: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
  exit 1
fi
printf '\033[1;32m[check]\033[0m all checks passed\n' >&2
