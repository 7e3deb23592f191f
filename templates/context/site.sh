# shellcheck shell=bash
# Sourced by every RUN step that reaches the network: `. /opt/stackbuild/site.sh && site_begin`.
#
# Site settings (package index URLs, which may carry credentials; an extra CA bundle; Debian and
# Ubuntu mirrors) reach the step as BuildKit's build secret /run/secrets/stackbuild-site, or,
# under the classic builder, from the server `stackbuild build` runs on 127.0.0.1:47391 for the
# duration of a build. They live only in this step's environment and in a temporary folder that
# site_end removes, so none of them reaches an image layer, `docker history`, or the image's
# content tag. With neither (a plain `docker build` of a rendered context), nothing changes.
# Under BuildKit pip's and uv's caches are cache mounts (never in a layer): then they are used;
# elsewhere neither keeps a cache. uv takes the index settings pip does.

site_begin() {
    SITE_DIR=$(mktemp -d /tmp/stackbuild-site.XXXXXX) || return 1
    SITE_KEYS=""
    local payload key value
    if grep -qs ' /root/.cache/pip ' /proc/self/mountinfo; then
        unset PIP_NO_CACHE_DIR
    fi
    # uv's cache only where it is a mount; its files are copied out of it (another filesystem)
    if grep -qs ' /root/.cache/uv ' /proc/self/mountinfo; then
        export UV_CACHE_DIR=/root/.cache/uv UV_LINK_MODE=copy
    else
        export UV_NO_CACHE=1
    fi
    if [ -r /run/secrets/stackbuild-site ]; then
        payload=$(cat /run/secrets/stackbuild-site)
    # bash's /dev/tcp: no curl or python is needed, which the first RUN step has neither of.
    elif { exec 9<>/dev/tcp/127.0.0.1/47391; } 2>/dev/null; then
        payload=$(cat <&9)
        exec 9>&-
    else
        return 0
    fi
    while read -r key value; do
        [ -n "$key" ] || continue
        value=$(printf '%s' "$value" | base64 -d) || return 1
        case "$key" in
            PIP_INDEX_URL) export PIP_INDEX_URL="$value" UV_INDEX_URL="$value" ;;
            PIP_EXTRA_INDEX_URL) export PIP_EXTRA_INDEX_URL="$value" UV_EXTRA_INDEX_URL="$value" ;;
            CA_BUNDLE) site_trust "$value" ;;
            DEBIAN_MIRROR) site_mirror debian "$value" ;;
            UBUNTU_MIRROR) site_mirror ubuntu "$value" ;;
            *) continue ;;
        esac
        SITE_KEYS="$SITE_KEYS $key"
    done <<<"$payload"
    echo "stackbuild: site settings for this step:${SITE_KEYS:- none}"
}

site_trust() {
    # The system bundle (once ca-certificates is installed) plus the extra CA, for every client.
    local bundle="$SITE_DIR/ca.pem"
    cat /etc/ssl/certs/ca-certificates.crt >"$bundle" 2>/dev/null || : >"$bundle"
    printf '%s\n' "$1" >>"$bundle"
    export PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle" SSL_CERT_FILE="$bundle" \
        CURL_CA_BUNDLE="$bundle" GIT_SSL_CAINFO="$bundle"
    printf 'Acquire::https::CAInfo "%s";\n' "$bundle" >"$SITE_DIR/apt.conf"
    export APT_CONFIG="$SITE_DIR/apt.conf"
}

site_mirror() {
    # Point the distribution's main archive (not its security archive) at the mirror, if this
    # image is of that distribution; site_end puts the original sources back.
    local distro=$1 mirror=$2 file n=0
    . /etc/os-release
    [ "${ID:-}" = "$distro" ] || return 0
    mkdir -p "$SITE_DIR/apt-sources"
    for file in /etc/apt/sources.list "/etc/apt/sources.list.d/$distro.sources"; do
        [ -f "$file" ] || continue
        n=$((n + 1))
        cp -p "$file" "$SITE_DIR/apt-sources/$n"
        printf '%s\n' "$file" >"$SITE_DIR/apt-sources/$n.path"
        sed -i -E \
            -e "/security/! s#^URIs:.*#URIs: $mirror#" \
            -e "/security/! s#^(deb(-src)? (\[[^]]*\] )?)[^ ]+#\1$mirror#" "$file"
    done
}

site_end() {
    local saved
    if [ -d "${SITE_DIR:-}/apt-sources" ]; then
        for saved in "$SITE_DIR"/apt-sources/*.path; do
            [ -f "$saved" ] && cp -p "${saved%.path}" "$(cat "$saved")"
        done
    fi
    rm -rf "${SITE_DIR:-/nonexistent}"
    unset SITE_DIR SITE_KEYS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE \
        CURL_CA_BUNDLE GIT_SSL_CAINFO APT_CONFIG UV_INDEX_URL UV_EXTRA_INDEX_URL UV_CACHE_DIR UV_LINK_MODE UV_NO_CACHE
}
