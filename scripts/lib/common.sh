# shellcheck shell=bash
#
# Shared helpers for scripts/run and scripts/test. Source it, don't run it:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# The callers run under `set -euo pipefail`. This file does not set those
# options itself, so that a developer can also source it into an interactive
# shell (e.g. to call `ensure_database cqrs_bank`) without the first failing
# command closing that shell. Every function therefore checks its own failures
# and calls `die` explicitly where it matters.
#
# Environment knobs:
#   DATABASE_URL            if set, ensure_database uses it as is and does not
#                           touch any server.
#   DATABASE_ADMIN_URL      if set together with DATABASE_URL, used as is;
#                           otherwise derived from DATABASE_URL.
#   CQRS_BANK_PG_PROBE_URL  overrides the URL of the "already running" Postgres
#                           that ensure_database probes first (default
#                           postgres://postgres@127.0.0.1:5432/postgres). Point
#                           it at a closed port to force the private cluster,
#                           e.g. CQRS_BANK_PG_PROBE_URL=postgres://postgres@127.0.0.1:1/postgres
#   REDIS_URL               if set, ensure_redis uses it as is and does not
#                           touch any server.
#   CQRS_BANK_REDIS_PROBE   overrides the "host:port" of the "already running"
#                           Redis that ensure_redis probes first (default
#                           127.0.0.1:6379); point it at a closed port to force
#                           the private Redis.

# Repository root, from this file's location (scripts/lib/common.sh), so the
# helpers work whatever the caller's working directory is.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Pinned tool versions, so every machine (developer or CI) builds the same way.
# wasm-opt 116 is the binaryen release that the `wasm-opt` crate (0.116.x)
# builds; Debian's binaryen (108 on bookworm) is too old and silently breaks
# hydration. wasm-bindgen-cli is not pinned here: it must equal the
# wasm-bindgen crate in Cargo.lock, see lockfile_wasm_bindgen_version.
CARGO_LEPTOS_VERSION="0.3.10"
WASM_OPT_VERSION="116"

# Private Postgres cluster used when no suitable server is running. Under
# /var/tmp: not under /root, which the postgres OS user cannot enter, and not
# /tmp, which may be a tmpfs or cleaned at boot; the cluster is reused between
# runs.
PRIVATE_PG_DIR="/var/tmp/cqrs-bank-postgres"
PRIVATE_PG_DATA="$PRIVATE_PG_DIR/data"
PRIVATE_PG_SOCKET_DIR="$PRIVATE_PG_DIR/socket"
PRIVATE_PG_LOG="$PRIVATE_PG_DIR/postgres.log"
PRIVATE_PG_PORT="54329"

# Private Redis used when none answers: its own port, nothing kept on disk (the
# read store is rebuilt from the event store whenever it comes back empty).
PRIVATE_REDIS_DIR="/var/tmp/cqrs-bank-redis"
PRIVATE_REDIS_PORT="63799"

# Set once `apt-get update` has run in this script run.
_APT_UPDATED=0

# ---------------------------------------------------------------------------
# Basics
# ---------------------------------------------------------------------------

# log MSG...: progress line on stderr, so stdout stays clean for values.
log() {
    printf '==> %s\n' "$*" >&2
}

warn() {
    printf 'WARNING: %s\n' "$*" >&2
}

die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# as_root CMD...: run CMD with root privileges; directly if we already are root
# (CI and these machines run as root, and may have no sudo at all).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        die "root privileges needed to run '$*', but this is not root and sudo is not installed"
    fi
}

# is_deb_installed PKG: true if the Debian package is fully installed. Checks
# the Status line, because `dpkg -s` alone also succeeds for packages that were
# removed but left their config files behind. (Output captured first: with
# pipefail, `dpkg -s | grep -q` can fail on SIGPIPE when grep quits early.)
is_deb_installed() {
    local status
    status="$(dpkg -s "$1" 2>/dev/null)" || return 1
    grep -q '^Status: install ok installed$' <<<"$status"
}

