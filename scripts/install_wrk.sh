#!/bin/sh
# wrk (the HTTP load generator for `make bench`) from the distribution's packages, when it is missing.
# Without apt-get or root, the bench falls back to its own Python load generator and says so.
command -v wrk >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"; }
    if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
        $SUDO apt-get install -y -q wrk >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q wrk >/dev/null 2>&1; }
    fi
fi
command -v wrk >/dev/null 2>&1 || echo "wrk is not available: GET /v1/models is measured with the Python load generator" >&2
exit 0
