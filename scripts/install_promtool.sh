#!/bin/sh
# promtool (`make test` checks and unit-tests deploy/prometheus/alerts.yml with it) from Debian's
# prometheus package, when it is missing. The package's daemon is not left running: service starts are
# refused while it installs (policy-rc.d, Debian's own switch for that), and where systemd runs its
# unit is disabled and stopped. Without apt-get or root it only says so; the test then fails in CI
# (CI=true) and is skipped elsewhere.
command -v promtool >/dev/null 2>&1 && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi
if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; }; then
    echo "promtool is missing and cannot be installed here (needs apt-get and root): install Debian's prometheus package" >&2
    exit 0
fi
POLICY=/usr/sbin/policy-rc.d
ADDED=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod 755 "$POLICY" && ADDED=1
fi
install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1
}
install || { $SUDO apt-get update -q >/dev/null 2>&1 && install; }
[ -z "$ADDED" ] || $SUDO rm -f "$POLICY"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null 2>&1 || echo "installing Debian's prometheus package did not give promtool" >&2
exit 0
