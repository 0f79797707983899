#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis (127.0.0.1:6379)
# are running for the tests: start each one that is down, install it from Debian's packages
# when it is missing and we are root. Exits non-zero if a service is still unreachable.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
    return 1
}

apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "services: $* missing and not root: install it yourself" >&2
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

status=0

if ! port_open 5432; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql || status=1
    fi
    if ls /etc/postgresql/*/main >/dev/null 2>&1; then
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        conf="/etc/postgresql/$version/main"
        # Trust auth on loopback, as the tests expect.
        if ! grep -q "quantumtrade-tests" "$conf/pg_hba.conf" 2>/dev/null; then
            sed -i '1i host all all 127.0.0.1/32 trust # quantumtrade-tests\nhost all all ::1/128 trust # quantumtrade-tests\nlocal all all trust # quantumtrade-tests' "$conf/pg_hba.conf" 2>/dev/null || true
        fi
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
        wait_port 5432 || { echo "services: PostgreSQL did not start" >&2; status=1; }
    fi
fi
if port_open 5432 && command -v psql >/dev/null 2>&1; then
    if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1; then
        psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
    fi
fi

if ! port_open 6379; then
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || status=1
    if command -v redis-server >/dev/null 2>&1; then
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
        wait_port 6379 || { echo "services: Redis did not start" >&2; status=1; }
    fi
fi

port_open 5432 && echo "services: PostgreSQL up on 127.0.0.1:5432" >&2
port_open 6379 && echo "services: Redis up on 127.0.0.1:6379" >&2
exit $status
