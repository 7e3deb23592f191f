#!/usr/bin/env bash
# A second Docker engine beside the host's own, for BuildKit features that Debian bookworm's
# dockerd 20.10 (BuildKit v0.8) lacks: registry cache export (--cache-to type=registry) and
# zstd-compressed pushes (compression=zstd with the buildx docker driver). Both need dockerd >= 24
# running on the containerd image store.
#
# It takes Debian trixie's docker.io (dockerd 26.1) and containerd (1.7) packages, checks them
# against the signed release file (InRelease -> Packages.xz -> .deb, by sha256), and EXTRACTS them
# into /opt/stackbuild-engine26 (never dpkg -i: the host's docker.io and containerd packages and
# their running daemons are left alone). It reuses the host's runc (/usr/sbin/runc) and takes
# docker-init from trixie's tini package (its tini-static needs no particular glibc).
#
# Then it starts, each with its own sockets, root and state directories:
#   * a containerd 1.7 on unix:///run/stackbuild-engine26/containerd.sock,
#   * a dockerd 26 on unix:///run/stackbuild-engine26/docker.sock, with the containerd image store,
#     the local registry on 127.0.0.1:5000 (see .ci/harness.sh) as its docker.io mirror and
#     127.0.0.1:5000 / localhost:5000 as insecure registries, and no bridge or iptables rules
#     (builds use host networking), so it does not touch the other engine's networking.
# The local registry itself must already be up (.ci/harness.sh starts it).
#
# Idempotent: every step checks first and reuses what is already there. Both daemons keep running
# after this script exits.
#
# Usage:
#   .ci/engine26.sh          bring the engine up; use it with
#                            DOCKER_HOST=unix:///run/stackbuild-engine26/docker.sock
#   .ci/engine26.sh --stop   stop the dockerd and containerd that this script started
#
# Environment overrides:
#   STACKBUILD_DEBIAN_MIRROR  Debian mirror for the .debs (default: taken from the host's apt sources)
#   STACKBUILD_ENGINE26_WAIT  seconds to wait for each daemon to answer (default 60)
#   DOCKER                    docker CLI to use (default: `docker` on PATH)
#
# Output: one "<component>: <status>" line per component on stdout; progress goes to stderr.
# Exit status is 0 only if everything is up.

set -euo pipefail

readonly NAME=stackbuild-engine26
readonly SUITE=trixie
readonly ARCH=amd64
# Debian package -> the upstream series this engine is meant to be (a trixie point release may
# bump the Debian revision; a different series is refused rather than silently taken).
readonly -A SERIES=([docker.io]=26.1. [containerd]=1.7. [tini]=0.19.)
readonly DEBS=(docker.io containerd tini)

