#!/usr/bin/env bash
# Bring up what stackbuild's integration tests need on a machine without Docker Hub:
#   * a Docker engine (Debian's docker.io),
#   * the buildx CLI plugin (Debian trixie's docker-buildx 0.13.1, checked against its sha256), which
#     the buildkit engine drives; bookworm's docker.io has BuildKit but no buildx,
#   * a no-auth registry on 127.0.0.1:5000 (Debian's docker-registry) that the engine uses as its
#     docker.io mirror, and which also serves push/pull tests of localhost:5000/... images (what
#     earlier test runs pushed there is dropped at each start, its blobs garbage-collected),
#   * stand-ins for debian:<suite>-slim, built from Debian's own packages with mmdebstrap and
#     served through that mirror, so `FROM debian:<suite>-slim` works unchanged.
#
# Idempotent: every step checks first and reuses what is already there. The engine and the registry
# keep running after this script exits (the test suite runs afterwards).
#
# Usage:
#   .ci/harness.sh [SUITE...]     bring everything up (suites default: $STACKBUILD_BASES or
#                                 "bullseye bookworm"), e.g. `.ci/harness.sh bullseye bookworm trixie`
#   .ci/harness.sh --rebuild [SUITE...]
#                                 as above, but build the stand-in images afresh even if present
#   .ci/harness.sh --stop         stop the dockerd and registry that this script started
#
# Environment overrides:
#   STACKBUILD_BASES          suites to provide when none are given as arguments
#   STACKBUILD_DEBIAN_MIRROR  Debian mirror for mmdebstrap and the buildx .deb (default: taken from the
#                             host's apt sources)
#   STACKBUILD_BUILDX_PLUGIN_DIR
#                             where buildx is installed (default /usr/libexec/docker/cli-plugins)
#   STACKBUILD_REGISTRY_DIR   registry storage (default /var/lib/stackbuild-registry)
#   STACKBUILD_DOCKERD_LOG    dockerd log file (default /var/log/dockerd.log)
#   STACKBUILD_DOCKERD_WAIT   seconds to wait for dockerd to answer (default 60)
#   DOCKER                    docker CLI to use (default: `docker` on PATH)
#
# Output: one "<component>: <status>" line per component on stdout; progress goes to stderr.
# Exit status is 0 only if everything is up.

set -euo pipefail

