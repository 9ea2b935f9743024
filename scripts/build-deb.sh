#!/usr/bin/env bash
# Builds the household agent's Debian package, peerwatt-agent_<version>-<rev>_<arch>.deb (`make deb`).
#
# Usage: scripts/build-deb.sh [OUT]   (default build/deb: the .deb, and its staged-root, wheel-src and wheel)
#
# A staged tree built with dpkg-deb, no debhelper: the project's own wheel and the agent's
# dependencies only (the base install, no extras) go into a virtual environment made with Debian's
# python3 at its final place, /opt/peerwatt/.venv (scripts' shebangs and the venv's files are
# rewritten from the staging folder to that path; .pyc files are compiled with that path), next to
# the systemd unit (packaging/peerwatt-agent.service), /etc/peerwatt/agent.toml.example (a conffile)
# and /var/lib/peerwatt, with the maintainer scripts in packaging/deb/. It needs dpkg-deb, Debian's
# python3 and, for pip, this project's .venv (PIP_PYTHON) and PyPI (or pip's cache).
#
# Environment: PIP_PYTHON (a Python with pip >= 22.3; default .venv/bin/python), DEB_PYTHON (the
# interpreter the package runs on; default /usr/bin/python3), DEB_REVISION (default 1),
# DEB_MAINTAINER (default: the project's maintainers, the address its commits carry).
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/build/deb}" && cd "${1:-$ROOT/build/deb}" && pwd)"
PIP_PYTHON="${PIP_PYTHON:-$ROOT/.venv/bin/python}"
DEB_PYTHON="$(readlink -f "${DEB_PYTHON:-/usr/bin/python3}")"
DEB_REVISION="${DEB_REVISION:-1}"
PREFIX=/opt/peerwatt/.venv
PACKAGE=peerwatt-agent

