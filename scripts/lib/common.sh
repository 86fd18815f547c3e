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

# What the server reads at run time to find the site `cargo xtask site` builds
# (the names and folders of [[workspace.metadata.leptos]] in Cargo.toml): the
# LEPTOS_* variables cargo-leptos 0.3.10 hands to the server it runs, less the
# ones Leptos never reads (LEPTOS_LIB_DIR, _BIN_DIR, _JS_MINIFY, _RELOAD_PORT).
# Like cargo-leptos, no LEPTOS_ENV: nothing in Leptos 0.8 or this app reads it.
# At run time, not at compile time: leptos_config reads LEPTOS_OUTPUT_NAME with
# option_env!, and a value only the site build compiled with would make every
# other release build recompile leptos and everything above it. Use it as
#     env "${SITE_ENV[@]}" LEPTOS_SITE_ADDR=... target/release/server
# (Leptos finds hash.txt beside the binary.)
# shellcheck disable=SC2034 # used by scripts/run and scripts/test
SITE_ENV=(
    LEPTOS_OUTPUT_NAME=cqrs-bank
    LEPTOS_SITE_ROOT=target/site
    LEPTOS_SITE_PKG_DIR=pkg
    LEPTOS_HASH_FILES=true
    LEPTOS_HASH_FILE_NAME=hash.txt
)

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

# ensure_cargo: cargo on PATH, adding cargo's bin folder (where rustup puts
# it) when PATH lacks it.
ensure_cargo() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
        export PATH="$cargo_bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (looked on PATH and in $cargo_bin); install Rust with rustup first"
}

# ensure_cargo_tool CRATE VERSION: the cargo subcommand CRATE names
# (cargo-deny: `cargo deny`) at exactly VERSION, installed from crates.io
# (`cargo install --locked`, into CARGO_HOME's bin, where cargo finds
# subcommands) when missing or of another version.
ensure_cargo_tool() {
    local crate=$1 version=$2 reported
    ensure_cargo
    reported="$(cargo "${crate#cargo-}" --version 2>/dev/null || true)"
    [[ " $reported " == *" $version "* ]] && return 0
    log "cargo install --locked $crate@$version"
    cargo install --locked --quiet "$crate" --version "$version"
}

# ensure_python_venv: python3 able to make a virtualenv (Debian splits venv
# out of python3).
ensure_python_venv() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
}

# ensure_wasm_target: the wasm32-unknown-unknown target, which the frontend
# (hydrate) crate compiles to. (Captured, not piped into grep -q: see
# is_deb_installed.)
ensure_wasm_target() {
    ensure_cargo
    command -v rustup >/dev/null 2>&1 || die "rustup not found; it is needed to add the wasm32-unknown-unknown target"
    local targets
    targets="$(rustup target list --installed)" || die "rustup target list --installed failed"
    if grep -qx 'wasm32-unknown-unknown' <<<"$targets"; then
        log "rust target wasm32-unknown-unknown: installed"
    else
        log "rustup target add wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown || die "rustup target add wasm32-unknown-unknown failed"
    fi
}

# ---------------------------------------------------------------------------
# Browser and Node (the site build, the end-to-end tests)
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

# ensure_node: Node and npm, from Debian when missing: the site build takes
# wasm-opt and terser from the npm registry, the end-to-end tests Playwright.
ensure_node() {
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    command -v npm >/dev/null 2>&1 || die "npm still not found after installing Debian's nodejs and npm"
}

