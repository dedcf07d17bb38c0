# Sourced by scripts/run and scripts/test: creates .venv on first use and installs the project
# (editable, with the test extra) whenever pyproject.toml, setup.py or a source changed since
# the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp="$venv/.dcgateway-installed"
# The hot path is compiled in place (setup.py, dcgateway/hotpath.py): a change to its sources
# rebuilds it too, so that the code that runs is the code in the tree.
stale() {
  [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$root/setup.py" -nt "$stamp" ] ||
    [ -n "$(find "$root/dcgateway/fix" "$root/dcgateway/fanout" "$root/dcgateway/journal" \
      "$root/dcgateway/routing.py" "$root/dcgateway/hotpath.py" -name '*.py' -newer "$stamp" -print -quit)" ]
}
if stale; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