fail() { echo "build-deb: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (Debian's dpkg package)"
[ -x "$PIP_PYTHON" ] || fail "$PIP_PYTHON not found: run 'make deb' (it makes .venv) or set PIP_PYTHON"
[ -x "$DEB_PYTHON" ] || fail "$DEB_PYTHON not found: install Debian's python3 (scripts/ensure-system-deps.sh)"
dpkg -S "$DEB_PYTHON" >/dev/null 2>&1 ||
    fail "$DEB_PYTHON belongs to no Debian package: the package must run on Debian's python3"
case "$OUT" in /|"$ROOT"|/usr|/usr/*|/etc|/etc/*) fail "OUT must be a build folder of its own, not $OUT" ;; esac
PY_VERSION="$("$DEB_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VERSION="$("$DEB_PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml")-$DEB_REVISION"
ARCH="$(dpkg --print-architecture)"
MAINTAINER="${DEB_MAINTAINER:-peerwatt maintainers <maintainers@users.noreply.r-seed-28f608f3.example>}"

STAGE="$OUT/staged-root"
VENV="$STAGE$PREFIX"
DEB="$OUT/${PACKAGE}_${VERSION}_${ARCH}.deb"
rm -rf "$STAGE" "$OUT/wheel-src" "$OUT/wheel" "$OUT"/"${PACKAGE}"_*.deb
mkdir -p "$STAGE" "$OUT/wheel"

# The wheel is built from a clean copy of pyproject.toml, the readme and the packages it names:
# setuptools never empties the tree's build/lib, so a wheel built in place would carry modules
# deleted or renamed since the last build.
echo "build-deb: the peerwatt wheel"
"$DEB_PYTHON" - "$ROOT" "$OUT/wheel-src" <<'EOF'
import fnmatch, pathlib, shutil, sys, tomllib
root, src = map(pathlib.Path, sys.argv[1:])
project = tomllib.loads((root / "pyproject.toml").read_text())
include = project["tool"]["setuptools"]["packages"]["find"]["include"]
src.mkdir()
for name in ("pyproject.toml", project["project"]["readme"]):
    shutil.copy2(root / name, src / name)
for top in sorted(root.iterdir()):
    if (top / "__init__.py").is_file() and any(fnmatch.fnmatch(top.name, p) for p in include):
        shutil.copytree(top, src / top.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
EOF
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$PIP_PYTHON" -m pip wheel -q --no-deps -w "$OUT/wheel" "$OUT/wheel-src"
WHEEL="$(ls "$OUT"/wheel/peerwatt-*.whl)"

echo "build-deb: $PREFIX with Python $PY_VERSION and the agent's dependencies"
"$DEB_PYTHON" -m venv --without-pip "$VENV"
"$PIP_PYTHON" -m pip --python "$VENV/bin/python" install -q --no-compile --no-warn-script-location "$WHEEL"
SITE="$VENV/lib/python$PY_VERSION/site-packages"
# pip's record of where the wheel came from names this build's folder: the package has no use for it.
for dist in "$SITE"/peerwatt-*.dist-info; do
    rm -f "$dist/direct_url.json"
    sed -i '/direct_url\.json/d' "$dist/RECORD"
done
# The staging folder becomes /opt/peerwatt/.venv: shebangs, activate scripts, pyvenv.cfg.
grep -rlIF "$STAGE" "$VENV" | "$DEB_PYTHON" -c '
import sys
stage = sys.argv[1].encode()
for name in sys.stdin.read().splitlines():
    with open(name, "rb") as f:
        data = f.read()
    with open(name, "wb") as f:
        f.write(data.replace(stage, b""))
' "$STAGE"
# (a dependency's own SyntaxWarnings, e.g. dlms-cosem's `is not` with a literal, are not ours to show)
PYTHONWARNINGS=ignore::SyntaxWarning "$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$VENV/lib" >/dev/null
if grep -rlF "$STAGE" "$STAGE" >/dev/null; then
    fail "files still name the staging folder: $(grep -rlF "$STAGE" "$STAGE" | head -n 5 | tr '\n' ' ')"
fi

# Compiled wheels (cryptography, orjson, ...) are manylinux: they need the glibc their tag names.
LIBC_DEPENDS="$("$DEB_PYTHON" - "$SITE" <<'EOF'
import pathlib, re, sys
needed = (0, 0)
for wheel in pathlib.Path(sys.argv[1]).glob("*.dist-info/WHEEL"):
    found = []
    for tag in re.findall(r"^Tag: (\S+)", wheel.read_text(), re.M):
        platform = tag.split("-")[-1]
        if m := re.match(r"manylinux_(\d+)_(\d+)_", platform):
            found.append((int(m[1]), int(m[2])))
        elif platform.startswith("manylinux2014_"):
            found.append((2, 17))
        elif platform.startswith("manylinux2010_"):
            found.append((2, 12))
        elif platform.startswith("manylinux1_"):
            found.append((2, 5))
    if found:
        needed = max(needed, min(found))
print("libc6 (>= %d.%d)" % needed if needed > (0, 0) else "libc6")
EOF
)"

echo "build-deb: unit, example config, docs"
install -D -m 0644 "$ROOT/packaging/peerwatt-agent.service" "$STAGE/lib/systemd/system/peerwatt-agent.service"
install -D -m 0644 "$ROOT/packaging/agent.toml.example" "$STAGE/etc/peerwatt/agent.toml.example"
install -d -m 0750 "$STAGE/var/lib/peerwatt"
install -D -m 0644 "$ROOT/docs/agent.md" "$STAGE/usr/share/doc/$PACKAGE/agent.md"
install -D -m 0644 "$ROOT/packaging/deb/copyright" "$STAGE/usr/share/doc/$PACKAGE/copyright"
install -d -m 0755 "$STAGE/usr/bin"
ln -s "$PREFIX/bin/peerwatt" "$STAGE/usr/bin/peerwatt"

INSTALLED_SIZE="$(du -sk --apparent-size "$STAGE" | cut -f1)"
install -d -m 0755 "$STAGE/DEBIAN"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" -e "s|@PYTHON_PACKAGE@|python$PY_VERSION|" \
    -e "s|@LIBC_DEPENDS@|$LIBC_DEPENDS|" "$ROOT/packaging/deb/control.in" >"$STAGE/DEBIAN/control"
echo /etc/peerwatt/agent.toml.example >"$STAGE/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$ROOT/packaging/deb/$script" "$STAGE/DEBIAN/$script"
done
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"

# xz level 1: a fifth of the default level's time on 2 cores for a .deb one eighth larger (8 vs 7 MB)
dpkg-deb --root-owner-group -Zxz -z1 --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: $DEB ($(du -h "$DEB" | cut -f1))"