# ensure_node_deps: Node, npm and the end2end/ packages (Playwright).
ensure_node_deps() {
    local dir="$REPO_ROOT/end2end"

    ensure_node
    [[ -f $dir/package.json ]] \
        || die "$dir/package.json not found: the end-to-end tests (Playwright) need an npm project there"

    # Playwright's postinstall would otherwise try to download its own browser
    # builds; we use Debian's /usr/bin/chromium instead. Exported so that any
    # later npm/npx call inherits it too.
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

# as_pg_owner CMD...: run a server command as the private cluster's owner
# (see as_pg_owner_in), from the private cluster's folder.
as_pg_owner() {
    as_pg_owner_in "$PRIVATE_PG_DIR" "$@"
}

# as_pg_owner_in DIR CMD...: run a server command as a cluster's owner, from
# DIR. Postgres refuses to run as root, so as root that is the postgres OS
# user; otherwise it is the current user. The working directory is DIR (a
# folder of the cluster) because the postgres user may not be allowed into the
# caller's one (e.g. /root), and initdb & co. fail when they cannot tell where
# they are.
as_pg_owner_in() {
    local dir=$1
    shift
    if [[ $EUID -eq 0 ]]; then
        (cd "$dir" && runuser -u postgres -- "$@")
    else
        (cd "$dir" && "$@")
    fi
}

# ensure_pg_server: set PG_SERVER_BIN to the bin folder of the newest PostgreSQL
# server from Debian's packages (installing the postgresql package if there is
# none) and PG_SERVER_MAJOR to its major version; dies unless it is 13 or newer
# (DROP DATABASE ... WITH (FORCE)). Globals rather than printed: apt_install
# must not run inside a `$(...)`, which would swallow what it says and forget
# that apt-get update already ran.
ensure_pg_server() {
    local bin
    bin="$(pg_bin_dir)" || true
    if [[ -z $bin ]]; then
        # apt-get talks on stdout; callers keep stdout for values.
        apt_install postgresql >&2
        bin="$(pg_bin_dir)" || true
        [[ -n $bin ]] || die "no initdb in /usr/lib/postgresql/*/bin even after installing Debian's postgresql package"
    fi
    local major
    major="$(basename "$(dirname "$bin")")"
    if [[ ! $major =~ ^[0-9]+$ ]] || ((major < 13)); then
        die "PostgreSQL $major in $bin is too old: version 13 or newer is needed (DROP DATABASE ... WITH (FORCE))"
    fi
    PG_SERVER_BIN=$bin
    PG_SERVER_MAJOR=$major
}

# prepare_pg_folder DIR: create DIR for a private cluster's files and hand it to
# the cluster's owner: as root, the postgres OS user (Postgres refuses root),
# who must be able to reach it; otherwise the current user, who must own it.
# Sets PG_FOLDER_OWNER.
prepare_pg_folder() {
    local dir=${1:?usage: prepare_pg_folder DIR}
    if [[ $EUID -eq 0 ]]; then
        command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux): needed to run PostgreSQL as the postgres user"
        id postgres >/dev/null 2>&1 || die "OS user 'postgres' does not exist; install Debian's postgresql package"
        mkdir -p "$dir" || die "cannot create $dir"
        chown postgres:postgres "$dir" || die "cannot give $dir to the postgres user"
        # A folder under /root, say, is fine for root but not for postgres:
        # every parent must let it through.
        runuser -u postgres -- test -w "$dir" -a -x "$dir" \
            || die "the postgres OS user cannot enter or write $dir (is a parent folder closed to it, e.g. /root?): pick a folder under /var/tmp"
        PG_FOLDER_OWNER=postgres
    else
        PG_FOLDER_OWNER="$(id -un)"
        mkdir -p "$dir" || die "cannot create $dir"
        [[ -O $dir ]] || die "$dir belongs to $(stat -c %U "$dir"), not $PG_FOLDER_OWNER: run as root, or remove it or pick another folder"
    fi
}

# init_pg_data FOLDER DATA: on first use, create the cluster DATA (superuser
# "postgres", trust auth for all local connections — it only listens on
# 127.0.0.1 and a private socket — UTF8 with the C locale so it does not depend
# on the machine's LANG), from FOLDER with its log there; then make sure DATA
# was made by the server version in use (ensure_pg_server, prepare_pg_folder).
init_pg_data() {
    local folder=${1:?usage: init_pg_data FOLDER DATA} data=${2:?usage: init_pg_data FOLDER DATA}
    if [[ ! -f $data/PG_VERSION ]]; then
        log "initdb $data (PostgreSQL $PG_SERVER_MAJOR, as $PG_FOLDER_OWNER)"
        if ! as_pg_owner_in "$folder" "$PG_SERVER_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
            >"$folder/initdb.log" 2>&1; then
            cat "$folder/initdb.log" >&2
            die "initdb failed (log above, also in $folder/initdb.log)"
        fi
    else
        log "Reusing the cluster in $data"
    fi
    local data_major
    data_major="$(cat "$data/PG_VERSION")"
    [[ $data_major == "$PG_SERVER_MAJOR" ]] \
        || die "$data was made by PostgreSQL $data_major but the newest server here is $PG_SERVER_MAJOR: stop it and remove $folder"
}

