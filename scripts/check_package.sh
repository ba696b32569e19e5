#!/usr/bin/env bash
# Build the sdist and the wheel as a user would, check their metadata, and
# smoke-test the wheel from a fresh virtual environment outside the checkout,
# so that a module or data file missing from the package fails here and not
# on a user's machine.
#
#   scripts/check_package.sh [PYTHON]
#
# PYTHON is one that has `build` and `twine` (both are in the `test` extra:
# .venv/bin/python after the README's install); without it, a throw-away
# environment with the two is made first. The environment the wheel is
# tested in gets only the wheel and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

work=$(mktemp -d "${TMPDIR:-/tmp}/prefork-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
pip_q=(-q --disable-pip-version-check)

if [ $# -ge 1 ]; then
    python=$1
else
    echo "+ an environment with build and twine"
    python3 -m venv "$work/tools"
    "$work/tools/bin/pip" install "${pip_q[@]}" build twine
    python=$work/tools/bin/python
fi

# Build from a copy of what git would check out (tracked and new files, as
# they are now): a local build/ or *.egg-info/ left by an editable install
# would otherwise fill in files the package itself forgets.
echo "+ build the sdist and the wheel"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$work/src"
"$python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"

echo "+ twine check"
"$python" -m twine check --strict "$work"/dist/*

echo "+ every file of the package is in both"
"$python" - "$work/src" "$work/dist" <<'EOF'
import glob, os, sys, tarfile, zipfile

src, dist = sys.argv[1:]
wanted = {os.path.relpath(os.path.join(d, f), src)
          for d, _, files in os.walk(os.path.join(src, "prefork"))
          for f in files if f.endswith((".py", "py.typed"))}
wheel = zipfile.ZipFile(glob.glob(os.path.join(dist, "*.whl"))[0]).namelist()
with tarfile.open(glob.glob(os.path.join(dist, "*.tar.gz"))[0]) as tar:
    sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
missing = {"wheel": sorted(wanted - set(wheel)), "sdist": sorted(wanted - sdist)}
entry_points = next(n for n in wheel if n.endswith(".dist-info/entry_points.txt"))
if any(missing.values()):
    sys.exit(f"missing from the package: {missing}")
print(f"{len(wanted)} files in the wheel and the sdist; {entry_points}")
EOF

echo "+ install the wheel into a fresh virtual environment"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install "${pip_q[@]}" "$work"/dist/prefork-*.whl pytest

echo "+ smoke test, run from outside the checkout"
mkdir "$work/run"
cp "$root/scripts/smoke_installed.py" "$work/run/"
(cd "$work/run" && "$work/venv/bin/python" -I smoke_installed.py "$root")