# apt_install PKG...: install the Debian packages that are missing. The package
# lists are refreshed once per script run, and only when something is missing,
# so a fully provisioned machine never touches the network.
apt_install() {
    local pkg missing=()
    for pkg in "$@"; do
        is_deb_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    if [[ $_APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
            || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    # env, not an exported variable: sudo would drop it.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
}

# first_version TEXT: the first dotted version number (x.y or x.y.z) in TEXT,
# or nothing. Never fails, so `v="$(first_version ...)"` is safe under -e.
first_version() {
    grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"$1" | head -n 1 || true
}

# format_duration SECONDS: 4m12s / 1h02m03s / 9s.
format_duration() {
    local s=$1
    if ((s >= 3600)); then
        printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
    elif ((s >= 60)); then
        printf '%dm%02ds' $((s / 60)) $((s % 60))
    else
        printf '%ds' "$s"
    fi
}

# ---------------------------------------------------------------------------
# Rust tool chain
# ---------------------------------------------------------------------------

# lockfile_wasm_bindgen_version: the version of the `wasm-bindgen` package in
# the workspace Cargo.lock. wasm-bindgen-cli must match it exactly (a CLI of
# another version refuses the wasm file or emits JS glue that does not fit it),
# so the lock file is the single source of that version.
lockfile_wasm_bindgen_version() {
    local lock="$REPO_ROOT/Cargo.lock" version
    [[ -f $lock ]] || die "$lock not found: cannot tell which wasm-bindgen-cli to install"
    # The `version =` line right after `name = "wasm-bindgen"` (exact name, so
    # wasm-bindgen-macro & co. don't match).
    version="$(awk '
        $0 == "name = \"wasm-bindgen\"" { found = 1; next }
        found && /^version = / { gsub(/"/, "", $3); print $3; exit }
    ' "$lock")"
    [[ -n $version ]] || die "no wasm-bindgen package in $lock"
    printf '%s\n' "$version"
}

# ensure_rust_tools: wasm target, cargo-leptos, wasm-bindgen-cli, wasm-opt.
# Every step is skipped when the right version is already there, so a warm
# machine pays a few milliseconds, not a rebuild.
ensure_rust_tools() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    # First on PATH, not just somewhere on it: cargo-leptos looks tools up with
    # `which`, and an older wasm-opt/wasm-bindgen elsewhere on PATH (e.g.
    # Debian's /usr/bin/wasm-opt) must not win.
    export PATH="$cargo_bin:$PATH"

    command -v cargo >/dev/null 2>&1 || die "cargo not found (looked on PATH and in $cargo_bin); install Rust with rustup first"
    command -v rustup >/dev/null 2>&1 || die "rustup not found; it is needed to add the wasm32-unknown-unknown target"

    # 1. wasm target for the frontend (hydrate) crate. (Captured, not piped
    # into grep -q: see is_deb_installed.)
    local targets
    targets="$(rustup target list --installed)" || die "rustup target list --installed failed"
    if grep -qx 'wasm32-unknown-unknown' <<<"$targets"; then
        log "rust target wasm32-unknown-unknown: installed"
    else
        log "rustup target add wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown || die "rustup target add wasm32-unknown-unknown failed"
    fi

    # 2. cargo-leptos, exact version (--locked: with the dependency versions it
    # was released with, so a newer semver-compatible one can't break it).
    local have
    have="$(first_version "$(cargo leptos --version 2>/dev/null || true)")"
    if [[ $have == "$CARGO_LEPTOS_VERSION" ]]; then
        log "cargo-leptos $have: installed"
    else
        log "cargo install --locked cargo-leptos --version $CARGO_LEPTOS_VERSION (found: ${have:-none})"
        cargo install --locked cargo-leptos --version "$CARGO_LEPTOS_VERSION" \
            || die "installing cargo-leptos $CARGO_LEPTOS_VERSION failed"
        have="$(first_version "$(cargo leptos --version 2>/dev/null || true)")"
        [[ $have == "$CARGO_LEPTOS_VERSION" ]] \
            || die "cargo-leptos still reports '${have:-nothing}' after installing $CARGO_LEPTOS_VERSION"
    fi

    # 3. wasm-bindgen-cli = the wasm-bindgen crate version in Cargo.lock.
    # Deliberately without --locked: its dependencies resolve afresh to
    # current semver-compatible releases.
    local want
    want="$(lockfile_wasm_bindgen_version)" || exit 1
    have="$(first_version "$(wasm-bindgen --version 2>/dev/null || true)")"
    if [[ $have == "$want" ]]; then
        log "wasm-bindgen-cli $have: installed (matches Cargo.lock)"
    else
        log "cargo install wasm-bindgen-cli --version $want (Cargo.lock wants $want, found: ${have:-none})"
        cargo install wasm-bindgen-cli --version "$want" \
            || die "installing wasm-bindgen-cli $want failed"
        have="$(first_version "$(wasm-bindgen --version 2>/dev/null || true)")"
        [[ $have == "$want" ]] \
            || die "wasm-bindgen still reports '${have:-nothing}' after installing $want (shadowed on PATH? $(command -v wasm-bindgen))"
    fi

    # 4. wasm-opt from crates.io (the `wasm-opt` crate builds binaryen 116).
    # Never Debian's binaryen: version 108 is too old for current Rust wasm
    # output and silently breaks hydration in the browser.
    if [[ -x /usr/bin/wasm-opt ]]; then
        warn "/usr/bin/wasm-opt (Debian's binaryen, too old) is installed. This script puts $cargo_bin first on PATH, but anywhere else it may shadow the right wasm-opt and silently break hydration; consider 'apt-get remove binaryen'."
    fi
    have="$(wasm-opt --version 2>/dev/null | awk '{ print $3; exit }' || true)"
    if [[ $have == "$WASM_OPT_VERSION" ]]; then
        log "wasm-opt $have: installed ($(command -v wasm-opt))"
    else
        log "cargo install --locked wasm-opt (want version $WASM_OPT_VERSION, found: ${have:-none})"
        cargo install --locked wasm-opt || die "installing wasm-opt failed"
        have="$(wasm-opt --version 2>/dev/null | awk '{ print $3; exit }' || true)"
        [[ $have == "$WASM_OPT_VERSION" ]] \
            || die "wasm-opt reports version '${have:-nothing}' after install, want $WASM_OPT_VERSION ($(command -v wasm-opt))"
    fi
}

# ---------------------------------------------------------------------------
# Browser and Node (end-to-end tests)
# ---------------------------------------------------------------------------

# ensure_chromium: Debian's Chromium, which Playwright drives (the machines
# can't download Playwright's own browser builds).
ensure_chromium() {
    if [[ ! -x /usr/bin/chromium ]]; then
        apt_install chromium
    fi
    [[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is still missing after installing the chromium package"
    log "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo 'installed, version unknown')"
}

# ensure_node_deps: Node, npm and the end2end/ packages (Playwright).
ensure_node_deps() {
    local dir="$REPO_ROOT/end2end"

    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    [[ -f $dir/package.json ]] \
        || die "$dir/package.json not found: the end-to-end tests (Playwright) need an npm project there"

    # Playwright's postinstall would otherwise try to download its own browser
    # builds; we use Debian's /usr/bin/chromium instead. Exported so that any
    # later npm/npx call from cargo-leptos inherits it too.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

    # Reinstall when node_modules is missing or older than the file describing
    # it. node_modules is touched after a successful install because npm does
    # not always update the folder's own mtime (nor create it when there is
    # nothing to install).
    if [[ -f $dir/package-lock.json ]]; then
        if [[ ! -d $dir/node_modules || $dir/package-lock.json -nt $dir/node_modules ]]; then
            log "npm ci (end2end/)"
            (cd "$dir" && npm ci --no-audit --no-fund) || die "npm ci in $dir failed"
            mkdir -p "$dir/node_modules" && touch "$dir/node_modules"
        else
            log "end2end/node_modules: up to date with package-lock.json"
        fi
    else
        if [[ ! -d $dir/node_modules || $dir/package.json -nt $dir/node_modules ]]; then
            warn "end2end/package-lock.json missing: running 'npm install' (commit the lock file it writes for reproducible installs)"
            (cd "$dir" && npm install --no-audit --no-fund) || die "npm install in $dir failed"
            mkdir -p "$dir/node_modules" && touch "$dir/node_modules"
        else
            log "end2end/node_modules: up to date with package.json"
        fi
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# url_with_database URL DBNAME: same scheme, credentials, host, port and query
# parameters as URL, but database DBNAME.
url_with_database() {
    local url=$1 db=$2
    [[ $url =~ ^(postgres(ql)?://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$ ]] \
        || die "not a postgres:// URL: $(redact_url "$url")"
    printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$db" "${BASH_REMATCH[4]}"
}

# url_with_user URL USER: URL (without a password) signing in as USER instead.
url_with_user() {
    local url=$1 user=$2
    [[ $url =~ ^(postgres(ql)?://)([^@/?#]*@)?(.*)$ ]] || die "not a postgres:// URL: $(redact_url "$url")"
    printf '%s%s@%s\n' "${BASH_REMATCH[1]}" "$user" "${BASH_REMATCH[4]}"
}

# The role the server runs as on a PostgreSQL the scripts chose (README, "Database
# roles"): it may read and append events, never change them.
SERVER_ROLE=cqrs_bank_server

# use_server_role ADMIN_URL DBNAME: create $SERVER_ROLE if missing and set
#   DATABASE_URL        DBNAME as $SERVER_ROLE (what the server runs as)
#   DATABASE_OWNER_URL  DBNAME as the admin role (migrates, then grants the
#                       server's role only what it needs)
# When that server does not let the new role sign in without a password, the
# server runs as the admin role, as before, and says so.
use_server_role() {
    local admin_url=$1 db=$2 server_url
    if ! psql "$admin_url" -v ON_ERROR_STOP=1 -Atqc \
        "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$SERVER_ROLE') THEN CREATE ROLE $SERVER_ROLE LOGIN; END IF; END \$\$" \
        >/dev/null 2>&1; then
        warn "could not create the role $SERVER_ROLE; the server runs as $(url_user "$admin_url") (all privileges)"
        unset DATABASE_OWNER_URL
        return 0
    fi
    server_url="$(url_with_user "$admin_url" "$SERVER_ROLE")"
    if ! psql "$server_url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
        warn "the role $SERVER_ROLE cannot sign in without a password here; the server runs as $(url_user "$admin_url") (all privileges)"
        unset DATABASE_OWNER_URL
        return 0
    fi
    DATABASE_OWNER_URL="$(url_with_database "$admin_url" "$db")" || exit 1
    DATABASE_URL="$(url_with_user "$DATABASE_OWNER_URL" "$SERVER_ROLE")" || exit 1
    export DATABASE_URL DATABASE_OWNER_URL
    log "The server runs as role $SERVER_ROLE (may read and append events, never change them); migrations as $(url_user "$admin_url")"
}

# url_user URL: the user a postgres:// URL signs in as.
url_user() {
    if [[ $1 =~ ^postgres(ql)?://([^:@/?#]*)(:[^@/?#]*)?@ ]]; then
        printf '%s\n' "${BASH_REMATCH[2]}"
    else
        printf '(the default user)\n'
    fi
}

# redact_url URL: URL with any password replaced by ***, for logs.
redact_url() {
    sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

# url_host_port URL: "host:port" of a postgres URL (port 5432 if absent).
url_host_port() {
    local authority
    authority="$(sed -E 's#^[a-z]+://##; s#[/?].*$##; s#^.*@##' <<<"$1")"
    [[ $authority == *:* ]] || authority="$authority:5432"
    printf '%s\n' "$authority"
}

# check_db_name NAME: database names are put into SQL as quoted identifiers;
# accept only plain ones so no quoting games are possible.
check_db_name() {
    [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "invalid database name '$1' (letters, digits and _ only)"
}

# psql_url URL ARGS...: psql against URL without reading ~/.psqlrc, stopping on
# the first error, with a short connect timeout so a dead server fails fast,
# and without NOTICEs such as "database ... does not exist, skipping".
psql_url() {
    local url=$1
    shift
    PGCONNECT_TIMEOUT=3 PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
        psql -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}

# ensure_psql: the client is needed for probing and for (re)creating databases.
ensure_psql() {
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    command -v psql >/dev/null 2>&1 || die "psql still not found after installing postgresql-client"
}

# server_version_num URL: e.g. 150020; fails if the server does not answer.
server_version_num() {
    psql_url "$1" -tA -c 'show server_version_num' 2>/dev/null
}

# server_version URL: e.g. 15.20 (first word of server_version).
server_version() {
    psql_url "$1" -tA -c 'show server_version' 2>/dev/null | awk '{ print $1; exit }'
}

# ensure_database DBNAME: pick a PostgreSQL server and export
#   DATABASE_URL        postgres URL of database DBNAME on it
#   DATABASE_ADMIN_URL  same server, database "postgres" (for CREATE/DROP DATABASE)
# The database itself is not created: the server binary creates its database
# at start-up if missing (recreate_database below is for a clean slate).
ensure_database() {
    local db=${1:?usage: ensure_database DBNAME}
    check_db_name "$db"

    # a. Caller's choice wins and we do not touch that server at all.
    if [[ -n ${DATABASE_URL:-} ]]; then
        # (A failing `$(...)` inside `export` would go unnoticed: assign first.)
        if [[ -z ${DATABASE_ADMIN_URL:-} ]]; then
            DATABASE_ADMIN_URL="$(url_with_database "$DATABASE_URL" postgres)" || exit 1
        fi
        export DATABASE_URL DATABASE_ADMIN_URL
        log "Using DATABASE_URL from the environment: $(redact_url "$DATABASE_URL") (not checked, not started)"
        return 0
    fi

    ensure_psql

    # b. A server already running on the standard port (these machines start
    # PostgreSQL 15 on 127.0.0.1:5432 with trust auth for user postgres).
    # Version 13+ is required for DROP DATABASE ... WITH (FORCE).
    local probe_url="${CQRS_BANK_PG_PROBE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    local num
    if num="$(server_version_num "$probe_url")" && [[ $num =~ ^[0-9]+$ ]]; then
        if ((num >= 130000)); then
            export DATABASE_ADMIN_URL="$probe_url"
            DATABASE_URL="$(url_with_database "$probe_url" "$db")" || exit 1
            export DATABASE_URL
            log "Using PostgreSQL $(server_version "$probe_url") at $(url_host_port "$probe_url"), database $db"
            use_server_role "$probe_url" "$db"
            return 0
        fi
        log "PostgreSQL at $(url_host_port "$probe_url") is version $num, need 130000 (13) or newer: using a private cluster instead"
    else
        log "No PostgreSQL answering at $(url_host_port "$probe_url"): using a private cluster"
    fi

    # c. Our own cluster.
    start_private_cluster
    local admin_url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"
    export DATABASE_ADMIN_URL="$admin_url"
    DATABASE_URL="$(url_with_database "$admin_url" "$db")" || exit 1
    export DATABASE_URL
    log "Using PostgreSQL $(server_version "$admin_url") at 127.0.0.1:$PRIVATE_PG_PORT (private cluster in $PRIVATE_PG_DATA), database $db"
    use_server_role "$admin_url" "$db"
}

# pg_bin_dir: the bin folder of the newest PostgreSQL server installed from
# Debian's packages (they live in /usr/lib/postgresql/<major>/bin).
pg_bin_dir() {
    local initdb
    initdb="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)"
    [[ -n $initdb ]] && dirname "$initdb"
}

# as_pg_owner CMD...: run a server command as the cluster's owner. Postgres
# refuses to run as root, so as root that is the postgres OS user; otherwise it
# is the current user. The working directory is the cluster folder because
# the postgres user may not be allowed into the caller's one (e.g. /root).
as_pg_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd "$PRIVATE_PG_DIR" && runuser -u postgres -- "$@")
    else
        (cd "$PRIVATE_PG_DIR" && "$@")
    fi
}

# start_private_cluster: initialise (first time) and start (if stopped) a
# throwaway cluster on 127.0.0.1:$PRIVATE_PG_PORT with trust auth.
start_private_cluster() {
    local bin
    bin="$(pg_bin_dir)" || true
    if [[ -z $bin ]]; then
        apt_install postgresql
        bin="$(pg_bin_dir)" || true
        [[ -n $bin ]] || die "no initdb in /usr/lib/postgresql/*/bin even after installing Debian's postgresql package"
    fi
    local major
    major="$(basename "$(dirname "$bin")")"
    if [[ ! $major =~ ^[0-9]+$ ]] || ((major < 13)); then
        die "PostgreSQL $major in $bin is too old: version 13 or newer is needed (DROP DATABASE ... WITH (FORCE))"
    fi

    # Folder layout and ownership.
    local owner
    if [[ $EUID -eq 0 ]]; then
        command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux): needed to run PostgreSQL as the postgres user"
        id postgres >/dev/null 2>&1 || die "OS user 'postgres' does not exist; install Debian's postgresql package"
        owner=postgres
        mkdir -p "$PRIVATE_PG_SOCKET_DIR"
        chown postgres:postgres "$PRIVATE_PG_DIR" "$PRIVATE_PG_SOCKET_DIR"
    else
        owner="$(id -un)"
        mkdir -p "$PRIVATE_PG_SOCKET_DIR" \
            || die "cannot create $PRIVATE_PG_SOCKET_DIR (made by another user? remove $PRIVATE_PG_DIR or run as root)"
        [[ -O $PRIVATE_PG_DIR ]] \
            || die "$PRIVATE_PG_DIR belongs to $(stat -c %U "$PRIVATE_PG_DIR"), not $owner: run as root or remove it"
    fi

    # First use: create the cluster. Superuser "postgres", trust auth for all
    # local connections (it only listens on 127.0.0.1 and a private socket),
    # UTF8 with the C locale so it does not depend on the machine's LANG.
    if [[ ! -f $PRIVATE_PG_DATA/PG_VERSION ]]; then
        log "initdb $PRIVATE_PG_DATA (PostgreSQL $major, as $owner)"
        if ! as_pg_owner "$bin/initdb" -D "$PRIVATE_PG_DATA" -A trust -U postgres -E UTF8 --locale=C \
            >"$PRIVATE_PG_DIR/initdb.log" 2>&1; then
            cat "$PRIVATE_PG_DIR/initdb.log" >&2
            die "initdb failed (log above, also in $PRIVATE_PG_DIR/initdb.log)"
        fi
    else
        log "Reusing the private cluster in $PRIVATE_PG_DATA"
    fi
    local data_major
    data_major="$(cat "$PRIVATE_PG_DATA/PG_VERSION")"
    [[ $data_major == "$major" ]] \
        || die "$PRIVATE_PG_DATA was made by PostgreSQL $data_major but the newest server here is $major: stop it and remove $PRIVATE_PG_DIR"

    # Our settings, in a file of their own that is rewritten every time (so a
    # reused data dir picks up changes on its next start) and included from
    # postgresql.conf once. A plain `pg_ctl start` then also gets them.
    local conf="$PRIVATE_PG_DATA/cqrs-bank.conf"
    cat >"$conf" <<EOF
# Written by scripts/lib/common.sh (start_private_cluster); rewritten on every run.
listen_addresses = '127.0.0.1'
port = $PRIVATE_PG_PORT
unix_socket_directories = '$PRIVATE_PG_SOCKET_DIR'
# The integration tests create a database and a connection pool per test.
max_connections = 200
EOF
    chmod 0600 "$conf"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$conf"
    if ! grep -qx "include_if_exists = 'cqrs-bank.conf'" "$PRIVATE_PG_DATA/postgresql.conf"; then
        printf "\ninclude_if_exists = 'cqrs-bank.conf'\n" >>"$PRIVATE_PG_DATA/postgresql.conf"
    fi

    # Start only if it is not running (status: 0 running, 3 stopped).
    if as_pg_owner "$bin/pg_ctl" -D "$PRIVATE_PG_DATA" status >/dev/null 2>&1; then
        log "Private cluster already running"
    else
        log "pg_ctl start (port $PRIVATE_PG_PORT, log $PRIVATE_PG_LOG)"
        if ! as_pg_owner "$bin/pg_ctl" -D "$PRIVATE_PG_DATA" -l "$PRIVATE_PG_LOG" -w -t 60 start >/dev/null; then
            tail -n 30 "$PRIVATE_PG_LOG" >&2 || true
            die "could not start the private PostgreSQL cluster (log tail above, full log $PRIVATE_PG_LOG)"
        fi
    fi

    # pg_ctl -w already waited, but a cluster that was "running" may still be
    # in recovery; wait until it really takes connections on TCP.
    local url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres" i
    for ((i = 0; i < 60; i++)); do
        server_version_num "$url" >/dev/null && return 0
        sleep 0.5
    done
    tail -n 30 "$PRIVATE_PG_LOG" >&2 || true
    die "the private PostgreSQL cluster does not accept connections on 127.0.0.1:$PRIVATE_PG_PORT (log $PRIVATE_PG_LOG)"
}

# redis_answers HOST PORT: true if a Redis answers PING there (bash's /dev/tcp:
# no client needed).
redis_answers() {
    local host=$1 port=$2 reply=""
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || exit 1
        [[ $reply == +PONG* ]]
    ) 2>/dev/null
}

# ensure_redis_server: Debian's redis-server, installed if missing (the private
# Redis runs it, and so do the tests that stop and restart a Redis of their own).
ensure_redis_server() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not found after installing Debian's redis-server"
}

# ensure_redis: pick a Redis for the read store and export REDIS_URL:
#   a. REDIS_URL from the environment, as is;
#   b. a Redis answering on 127.0.0.1:6379 (CQRS_BANK_REDIS_PROBE);
#   c. a private redis-server of our own on 127.0.0.1:$PRIVATE_REDIS_PORT.
ensure_redis() {
    if [[ -n ${REDIS_URL:-} ]]; then
        export REDIS_URL
        log "Using REDIS_URL from the environment: $(redact_url "$REDIS_URL") (not checked, not started)"
        return 0
    fi
    local probe="${CQRS_BANK_REDIS_PROBE:-127.0.0.1:6379}"
    if redis_answers "${probe%:*}" "${probe##*:}"; then
        export REDIS_URL="redis://$probe/0"
        log "Using Redis at $probe"
        return 0
    fi
    log "No Redis answering at $probe: using a private one"
    start_private_redis
    export REDIS_URL="redis://127.0.0.1:$PRIVATE_REDIS_PORT/0"
    log "Using Redis at 127.0.0.1:$PRIVATE_REDIS_PORT (private, log $PRIVATE_REDIS_DIR/redis.log)"
}

# start_private_redis: our own redis-server, in the background, unless it runs.
start_private_redis() {
    redis_answers 127.0.0.1 "$PRIVATE_REDIS_PORT" && return 0
    ensure_redis_server
    mkdir -p "$PRIVATE_REDIS_DIR" || die "cannot create $PRIVATE_REDIS_DIR"
    redis-server --port "$PRIVATE_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --dir "$PRIVATE_REDIS_DIR" --logfile "$PRIVATE_REDIS_DIR/redis.log" \
        --pidfile "$PRIVATE_REDIS_DIR/redis.pid" ||
        die "could not start the private Redis (log $PRIVATE_REDIS_DIR/redis.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        redis_answers 127.0.0.1 "$PRIVATE_REDIS_PORT" && return 0
        sleep 0.2
    done
    tail -n 20 "$PRIVATE_REDIS_DIR/redis.log" >&2 || true
    die "the private Redis does not answer on 127.0.0.1:$PRIVATE_REDIS_PORT"
}

# redis_url_with_database URL N: URL with its database number replaced by N.
redis_url_with_database() {
    local url=$1 n=$2
    [[ $url =~ ^(rediss?://[^/?#]*)(/[0-9]*)?(\?.*)?$ ]] || die "not a redis:// URL: $(redact_url "$url")"
    printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$n" "${BASH_REMATCH[3]}"
}

# recreate_database ADMIN_URL DBNAME: drop DBNAME (disconnecting anyone still
# using it) and create it empty, for a clean end-to-end run.
recreate_database() {
    local admin_url=${1:?usage: recreate_database ADMIN_URL DBNAME} db=${2:?usage: recreate_database ADMIN_URL DBNAME}
    check_db_name "$db"
    ensure_psql
    log "Recreating database $db on $(url_host_port "$admin_url")"
    # Two -c: each runs on its own, outside a transaction block, which
    # DROP/CREATE DATABASE require.
    psql_url "$admin_url" \
        -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$db\"" \
        || die "could not recreate database $db"
}
