# Sourced by ./run and .ci/run: keeps every tool's data inside the project, never in ~.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export FEDORACLE_ROOT="$ROOT"
export UV_PYTHON_DOWNLOADS=never          # uv cannot fetch interpreters here; use python3.11
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"      # trust the system certificate store (proxies, custom CAs)
export UV_PYTHON="${UV_PYTHON:-python3.11}"
export UV_PROJECT_ENVIRONMENT="$ROOT/.venv"
export APE_DATA_FOLDER="$ROOT/.cache/ape"  # ape's data (accounts, packages) stays in the project
export SOLCX_BINARY_PATH="$ROOT/.cache/solcx"  # where py-solc-x / ape-solidity look for compilers
export PATH="$ROOT/.cache/bin:$ROOT/toolchain/node_modules/@foundry-rs/anvil-linux-amd64/bin:$ROOT/.venv/bin:$PATH"