# start_private_cluster: initialise (first time) and start (if stopped) a
# throwaway cluster on 127.0.0.1:$PRIVATE_PG_PORT with trust auth.
start_private_cluster() {
    ensure_pg_server
    local bin=$PG_SERVER_BIN

    # Folder layout and ownership.
    prepare_pg_folder "$PRIVATE_PG_DIR"
    mkdir -p "$PRIVATE_PG_SOCKET_DIR" \
        || die "cannot create $PRIVATE_PG_SOCKET_DIR (made by another user? remove $PRIVATE_PG_DIR or run as root)"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$PRIVATE_PG_SOCKET_DIR"
    fi

    init_pg_data "$PRIVATE_PG_DIR" "$PRIVATE_PG_DATA"

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

# Replica pair: a private primary and a hot standby that streams the primary's
# WAL, for trying reads from a replica (DATABASE_READ_URL). Both on 127.0.0.1
# with trust auth, in one folder DIR:
#     DIR/primary, DIR/standby            data folders
#     DIR/primary.log, DIR/standby.log    server logs
#     DIR/.s.PGSQL.<port>                 both servers' sockets (ports differ)
# scripts/replica-pair is the command-line front end.

# _replica_pair_conf FILE PORT SOCKET_DIR ROLE: (re)write a pair member's own
# settings file, owned by the cluster owner.
_replica_pair_conf() {
    local conf=$1 port=$2 socket_dir=$3 role=$4
    cat >"$conf" <<CONF || die "cannot write $conf"
# Written by scripts/lib/common.sh (start_private_replica_pair, $role); rewritten on every run.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$socket_dir'
# The integration tests create a database and a connection pool per test. A hot
# standby refuses to start with fewer connections (or WAL senders) than its
# primary, so both members get the same numbers.
max_connections = 200
# What streaming replication needs (also the defaults since PostgreSQL 10;
# spelled out so a changed default cannot silently break the pair).
wal_level = replica
max_wal_senders = 10
# Read-only queries on the standby while it replays.
hot_standby = on
CONF
    chmod 0600 "$conf"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$conf"
    fi
}

# _replica_pair_start DIR NAME PORT: start DIR/NAME on PORT unless it runs. A
# member already running on another port is an error rather than a 30 s wait
# for a port it does not listen on: its settings file names the new port, but
# a running server reads it only on its next start.
_replica_pair_start() {
    local dir=$1 name=$2 port=$3
    local data="$dir/$name" log="$dir/$name.log"
    if as_pg_owner_in "$dir" "$PG_SERVER_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        # postmaster.pid, line 4: the port the running server listens on.
        local running_port
        running_port="$(sed -n 4p "$data/postmaster.pid" 2>/dev/null)" || true
        if [[ -n $running_port && $running_port != "$port" ]]; then
            die "the $name in $data runs on port $running_port, not $port: stop the pair first (scripts/replica-pair stop $dir)"
        fi
        log "Replica pair: $name already running (port $port)"
        return 0
    fi
    log "pg_ctl start $name (port $port, log $log)"
    if ! as_pg_owner_in "$dir" "$PG_SERVER_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null; then
        tail -n 30 "$log" >&2 || true
        die "could not start the $name of the replica pair (log tail above, full log $log)"
    fi
}

# _replica_pair_wait_tcp URL LOG NAME: wait (~30 s at most) until the server
# at URL takes connections on TCP.
_replica_pair_wait_tcp() {
    local url=$1 log=$2 name=$3 i
    for ((i = 0; i < 60; i++)); do
        server_version_num "$url" >/dev/null && return 0
        sleep 0.5
    done
    tail -n 30 "$log" >&2 || true
    die "the $name of the replica pair does not accept connections on $(url_host_port "$url") (log $log)"
}

# start_private_replica_pair DIR PRIMARY_PORT STANDBY_PORT: initialise (first
# time) and start (if stopped) a primary on 127.0.0.1:PRIMARY_PORT and a hot
# standby of it on 127.0.0.1:STANDBY_PORT, fed by streaming replication, both
# with trust auth for user postgres (database postgres). Returns once both take
# connections and the standby streams from the primary. Idempotent: a second
# call with the same arguments reuses the running pair. Prints nothing on
# stdout (progress goes to stderr through `log`).
start_private_replica_pair() {
    local usage="usage: start_private_replica_pair DIR PRIMARY_PORT STANDBY_PORT"
    local dir=${1:?$usage} primary_port=${2:?$usage} standby_port=${3:?$usage}
    [[ $primary_port =~ ^[0-9]+$ && $standby_port =~ ^[0-9]+$ ]] \
        || die "ports must be numbers (got '$primary_port' and '$standby_port')"
    [[ $primary_port != "$standby_port" ]] || die "the primary and the standby need different ports (both $primary_port)"
    # DIR is written into the settings between single quotes.
    [[ $dir != *"'"* ]] || die "the replica pair folder must not contain a single quote: $dir"

    ensure_pg_server
    ensure_psql
    local bin=$PG_SERVER_BIN owner

    # Folder and ownership, as for the private cluster. Absolute, because the
    # server commands run from DIR and Postgres wants an absolute socket folder.
    prepare_pg_folder "$dir"
    owner=$PG_FOLDER_OWNER
    dir="$(cd "$dir" && pwd)" || die "cannot enter $dir"

    local primary="$dir/primary" standby="$dir/standby"
    local primary_url="postgres://postgres@127.0.0.1:$primary_port/postgres"
    local standby_url="postgres://postgres@127.0.0.1:$standby_port/postgres"

    # A standby from an earlier run must still fit, checked before anything is
    # started. Without standby.signal it would start as a second primary (e.g.
    # after a promotion) and silently stop following; and its primary_conninfo
    # names the primary's port of the day of its base backup.
    if [[ -f $standby/PG_VERSION ]]; then
        [[ -f $standby/standby.signal ]] \
            || die "$standby is not a standby (no standby.signal; promoted?): stop the pair and remove $dir"
        grep -qE "^primary_conninfo = .*port=${primary_port}[ ']" "$standby/postgresql.auto.conf" 2>/dev/null \
            || die "the standby in $standby does not stream from port $primary_port (see primary_conninfo in its postgresql.auto.conf): use the ports it was made with, or stop the pair and remove $dir"
    fi

    # 1. Primary: created like the private cluster.
    init_pg_data "$dir" "$primary"

    # Settings in a file of their own, rewritten every time and included from
    # postgresql.conf once (the base backup copies both to the standby).
    _replica_pair_conf "$primary/cqrs-bank.conf" "$primary_port" "$dir" primary
    if ! grep -qx "include_if_exists = 'cqrs-bank.conf'" "$primary/postgresql.conf"; then
        printf "\ninclude_if_exists = 'cqrs-bank.conf'\n" >>"$primary/postgresql.conf"
    fi
    # The standby signs in for replication over TCP as postgres. `initdb -A
    # trust` already allows that (`host replication all 127.0.0.1/32 trust`),
    # but the pair depends on it, so it is spelled out. pg_hba.conf is read on
    # start and reload only: a running primary is told to reload.
    local hba_line="host replication postgres 127.0.0.1/32 trust" hba_changed=0
    if ! grep -qx "$hba_line" "$primary/pg_hba.conf"; then
        printf '\n# Added by scripts/lib/common.sh (start_private_replica_pair): the standby streams from here.\n%s\n' \
            "$hba_line" >>"$primary/pg_hba.conf" || die "cannot append to $primary/pg_hba.conf"
        hba_changed=1
    fi
    if ((hba_changed)) && as_pg_owner_in "$dir" "$bin/pg_ctl" -D "$primary" status >/dev/null 2>&1; then
        as_pg_owner_in "$dir" "$bin/pg_ctl" -D "$primary" reload >/dev/null \
            || die "could not reload the primary after changing $primary/pg_hba.conf"
    fi
    _replica_pair_start "$dir" primary "$primary_port"
    _replica_pair_wait_tcp "$primary_url" "$dir/primary.log" primary

    # 2. Standby: a base backup of the running primary. -R writes standby.signal
    # (start as a standby) and primary_conninfo (where to stream from, this
    # primary port) into postgresql.auto.conf; -X stream copies the WAL written
    # during the backup; -c fast checkpoints at once instead of waiting.
    if [[ ! -f $standby/PG_VERSION ]]; then
        # pg_basebackup removes a folder it created when it fails; anything
        # left there is not ours to delete.
        if [[ -e $standby ]] && [[ -n "$(ls -A "$standby" 2>/dev/null)" ]]; then
            die "$standby exists but holds no cluster (an interrupted base backup?): remove it and run again"
        fi
        log "pg_basebackup of the primary into $standby (as $owner)"
        if ! as_pg_owner_in "$dir" "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
            -D "$standby" -R -X stream -c fast >"$dir/basebackup.log" 2>&1; then
            cat "$dir/basebackup.log" >&2
            die "pg_basebackup failed (log above, also in $dir/basebackup.log)"
        fi
    else
        log "Replica pair: reusing the standby in $standby"
    fi
    # The base backup copied the primary's settings file, port included: the
    # same file, rewritten with the standby's port.
    _replica_pair_conf "$standby/cqrs-bank.conf" "$standby_port" "$dir" standby
    _replica_pair_start "$dir" standby "$standby_port"
    _replica_pair_wait_tcp "$standby_url" "$dir/standby.log" standby

    # 3. Taking connections is not enough: wait until the standby is in
    # recovery (a standby, not a primary) and its WAL receiver streams, so that
    # what the caller writes to the primary next does reach it.
    local state="" i
    for ((i = 0; i < 60; i++)); do
        state="$(psql_url "$standby_url" -tA -c \
            "SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), 'no WAL receiver')" \
            2>/dev/null)" || state=""
        if [[ $state == "t|streaming" ]]; then
            log "Replica pair ready: primary 127.0.0.1:$primary_port, hot standby 127.0.0.1:$standby_port (streaming; PostgreSQL $PG_SERVER_MAJOR, in $dir)"
            return 0
        fi
        sleep 0.5
    done
    tail -n 30 "$dir/standby.log" >&2 || true
    die "the standby on 127.0.0.1:$standby_port does not stream from the primary (in recovery | WAL receiver: ${state:-no answer}; log $dir/standby.log)"
}