# The registry address is fixed: the engine's --registry-mirror and the tests' localhost:5000/...
# image names depend on it.
readonly REGISTRY_ADDR=127.0.0.1:5000
readonly REGISTRY_URL="http://${REGISTRY_ADDR}"
readonly REGISTRY_PUSH_HOST=localhost:5000
readonly STATE_DIR=/run/stackbuild-harness
readonly REGISTRY_DIR=${STACKBUILD_REGISTRY_DIR:-/var/lib/stackbuild-registry}
readonly REGISTRY_LOG=/var/log/stackbuild-registry.log
readonly DOCKERD_LOG=${STACKBUILD_DOCKERD_LOG:-/var/log/dockerd.log}
readonly DOCKERD_WAIT=${STACKBUILD_DOCKERD_WAIT:-60}
readonly DOCKER=${DOCKER:-docker}
readonly PACKAGES=(docker.io docker-registry mmdebstrap)
# Same PATH as the official Debian images carry in their config.
readonly IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# buildx: the one .deb this script installs, by its pool path and sha256 (plain variables, not
# readonly, so the unit tests can point them at a fixture). The host's mirror is tried first, then
# Debian's own and a snapshot of the archive, for when a point release has replaced it in the pool.
readonly BUILDX_MIN_VERSION=0.13.1
BUILDX_DEB_PATH=pool/main/d/docker-buildx/docker-buildx_0.13.1+ds1-3_amd64.deb
BUILDX_DEB_SHA256=fcf8c48204d1603c8f209451d7827eb91bf30759578baf7704e9e1a87e5f1d7f
BUILDX_FALLBACK_MIRRORS=(http://deb.debian.org/debian http://snapshot.debian.org/archive/debian/20250520T000000Z)
readonly BUILDX_PLUGIN_DIR=${STACKBUILD_BUILDX_PLUGIN_DIR:-/usr/libexec/docker/cli-plugins}
REBUILD=""

log() { echo "harness: $*" >&2; }
status() { printf '%s: %s\n' "$1" "$2"; }
die() { echo "harness: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

pkg_has_candidate() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2; exit}')
    [[ -n "$cand" && "$cand" != "(none)" ]]
}

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        status packages "already installed (${PACKAGES[*]})"
        return
    fi

    # Installing docker.io / docker-registry would otherwise try to start their services through
    # invoke-rc.d: dockerd with its default bridge, and the registry with Debian's htpasswd-auth
    # config on :5000. This script starts both itself, with its own settings.
    local own_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi

    local need_update="" updated=""
    for p in "${missing[@]}"; do
        pkg_has_candidate "$p" || need_update=1
    done
    if [[ -n "$need_update" ]]; then
        log "apt-get update (no install candidate for some of: ${missing[*]})"
        apt-get update -q >&2
        updated=1
    fi

    local apt_install=(apt-get install -y -q --no-install-recommends "${missing[@]}")
    log "installing ${missing[*]}"
    local rc=0
    DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" >&2 || rc=$?
    if ((rc != 0)) && [[ -z "$updated" ]]; then
        # Package lists present but stale (e.g. a .deb version no longer on the mirror).
        log "install failed; retrying after apt-get update"
        apt-get update -q >&2
        rc=0
        DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" >&2 || rc=$?
    fi
    [[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
    status packages "installed (${missing[*]})"
}

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# HTTP status of GET /v2/ ("000" when nothing answers).
registry_http_code() {
    curl -s -o /dev/null -m 3 -w '%{http_code}' "${REGISTRY_URL}/v2/" 2>/dev/null || true
}

ensure_registry() {
    local code
    code=$(registry_http_code)
    if [[ "$code" == 200 ]]; then
        status registry "already running (${REGISTRY_URL})"
        return
    fi
    # 401 is typically Debian's packaged registry with its default htpasswd config.
    [[ "$code" == 000 ]] || die "something answers on ${REGISTRY_URL}/v2/ with HTTP $code (need a no-auth registry)"

    mkdir -p "$STATE_DIR" "$REGISTRY_DIR"
    local cfg="$STATE_DIR/registry.yml"
    # Debian's /etc/docker/registry/config.yml enables htpasswd auth, so write our own config.
    cat >"$cfg" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DIR}
  delete:
    enabled: true
http:
  addr: ${REGISTRY_ADDR}
EOF
    echo "=== $(date -Is) started by stackbuild harness ===" >>"$REGISTRY_LOG"
    # setsid + nohup: own session, immune to the caller's hangup, keeps running after we exit.
    # 9>&-: don't hand the harness lock to a process that outlives us.
    nohup setsid docker-registry serve "$cfg" </dev/null >>"$REGISTRY_LOG" 2>&1 9>&- &
    local pid=$!

    local i
    for ((i = 0; i < 30; i++)); do
        [[ "$(registry_http_code)" == 200 ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    # As for dockerd: record the pid only while the process lives.
    kill -0 "$pid" 2>/dev/null && echo "$pid" >"$STATE_DIR/registry.pid"
    if [[ "$(registry_http_code)" != 200 ]]; then
        tail -n 30 "$REGISTRY_LOG" >&2 || true
        die "registry did not come up on ${REGISTRY_URL} (log: $REGISTRY_LOG)"
    fi
    status registry "started (pid $pid, ${REGISTRY_URL}, storage ${REGISTRY_DIR}, log ${REGISTRY_LOG})"
}

# What test runs pushed (stackbuild-test*, stackbuild-bench*) is dropped and its blobs freed: the
# registry's storage outlives a run on a machine that keeps its state, and a full image pushed
# each run would fill the disk. The stand-in bases (library/) stay. Garbage collection while the
# registry serves is safe here: nothing pushes while the harness runs.
prune_registry() {
    local repos="$REGISTRY_DIR/docker/registry/v2/repositories" dropped=0 r
    for r in "$repos"/stackbuild-test* "$repos"/stackbuild-bench*; do
        [[ -d "$r" ]] || continue
        rm -rf -- "$r"
        dropped=$((dropped + 1))
    done
    if ((dropped)); then
        local cfg
        cfg=$(mktemp)
        printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$REGISTRY_DIR" >"$cfg"
        if ! docker-registry garbage-collect "$cfg" >/dev/null 2>&1; then
            log "registry garbage-collect failed: the dropped repositories' blobs stay in $REGISTRY_DIR"
        fi
        rm -f "$cfg"
    fi
    status registry-storage "${dropped} test repositories dropped"
}

# ---------------------------------------------------------------------------------------------
# Docker engine
# ---------------------------------------------------------------------------------------------

docker_answers() {
    "$DOCKER" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

ensure_dockerd() {
    if docker_answers; then
        # An engine we didn't start may lack our mirror; pulls of debian:* would then go to
        # Docker Hub. Say so rather than silently reconfigure someone else's daemon.
        local mirrors
        mirrors=$("$DOCKER" info --format '{{json .RegistryConfig.Mirrors}}' 2>/dev/null || true)
        if [[ "$mirrors" != *"${REGISTRY_ADDR}"* ]]; then
            log "WARNING: the running engine has no registry mirror ${REGISTRY_URL} (mirrors: ${mirrors:-none});"
            log "         debian:<suite>-slim pulls will not go to the local registry"
        fi
        status dockerd "already running (server $("$DOCKER" info --format '{{.ServerVersion}}'))"
        return
    fi

    command -v dockerd >/dev/null || die "dockerd not found (is docker.io installed?)"
    mkdir -p "$STATE_DIR" "$(dirname "$DOCKERD_LOG")"
    echo "=== $(date -Is) started by stackbuild harness ===" >>"$DOCKERD_LOG"
    # --bridge=none: the default 172.17.x bridge is unwanted here (and was seen to vanish under a
    # running build); builds use host networking for RUN steps, test containers get no network.
    # localhost:5000 / 127.0.0.1:5000 need no insecure-registries entry: dockerd treats
    # 127.0.0.0/8 as insecure by default (checked below).
    nohup setsid dockerd \
        --bridge=none --iptables=false --ip6tables=false \
        --registry-mirror="${REGISTRY_URL}" \
        </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    local pid=$!
    # The pid file is written only while this dockerd is alive (after it answers, or at timeout so
    # --stop can still end it): one that exits at once (e.g. another dockerd holds
    # /var/run/docker.pid) must not overwrite the record of the one we did start.
    local deadline=$((SECONDS + DOCKERD_WAIT))
    until docker_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "dockerd (pid $pid) exited during startup (log: $DOCKERD_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            echo "$pid" >"$STATE_DIR/dockerd.pid"
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${DOCKERD_WAIT}s (pid $pid, log: $DOCKERD_LOG)"
        fi
        sleep 1
    done
    echo "$pid" >"$STATE_DIR/dockerd.pid"
    status dockerd "started (pid $pid, server $("$DOCKER" info --format '{{.ServerVersion}}'), log ${DOCKERD_LOG})"
}

check_insecure_loopback() {
    local cidrs
    cidrs=$("$DOCKER" info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null || true)
    if [[ "$cidrs" != *'127.0.0.0/8'* ]]; then
        die "engine does not treat 127.0.0.0/8 as an insecure registry (InsecureRegistryCIDRs: ${cidrs:-?}); push to ${REGISTRY_PUSH_HOST} would need TLS"
    fi
}

# ---------------------------------------------------------------------------------------------
# buildx CLI plugin
# ---------------------------------------------------------------------------------------------

# The version `docker buildx version` reports, without a leading v or Debian's +ds1/-3 suffixes
# ("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", upstream: "... v0.17.1 8c2d2e4");
# empty when no buildx answers. Always returns 0 (it is called inside $(...) under set -e).
buildx_version() {
    local out
    out=$("$DOCKER" buildx version 2>/dev/null) || return 0
    out=$(awk '{print $2; exit}' <<<"$out")
    out=${out#v}
    out=${out%%[+-]*}
    if [[ "$out" =~ ^[0-9]+(\.[0-9]+)*$ ]]; then
        echo "$out"
    fi
    return 0
}

version_at_least() {  # have want
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}

# The current builder, for the status line: "<name>: <driver> driver, BuildKit <version>".
# The docker driver (the engine's own BuildKit) cannot export a registry cache; that needs a
# docker-container builder or the containerd image store.
buildx_builder() {
    local out
    out=$("$DOCKER" buildx inspect 2>/dev/null) || { echo "builder not inspected (is the engine up?)"; return 0; }
    awk -F': *' '
        $1 == "Name" && !name { name = $2 }
        $1 == "Driver" { driver = $2 }
        $1 == "BuildKit version" && !bk { bk = $2 }
        END { printf "builder %s: %s driver, BuildKit %s\n", name, driver, (bk ? bk : "?") }' <<<"$out"
}

# Download the pinned .deb into $1 from the first source that serves it with the right sha256;
# prints the URL it came from.
fetch_buildx_deb() {
    local dest=$1 mirror url got
    local mirrors=("$(debian_mirror)")
    for mirror in "${BUILDX_FALLBACK_MIRRORS[@]}"; do
        [[ "${mirror%/}" == "${mirrors[0]%/}" ]] || mirrors+=("$mirror")
    done
    for mirror in "${mirrors[@]}"; do
        url="${mirror%/}/${BUILDX_DEB_PATH}"
        log "downloading ${url}"
        if ! curl -fsSL -m 600 -o "$dest" "$url" >&2; then
            log "could not download ${url}"
            continue
        fi
        got=$(sha256sum "$dest" | awk '{print $1}')
        if [[ "$got" == "$BUILDX_DEB_SHA256" ]]; then
            echo "$url"
            return 0
        fi
        log "sha256 mismatch for ${url}: got ${got}, want ${BUILDX_DEB_SHA256}; not using it"
    done
    rm -f "$dest"
    return 1
}

ensure_buildx() {
    local have
    have=$(buildx_version)
    if [[ -n "$have" ]] && version_at_least "$have" "$BUILDX_MIN_VERSION"; then
        status buildx "already installed (${have}); $(buildx_builder)"
        return
    fi
    local arch
    arch=$(dpkg --print-architecture)
    [[ "$arch" == amd64 ]] \
        || die "buildx: only the amd64 docker-buildx .deb is pinned here (this host is ${arch}); install buildx >= ${BUILDX_MIN_VERSION} as a docker CLI plugin yourself"
    command -v dpkg-deb >/dev/null || die "buildx: dpkg-deb not found (needed to unpack the docker-buildx .deb)"

    # Removed on every way out, die included (this script sets no other EXIT trap).
    BUILDX_TMP=$(mktemp -d)
    trap 'rm -rf "$BUILDX_TMP"' EXIT
    local tmp=$BUILDX_TMP t0=$SECONDS url
    url=$(fetch_buildx_deb "$tmp/docker-buildx.deb") \
        || die "buildx: no source served ${BUILDX_DEB_PATH##*/} with sha256 ${BUILDX_DEB_SHA256} (tried the host's mirror $(debian_mirror) and ${BUILDX_FALLBACK_MIRRORS[*]}; set STACKBUILD_DEBIAN_MIRROR to a mirror that has it)"
    dpkg-deb -x "$tmp/docker-buildx.deb" "$tmp/root" || die "buildx: dpkg-deb -x failed on ${url}"
    local bin="$tmp/root/usr/libexec/docker/cli-plugins/docker-buildx"
    [[ -x "$bin" ]] || die "buildx: ${url} has no usr/libexec/docker/cli-plugins/docker-buildx"
    # It links libc only (Depends: libc6 >= 2.34): prove it runs here before it replaces anything.
    local runs
    runs=$("$bin" version 2>&1) || die "buildx: the unpacked docker-buildx does not run on this host: ${runs}"

    # Copy beside the target and rename over it, so a concurrent `docker buildx` never sees half a file.
    mkdir -p "$BUILDX_PLUGIN_DIR"
    local dest="$BUILDX_PLUGIN_DIR/docker-buildx"
    install -m 0755 "$bin" "$dest.harness-tmp"
    mv -f "$dest.harness-tmp" "$dest"
    rm -rf "$BUILDX_TMP"
    trap - EXIT

    local now
    now=$(buildx_version)
    if [[ -z "$now" ]] || ! version_at_least "$now" "$BUILDX_MIN_VERSION"; then
        # The CLI looks in the user's plugin dir first, then these, and takes the first it finds.
        local d others=()
        for d in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins \
            /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
            [[ -e "$d/docker-buildx" ]] || continue
            [[ "$d/docker-buildx" -ef "$dest" ]] && continue
            others+=("$d/docker-buildx")
        done
        die "buildx: installed ${dest}, but \`${DOCKER} buildx version\` reports '${now:-nothing}'; other docker-buildx plugins the CLI may find first: ${others[*]:-none found}; remove the one it uses"
    fi
    local how="installed"
    [[ -n "$have" ]] && how="upgraded from ${have}"
    status buildx "${how} (${now}, ${dest}, from ${url}, sha256 verified, $((SECONDS - t0))s); $(buildx_builder)"
}

# ---------------------------------------------------------------------------------------------
# Stand-in base images
# ---------------------------------------------------------------------------------------------

# First Debian mirror URI of the host's apt sources (deb822 first, then one-line format).
debian_mirror() {
    if [[ -n "${STACKBUILD_DEBIAN_MIRROR:-}" ]]; then
        echo "$STACKBUILD_DEBIAN_MIRROR"
        return
    fi
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$m" && -r /etc/apt/sources.list ]]; then
        # "deb [opts] URI suite comp..." -> first field that looks like a URI.
        m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# Security archive URI: the host's own if it lists one, else the sibling of the main mirror.
debian_security_mirror() {
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/ && /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$m" ]]; then
        local main
        main=$(debian_mirror)
        m="${main%/}-security"
    fi
    echo "$m"
}

url_exists() {
    curl -fsS -o /dev/null -I -m 15 "$1" 2>/dev/null
}

registry_has_tag() {  # repo tag
    curl -fsS -o /dev/null -I -m 5 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "${REGISTRY_URL}/v2/$1/manifests/$2" 2>/dev/null
}

build_base() {  # suite -> imports ${REGISTRY_PUSH_HOST}/library/debian:<suite>-slim
    local suite=$1 tag="$1-slim"
    local mirror sec
    mirror=$(debian_mirror)
    sec=$(debian_security_mirror)
    url_exists "${mirror%/}/dists/${suite}/InRelease" \
        || die "mirror ${mirror} does not serve suite '${suite}' (no dists/${suite}/InRelease)"

    # Same sources as the official images (suite, -updates, -security), but only those the
    # mirror actually serves, so `apt-get update` inside the image does not fail.
    local sources=("deb ${mirror} ${suite} main")
    url_exists "${mirror%/}/dists/${suite}-updates/InRelease" && sources+=("deb ${mirror} ${suite}-updates main")
    url_exists "${sec%/}/dists/${suite}-security/InRelease" && sources+=("deb ${sec} ${suite}-security main")
    log "building debian:${tag} with mmdebstrap from: ${sources[*]}"

    # maybe-merged-usr hook: where the suite has usr-is-merged (bookworm and later), set up
    # merged-/usr the debootstrap way; without it apt satisfies init-system-helpers' dependency
    # with usrmerge, which drags in perl and ~50 MB the official images don't have. Suites
    # without it (bullseye) stay unmerged, as the official bullseye images are.
    # minbase = Essential + apt, like the official images. The dpkg path filters mimic the
    # "-slim" variant (no docs except copyright files, no man/info pages, no locales); mmdebstrap
    # writes them to /etc/dpkg/dpkg.cfg.d/ so they keep applying to packages installed later.
    mmdebstrap --variant=minbase --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$suite" - "${sources[@]}" \
        | "$DOCKER" import \
            --change 'CMD ["bash"]' \
            --change "ENV PATH=${IMAGE_PATH}" \
            --change 'LABEL io.stackbuild.harness.stand-in=true' \
            --message "stackbuild harness stand-in for debian:${tag} (mmdebstrap minbase)" \
            - "${REGISTRY_PUSH_HOST}/library/debian:${tag}" >/dev/null
}

ensure_base() {  # suite
    local suite=$1 tag="$1-slim"
    local name="debian:${tag}" pushref="${REGISTRY_PUSH_HOST}/library/debian:${tag}"
    local how

    local old_id=""
    if [[ -n "$REBUILD" ]]; then
        old_id=$("$DOCKER" image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
        local t0=$SECONDS
        build_base "$suite"
        "$DOCKER" push -q "$pushref" >/dev/null
        how="rebuilt in $((SECONDS - t0))s"
    elif registry_has_tag library/debian "$tag"; then
        how="reused (from registry)"
    elif "$DOCKER" image inspect "$name" >/dev/null 2>&1; then
        # Present locally but not in the registry (e.g. registry storage was wiped): publish it,
        # so that fresh pulls through the mirror find it.
        "$DOCKER" tag "$name" "$pushref"
        "$DOCKER" push -q "$pushref" >/dev/null
        how="reused (local image, pushed to registry)"
    else
        local t0=$SECONDS
        build_base "$suite"
        "$DOCKER" push -q "$pushref" >/dev/null
        how="built in $((SECONDS - t0))s"
    fi

    # Pull by its docker.io name: proves the mirror path that `FROM debian:<suite>-slim` uses.
    "$DOCKER" pull -q "$name" >/dev/null || die "docker pull ${name} failed (is ${REGISTRY_URL} the engine's registry mirror?)"
    # Drop the localhost:5000 alias (only an extra tag on the same image) to keep `docker images` tidy.
    if "$DOCKER" image inspect "$pushref" >/dev/null 2>&1; then
        "$DOCKER" rmi "$pushref" >/dev/null
    fi

    # After a rebuild the previous image is left untagged; remove it unless something uses it.
    if [[ -n "$old_id" && -z "$("$DOCKER" image inspect -f '{{join .RepoTags ","}}' "$old_id" 2>/dev/null || echo x)" ]]; then
        "$DOCKER" rmi "$old_id" >/dev/null 2>&1 || log "kept previous ${name} image ${old_id} (in use)"
    fi

    local ver
    ver=$("$DOCKER" run --rm --network none "$name" cat /etc/debian_version) \
        || die "${name} does not run"
    status "$name" "${how}; debian_version ${ver}"
}

# ---------------------------------------------------------------------------------------------
# --stop
# ---------------------------------------------------------------------------------------------

stop_one() {  # component pidfile expected-command-substring timeout
    local comp=$1 pidfile=$2 expect=$3 wait_s=$4 pid
    if [[ ! -f "$pidfile" ]]; then
        status "$comp" "not started by harness (no $pidfile)"
        return
    fi
    pid=$(<"$pidfile")
    local cmd=""
    [[ -r "/proc/$pid/cmdline" ]] && cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    # Guard against a recycled pid: only signal the process if it is still what we started.
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
    if kill -0 "$pid" 2>/dev/null; then
        die "$comp (pid $pid) still running ${wait_s}s after SIGTERM"
    fi
    rm -f "$pidfile"
    status "$comp" "stopped (pid $pid)"
}

do_stop() {
    # dockerd first: it stops its containers and its managed containerd (allow for that).
    stop_one dockerd "$STATE_DIR/dockerd.pid" dockerd 60
    stop_one registry "$STATE_DIR/registry.pid" 'docker-registry serve' 15
}

# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

main() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    mkdir -p "$STATE_DIR"
    # Serialise concurrent invocations (e.g. two CI steps), which would race on the same ports.
    exec 9>"$STATE_DIR/lock"
    flock -w 900 9 || die "another harness run holds $STATE_DIR/lock"

    local suites=() arg
    for arg in "$@"; do
        case "$arg" in
            --stop) do_stop; return ;;
            --rebuild) REBUILD=1 ;;
            -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return ;;
            -*) die "unknown option $arg (try --help)" ;;
            *) suites+=("$arg") ;;
        esac
    done
    if ((${#suites[@]} == 0)); then
        read -r -a suites <<<"${STACKBUILD_BASES:-bullseye bookworm}"
    fi

    ensure_packages
    ensure_registry
    prune_registry
    ensure_dockerd
    check_insecure_loopback
    ensure_buildx
    local s
    for s in "${suites[@]}"; do
        ensure_base "$s"
    done
}

# Run when executed; sourced (the unit tests call its functions), define only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
