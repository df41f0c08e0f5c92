#!/usr/bin/env bash
# The tests: install what is missing, lint, then the default (fast) suite against real Rocq
# and a real embedded PostgreSQL. Slow full-library tests: scripts/test.sh -m slow
. "$(dirname "$0")/setup.sh"
ruff check .
ruff format --check .
python -m pytest "$@"