readonly PREFIX=/opt/${NAME}
readonly CACHE_DIR=/var/cache/${NAME}
readonly RUN_DIR=/run/${NAME}
readonly LIB_DIR=/var/lib/${NAME}
readonly ETC_DIR=/etc/${NAME}
readonly LOG_DIR=/var/log/${NAME}
readonly CONTAINERD_SOCK=${RUN_DIR}/containerd.sock
readonly DOCKER_SOCK=${RUN_DIR}/docker.sock
readonly DOCKER_HOST_URL=unix://${DOCKER_SOCK}
readonly CONTAINERD_PID=${RUN_DIR}/containerd.pid
readonly DOCKERD_PID=${RUN_DIR}/dockerd.pid
readonly CONTAINERD_LOG=${LOG_DIR}/containerd.log
readonly DOCKERD_LOG=${LOG_DIR}/dockerd.log
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly REGISTRY_ADDR=127.0.0.1:5000
readonly REGISTRY_URL="http://${REGISTRY_ADDR}"
readonly WAIT_S=${STACKBUILD_ENGINE26_WAIT:-60}
readonly DOCKER=${DOCKER:-docker}
readonly RUNC=/usr/sbin/runc
# The daemons find their helpers (containerd-shim-runc-v2, docker-proxy, docker-init) here
# before the host's older ones; runc comes from the host.
readonly DAEMON_PATH=${PREFIX}/usr/bin:${PREFIX}/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "engine26: $*" >&2; }
status() { printf '%s: %s\n' "$1" "$2"; }
die() { echo "engine26: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Packages: download, verify, extract
# ---------------------------------------------------------------------------------------------

# First Debian mirror URI of the host's apt sources (deb822 first, then one-line format).
debian_mirror() {
    if [[ -n "${STACKBUILD_DEBIAN_MIRROR:-}" ]]; then
        echo "${STACKBUILD_DEBIAN_MIRROR%/}"
        return
    fi
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$m" && -r /etc/apt/sources.list ]]; then
        m=$(awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    m=${m:-http://deb.debian.org/debian}
    echo "${m%/}"
}

fetch() {  # url dest
    curl -fsS --retry 3 -m 600 -o "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    mv "$2.part" "$2"
}

# The marker records "package version filename sha256" for each extracted .deb.
installed_marker() { echo "${PREFIX}/.${NAME}-debs"; }

binaries_run() {
    "${PREFIX}/usr/sbin/dockerd" --version >/dev/null 2>&1 \
        && "${PREFIX}/usr/bin/containerd" --version >/dev/null 2>&1 \
        && "${PREFIX}/usr/bin/containerd-shim-runc-v2" -v >/dev/null 2>&1 \
        && "${PREFIX}/usr/bin/docker-init" --version >/dev/null 2>&1
}

installed_summary() {
    awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$(installed_marker)"
}

ensure_binaries() {
    if [[ -f "$(installed_marker)" ]] && binaries_run; then
        status engine26-debs "already extracted in ${PREFIX} ($(installed_summary))"
        return
    fi
    command -v gpgv >/dev/null || die "gpgv not found (apt-get install gpgv)"
    [[ -r "$KEYRING" ]] || die "no ${KEYRING} (apt-get install debian-archive-keyring)"
    mkdir -p "$CACHE_DIR"

    local mirror dist
    mirror=$(debian_mirror)
    dist="${mirror}/dists/${SUITE}"
    log "checking ${dist}/InRelease against ${KEYRING}"
    fetch "${dist}/InRelease" "${CACHE_DIR}/InRelease" || die "cannot fetch ${dist}/InRelease"
    gpgv --keyring "$KEYRING" --output "${CACHE_DIR}/Release" "${CACHE_DIR}/InRelease" 2>"${CACHE_DIR}/gpgv.log" \
        || { cat "${CACHE_DIR}/gpgv.log" >&2; die "bad or unknown signature on ${dist}/InRelease"; }

    local index=main/binary-${ARCH}/Packages.xz want got
    want=$(awk -v f="$index" '/^SHA256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == f {print $1; exit}' \
        "${CACHE_DIR}/Release")
    [[ -n "$want" ]] || die "${dist}/Release lists no SHA256 for ${index}"
    got=$(sha256sum "${CACHE_DIR}/Packages.xz" 2>/dev/null | cut -d' ' -f1 || true)
    if [[ "$got" != "$want" ]]; then
        log "fetching ${dist}/${index}"
        fetch "${dist}/${index}" "${CACHE_DIR}/Packages.xz" || die "cannot fetch ${dist}/${index}"
        got=$(sha256sum "${CACHE_DIR}/Packages.xz" | cut -d' ' -f1)
        [[ "$got" == "$want" ]] || die "${index}: sha256 ${got}, the signed Release says ${want}"
    fi

    xz -dc "${CACHE_DIR}/Packages.xz" >"${CACHE_DIR}/Packages"
    local -a records=()
    local pkg version filename sha deb
    for pkg in "${DEBS[@]}"; do
        read -r version filename sha < <(awk -v p="$pkg" '
            /^$/ { if (n == p) { print v, f, s; exit } n = v = f = s = "" }
            /^Package: / { n = $2 } /^Version: / { v = $2 } /^Filename: / { f = $2 } /^SHA256: / { s = $2 }' "${CACHE_DIR}/Packages") \
            || true
        [[ -n "${sha:-}" ]] || die "${SUITE} ${index} has no package ${pkg}"
        [[ "$version" == "${SERIES[$pkg]}"* ]] \
            || die "${SUITE} has ${pkg} ${version}, not the ${SERIES[$pkg]}* series this engine expects"
        deb="${CACHE_DIR}/${filename##*/}"
        got=$(sha256sum "$deb" 2>/dev/null | cut -d' ' -f1 || true)
        if [[ "$got" != "$sha" ]]; then
            log "fetching ${pkg} ${version} (${mirror}/${filename})"
            fetch "${mirror}/${filename}" "$deb" || die "cannot fetch ${mirror}/${filename}"
            got=$(sha256sum "$deb" | cut -d' ' -f1)
            [[ "$got" == "$sha" ]] || { rm -f "$deb"; die "${deb##*/}: sha256 ${got}, the index says ${sha}"; }
        fi
        records+=("${pkg} ${version} ${filename##*/} ${sha}")
    done

    # Extract beside the old tree and swap, so daemons still running from it keep their files.
    local new="${PREFIX}.new" old="${PREFIX}.old"
    rm -rf "$new" "$old"
    mkdir -p "$new"
    for pkg in "${DEBS[@]}"; do
        dpkg-deb -x "${CACHE_DIR}/$(printf '%s\n' "${records[@]}" | awk -v p="$pkg" '$1 == p {print $3}')" "$new"
    done
    printf '%s\n' "${records[@]}" >"${new}/.${NAME}-debs"
    [[ -e "$PREFIX" ]] && mv "$PREFIX" "$old"
    mv "$new" "$PREFIX"
    rm -rf "$old"
    # The binaries must run on this host's glibc (trixie's docker.io and containerd need >= 2.34).
    binaries_run || die "the extracted binaries do not run here (ldd ${PREFIX}/usr/sbin/dockerd)"
    status engine26-debs "extracted in ${PREFIX} ($(installed_summary); sha256 checked against ${SUITE}'s signed index)"
}

# ---------------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------------

# ctr waits 10s for a socket that is not there unless told otherwise.
ctr_() { "${PREFIX}/usr/bin/ctr" --address "$CONTAINERD_SOCK" --connect-timeout 2s --timeout 5s "$@"; }

containerd_answers() {
    [[ -S "$CONTAINERD_SOCK" ]] && ctr_ version >/dev/null 2>&1
}

containerd_version() {
    ctr_ version 2>/dev/null \
        | awk '/^Server:/ {s = 1} s && /Version:/ {print $2; exit}'
}

write_containerd_config() {
    mkdir -p "$ETC_DIR"
    cat >"${ETC_DIR}/containerd.toml" <<EOF
# Written by .ci/engine26.sh: the containerd of the stackbuild-engine26 dockerd only.
version = 2
root = "${LIB_DIR}/containerd"
state = "${RUN_DIR}/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "${LIB_DIR}/containerd-opt"
EOF
}

# Start a daemon in its own session, detached from us; record its pid only once it answers or at
# timeout (so --stop can still end it), never for one that died at once.
start_daemon() {  # component pidfile logfile answers-function -- command...
    local comp=$1 pidfile=$2 logfile=$3 answers=$4
    shift 5
    mkdir -p "$(dirname "$logfile")"
    echo "=== $(date -Is) started by .ci/engine26.sh ===" >>"$logfile"
    # 9>&-: don't hand our lock to a process that outlives us.
    PATH="$DAEMON_PATH" nohup setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    local pid=$!
    local deadline=$((SECONDS + WAIT_S))
    until "$answers"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$logfile" >&2 || true
            die "${comp} (pid ${pid}) exited during startup (log: ${logfile})"
        fi
        if ((SECONDS >= deadline)); then
            echo "$pid" >"$pidfile"
            tail -n 40 "$logfile" >&2 || true
            die "${comp} did not answer within ${WAIT_S}s (pid ${pid}, log: ${logfile})"
        fi
        sleep 0.2
    done
    echo "$pid" >"$pidfile"
    STARTED_PID=$pid
}

ensure_containerd() {
    if containerd_answers; then
        status containerd "already running (${CONTAINERD_SOCK}, server $(containerd_version))"
        return
    fi
    [[ -x "$RUNC" ]] || die "no ${RUNC} (apt-get install runc)"
    mkdir -p "$RUN_DIR" "$LIB_DIR"
    write_containerd_config
    start_daemon containerd "$CONTAINERD_PID" "$CONTAINERD_LOG" containerd_answers -- \
        "${PREFIX}/usr/bin/containerd" --config "${ETC_DIR}/containerd.toml"
    status containerd "started (pid ${STARTED_PID}, ${CONTAINERD_SOCK}, server $(containerd_version), log ${CONTAINERD_LOG})"
}

# ---------------------------------------------------------------------------------------------
# dockerd
# ---------------------------------------------------------------------------------------------

docker_answers() {
    DOCKER_HOST=$DOCKER_HOST_URL "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

docker_info() {  # go-template
    DOCKER_HOST=$DOCKER_HOST_URL "$DOCKER" info --format "$1" 2>/dev/null
}

write_daemon_json() {
    mkdir -p "$ETC_DIR"
    # bridge none + no iptables/forwarding changes: the host's other dockerd owns the networking
    # (builds here use --network host). cgroup-parent keeps its containers apart from the other
    # engine's in the cgroup tree.
    cat >"${ETC_DIR}/daemon.json" <<EOF
{
  "hosts": ["${DOCKER_HOST_URL}"],
  "data-root": "${LIB_DIR}/docker",
  "exec-root": "${RUN_DIR}/docker",
  "pidfile": "${RUN_DIR}/docker-daemon.pid",
  "containerd": "${CONTAINERD_SOCK}",
  "features": {"containerd-snapshotter": true},
  "registry-mirrors": ["${REGISTRY_URL}"],
  "insecure-registries": ["${REGISTRY_ADDR}", "localhost:5000"],
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "cgroup-parent": "/${NAME}",
  "init-path": "${PREFIX}/usr/bin/docker-init"
}
EOF
}

ensure_dockerd() {
    if docker_answers; then
        status dockerd "already running (server $(docker_info '{{.ServerVersion}}'), ${DOCKER_HOST_URL})"
        return
    fi
    mkdir -p "$RUN_DIR" "$LIB_DIR"
    write_daemon_json
    # --config-file: never the host engine's /etc/docker/daemon.json.
    start_daemon dockerd "$DOCKERD_PID" "$DOCKERD_LOG" docker_answers -- \
        "${PREFIX}/usr/sbin/dockerd" --config-file "${ETC_DIR}/daemon.json"
    status dockerd "started (pid ${STARTED_PID}, server $(docker_info '{{.ServerVersion}}'), log ${DOCKERD_LOG})"
}

# The image store must be containerd's (the whole point), and the mirror must be set.
check_engine() {
    local store mirrors
    store=$(docker_info '{{range .DriverStatus}}{{if eq (index . 0) "driver-type"}}{{index . 1}}{{end}}{{end}}')
    [[ "$store" == io.containerd.snapshotter.v1 ]] \
        || die "the engine does not use the containerd image store (driver-type: ${store:-?}); see ${DOCKERD_LOG}"
    mirrors=$(docker_info '{{json .RegistryConfig.Mirrors}}')
    [[ "$mirrors" == *"${REGISTRY_ADDR}"* ]] || die "the engine has no registry mirror ${REGISTRY_URL} (mirrors: ${mirrors:-?})"
    local code
    code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "${REGISTRY_URL}/v2/" 2>/dev/null || true)
    [[ "$code" == 200 ]] || log "WARNING: no registry answers on ${REGISTRY_URL} (HTTP ${code}); run .ci/harness.sh"
    status engine26 "running at ${DOCKER_HOST_URL} (storage $(docker_info '{{.Driver}}'), containerd image store, mirror ${REGISTRY_URL})"
}

# ---------------------------------------------------------------------------------------------
# --stop
# ---------------------------------------------------------------------------------------------

stop_one() {  # component pidfile expected-command-substring timeout
    local comp=$1 pidfile=$2 expect=$3 wait_s=$4 pid
    if [[ ! -f "$pidfile" ]]; then
        status "$comp" "not started by engine26 (no ${pidfile})"
        return
    fi
    pid=$(<"$pidfile")
    local cmd=""
    [[ -r "/proc/${pid}/cmdline" ]] && cmd=$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null || true)
    # Guard against a recycled pid (and never touch the host engine's daemons): only signal the
    # process if it is still the one we started from ${PREFIX}.
    if [[ "$cmd" != *"$expect"* ]]; then
        rm -f "$pidfile"
        status "$comp" "not running (stale pid file removed)"
        return
    fi
    kill -TERM "$pid"
    local i
    for ((i = 0; i < wait_s; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -0 "$pid" 2>/dev/null && die "${comp} (pid ${pid}) still running ${wait_s}s after SIGTERM"
    rm -f "$pidfile"
    status "$comp" "stopped (pid ${pid})"
}

do_stop() {
    # dockerd first: it stops its containers through containerd.
    stop_one dockerd "$DOCKERD_PID" "${PREFIX}/usr/sbin/dockerd" 60
    stop_one containerd "$CONTAINERD_PID" "${PREFIX}/usr/bin/containerd" 30
}

# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

main() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    mkdir -p "$RUN_DIR"
    exec 9>"${RUN_DIR}/lock"
    flock -w 900 9 || die "another engine26 run holds ${RUN_DIR}/lock"

    case "${1:-}" in
        --stop) do_stop; return ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return ;;
        "") ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac

    ensure_binaries
    ensure_containerd
    ensure_dockerd
    check_engine
}

main "$@"
