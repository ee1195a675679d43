#!/usr/bin/env bash
# The test command (`./run test`): the whole suite through ape's pytest plugin.
# Extra arguments go to pytest (e.g. ./run test tests/contracts -k claim).
set -euo pipefail
cd "$FEDORACLE_ROOT"
exec ape test "$@"
