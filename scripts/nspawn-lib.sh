# Shared by scripts/test-package and scripts/test-package-pair (sourced, not run):
# a cached debootstrap minbase root (mirror from this machine's apt sources) and containers
# booted from copies of it with a real systemd (systemd-nspawn).

need=()
for p in debootstrap systemd-container iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"

mirror() {
    local m=""
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
        m=$(awk '/^URIs:/ {u=$2} /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print u; exit } }' /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "$m"
}

cache="$root_dir/.build-nspawn"
# What the root holds beyond minbase (debootstrap does not resolve virtual packages: polkitd
# needs logind, which libpam-systemd provides; Cockpit for the License Manager stage, whose
# dconf-service needs a session bus, which dbus-user-session provides); the cache
# is kept per list, so a changed list builds anew.
include=systemd,systemd-sysv,dbus,dbus-user-session,libsqlite3-0,libcurl4,libpam-systemd,polkitd,cockpit-ws,cockpit-system,cockpit-bridge,libjs-chart.js
base="$cache/bookworm-$(echo "$include" | sha256sum | cut -c1-12)"
if [ ! -f "$base/.complete" ]; then
    url=$(mirror)
    [ -n "$url" ] || { echo "no bookworm mirror in this machine's apt sources" >&2; exit 1; }
    rm -rf "$cache"/bookworm*  # (roots of other lists too: they are no longer used)
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$include" bookworm "$base" "$url" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    touch "$base/.complete"
fi

# new_root DIR: a fresh copy of the cached root in DIR/root.
new_root() { cp -a "$base" "$1/root"; }

# boot NAME DIR [nspawn options...]: boots DIR/root, sets leader_NAME to the container's
# PID 1 once systemd is up, and remembers the nspawn process for stop_containers.
nspawn_pids=()
boot() {
    local name=$1 dir=$2
    shift 2
    systemd-nspawn --register=no --keep-unit --console=passive -b -D "$dir/root" --machine="$name" "$@" >"$dir/console.log" 2>&1 &
    local pid=$!
    nspawn_pids+=("$pid")
    # nspawn's first child is an intermediate that forks the container's init and exits: a
    # leader taken from it vanishes (nsenter: /proc/PID/ns/user gone). Wait for the child
    # that has become systemd.
    local l="" c
    for _ in $(seq 200); do
        for c in $(pgrep -P "$pid" || true); do
            [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { l=$c; break 2; }
        done
        sleep 0.1
    done
    [ -n "$l" ] || { cat "$dir/console.log" >&2; echo "container $name did not start" >&2; exit 1; }
    printf -v "leader_$name" '%s' "$l"
    for _ in $(seq 100); do
        state=$(nsenter -t "$l" -a -- systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) break ;; esac
        sleep 0.2
    done
}

stop_containers() {
    for p in "${nspawn_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${nspawn_pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

passed=0
failed=0
# check WHAT COMMAND...: runs it, counts and reports.
check() {
    local what=$1; shift
    if "$@" >"$work/check.out" 2>&1; then
        passed=$((passed + 1)); echo "ok: $what"
    else
        failed=$((failed + 1)); echo "FAILED: $what"; sed 's/^/    /' "$work/check.out" | tail -n 15
    fi
}