# stop_private_replica_pair DIR: stop the standby, then the primary (fast
# shutdown: open sessions are cut). The standby first, so it does not spend its
# last moments retrying a primary that went away. Members that are not running
# (or were never made) are skipped.
stop_private_replica_pair() {
    local dir=${1:?usage: stop_private_replica_pair DIR}
    if [[ ! -d $dir ]]; then
        log "Replica pair: nothing in $dir"
        return 0
    fi
    dir="$(cd "$dir" && pwd)" || die "cannot enter $dir"
    local name data bin
    for name in standby primary; do
        data="$dir/$name"
        if [[ ! -f $data/PG_VERSION ]]; then
            log "Replica pair: no $name in $dir"
            continue
        fi
        # The server binaries of the version that made the cluster, else the newest.
        bin="/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin"
        if [[ ! -x $bin/pg_ctl ]]; then
            bin="$(pg_bin_dir)" || die "no PostgreSQL server binaries found to stop $data"
        fi
        if as_pg_owner_in "$dir" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            log "pg_ctl stop $name (fast)"
            as_pg_owner_in "$dir" "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null \
                || die "could not stop the $name in $data (log $dir/$name.log)"
        else
            log "Replica pair: $name not running"
        fi
    done
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
# MASTER_KEY_FILE: the master key that seals personal data (README, "Personal data"). Unset,
# a key is made once, kept outside the repository and the database, readable by this user only
# ($XDG_DATA_HOME/cqrs-bank/master.key), and used from then on: losing it makes every sealed
# name and reason read as forgotten.
ensure_master_key() {
    if [[ -n ${MASTER_KEY_FILE:-} ]]; then
        [[ -r $MASTER_KEY_FILE ]] || die "MASTER_KEY_FILE=$MASTER_KEY_FILE cannot be read"
        return 0
    fi
    local dir="${XDG_DATA_HOME:-$HOME/.local/share}/cqrs-bank"
    MASTER_KEY_FILE="$dir/master.key"
    if [[ ! -s $MASTER_KEY_FILE ]]; then
        mkdir -p "$dir"
        if ! (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$MASTER_KEY_FILE.tmp"); then
            die "cannot write a master key to $MASTER_KEY_FILE"
        fi
        mv "$MASTER_KEY_FILE.tmp" "$MASTER_KEY_FILE"
        log "made a master key for personal data: $MASTER_KEY_FILE (back it up apart from the database)"
    fi
    export MASTER_KEY_FILE
}

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
