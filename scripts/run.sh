#!/usr/bin/env bash
# The main job: install what is missing, then `rocqcot run` (extra arguments are passed on).
. "$(dirname "$0")/setup.sh"
rocqcot run "$@"
