#!/usr/bin/env bash
# Installs the system programs the test suite drives (Debian's mosquitto and chromium) when missing,
# and what `make deb` and tests/packaging need: Debian's python3 (the package's interpreter),
# adduser (its postinst) and init-system-helpers (deb-systemd-helper); dpkg-deb comes with dpkg;
# e2fsprogs's chattr (tests of files this user may not write, which root can only meet as immutable).
# As root it uses apt-get; otherwise it prints one line naming what to install and fails.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v chattr >/dev/null 2>&1 || missing+=(e2fsprogs)  # chattr +i: a file even root may not write
[ -x /usr/bin/python3 ] && dpkg -S /usr/bin/python3 >/dev/null 2>&1 || missing+=(python3)
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || missing+=(adduser)
[ -x /usr/bin/deb-systemd-helper ] || missing+=(init-system-helpers)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages for the tests: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a system-wide mosquitto on port 1883; the tests start their own on free ports.
    (systemctl disable --now mosquitto >/dev/null 2>&1 || true)
else
    echo "error: the tests need these Debian packages: ${missing[*]} — run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
