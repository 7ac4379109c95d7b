#!/usr/bin/env bash
# The Debian package: build it with cargo-deb, then (with `check`, as root, on a Debian machine)
# install it, start the service, check /readyz, stop it and purge the package.
#
#   scripts/deb.sh build     → target/debian/nano-banana_VERSION-1_ARCH.deb
#   scripts/deb.sh check     → build, then install / start / /readyz / stop / purge
#
# Starting: with systemd as PID 1, `systemctl start nano-banana` (the package enables and starts
# the unit itself). In a container without systemd (CI's machine), the unit is checked with
# `systemd-analyze verify` and its ExecStart is run the way the unit runs it — as the unit's
# user, in its working directory, with its environment file — which is all of the unit but the
# sandbox; the script says which of the two it did.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "deb.sh: $*" >&2; }

CARGO_DEB_VERSION=3.8.0

build() {
    if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        say "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
        cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
    fi
    cargo deb --locked
}

package_file() {
    local version arch
    version=$(cargo metadata --no-deps --format-version 1 |
        python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "nano-banana"))')
    arch=$(dpkg --print-architecture)
    echo "target/debian/nano-banana_${version}-1_${arch}.deb"
}

wait_ready() {
    local url=$1 deadline=$((SECONDS + 30))
    until curl -fsS "$url" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            say "ERROR: $url did not answer 200 within 30 s"
            return 1
        fi
        sleep 0.2
    done
}

check() {
    [[ $(id -u) -eq 0 ]] || { say "ERROR: check installs a package: run it as root"; exit 1; }
    local deb
    deb=$(package_file)
    [[ -f $deb ]] || { say "ERROR: $deb was not built"; exit 1; }
    command -v curl >/dev/null || apt-get install -y -q curl >/dev/null

    say "installing $deb"
    dpkg --purge nano-banana >/dev/null 2>&1 || true
    dpkg -i "$deb"
    getent passwd nano-banana >/dev/null || { say "ERROR: no nano-banana user"; exit 1; }
    [[ $(stat -c '%U %a' /var/lib/nano-banana) == "nano-banana 750" ]] ||
        { say "ERROR: /var/lib/nano-banana: $(stat -c '%U %a' /var/lib/nano-banana)"; exit 1; }
    [[ $(stat -c '%G %a' /etc/nano-banana/environment) == "nano-banana 640" ]] ||
        { say "ERROR: /etc/nano-banana/environment: $(stat -c '%G %a' /etc/nano-banana/environment)"; exit 1; }
    local unit
    unit=$(dpkg -L nano-banana | grep -E '/systemd/system/nano-banana\.service$')
    say "verifying $unit"
    # Offline: checks the unit's syntax, its directives and that ExecStart exists.
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit"
    local exposure
    exposure=$(grep -cE '^(NoNewPrivileges|ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|RestrictAddressFamilies|SystemCallFilter|CapabilityBoundingSet)=' "$unit")
    ((exposure >= 8)) || { say "ERROR: the unit lost its sandbox directives"; exit 1; }

    local port=18080
    local ready=http://127.0.0.1:$port/readyz
    if [[ -d /run/systemd/system ]]; then
        say "systemd is running: starting the unit"
        mkdir -p /etc/systemd/system/nano-banana.service.d
        printf '[Service]\nEnvironment=NANO_BANANA_LISTEN=127.0.0.1:%s\n' "$port" \
            >/etc/systemd/system/nano-banana.service.d/port.conf
        systemctl daemon-reload
        systemctl restart nano-banana
        wait_ready "$ready"
        curl -fsS "$ready"; echo
        systemctl stop nano-banana
        rm -rf /etc/systemd/system/nano-banana.service.d
    else
        say "no systemd here (PID 1 is $(ps -p 1 -o comm= || echo unknown)): running the unit's ExecStart as its user"
        local exec_start
        exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
        (
            cd /var/lib/nano-banana
            set -a
            # shellcheck disable=SC1091
            . /etc/nano-banana/environment
            set +a
            export NANO_BANANA_LISTEN=127.0.0.1:$port
            # shellcheck disable=SC2086
            exec setpriv --reuid=nano-banana --regid=nano-banana --init-groups --no-new-privs \
                $exec_start
        ) &
        local pid=$!
        wait_ready "$ready" || { kill "$pid" 2>/dev/null; exit 1; }
        curl -fsS "$ready"; echo
        [[ -f /var/lib/nano-banana/nano-banana.db ]] ||
            { say "ERROR: no database in /var/lib/nano-banana"; kill "$pid"; exit 1; }
        [[ $(stat -c %U /var/lib/nano-banana/nano-banana.db) == nano-banana ]] ||
            { say "ERROR: the database is not the service user's"; kill "$pid"; exit 1; }
        kill -TERM "$pid"
        wait "$pid" || { say "ERROR: the server did not stop cleanly on SIGTERM"; exit 1; }
    fi

    say "purging"
    dpkg --purge nano-banana
    local left=()
    for path in /usr/bin/nano-banana /etc/nano-banana /var/lib/nano-banana "$unit"; do
        [[ -e $path ]] && left+=("$path")
    done
    ((${#left[@]} == 0)) || { say "ERROR: left after purge: ${left[*]}"; exit 1; }
    ! getent passwd nano-banana >/dev/null || { say "ERROR: the user is left after purge"; exit 1; }
    say "ok: the package installed, answered $ready, stopped and purged cleanly"
}

case ${1:-} in
    build) build ;;
    check) build && check ;;
    *) echo "usage: scripts/deb.sh build|check" >&2; exit 2 ;;
esac
