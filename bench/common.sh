# Shared by the bench scripts (sourced, not run): a temp dir and pid list
# cleaned up on exit, loopback port helpers, the release build of the
# gateway, an nginx backend answering like a Kylin node, and nginx and
# HAProxy as the proxies to measure against.
# Needs `root` and `work` set by the caller. KEEP_WORK=1 keeps the temp dir
# (callgrind profiles, logs) for a look afterwards.

pids=()
# Command prefixes that pin the proxies and the load (the backend, wrk) to
# CPUs of their own (proxy.sh PIN=yes); empty: not pinned.
on_proxy_cpu=()
on_load_cpu=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "bench: $1 is not installed" >&2; exit 1; }; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: nothing listens on port $1" >&2
    exit 1
}

# Fails the run, loudly, unless one request answers 2xx: a target that
# answers errors (or redirects, which wrk does not count as errors) would
# otherwise be measured as throughput. $1 names the target; the rest are
# curl arguments (URL, method, body).
expect_2xx() {
    local name=$1
    shift
    local status
    status=$(curl -s -o "$work/probe-body" -w '%{http_code}' "$@") || status="no answer (curl $?)"
    case "$status" in
    2??) ;;
    *)
        echo "bench: FAILED: $name answered $status, not 2xx:" >&2
        head -c 2000 "$work/probe-body" >&2 2>/dev/null || true
        echo >&2
        exit 1
        ;;
    esac
}

# Fails the run, loudly, if wrk's output ($2, for target $1) reports
# responses that are not 2xx/3xx or socket errors (connect, read, write,
# timeout), or no request at all: the rate would count errors as throughput.
check_wrk() {
    local name=$1 out=$2
    if grep -Eq 'Non-2xx|Socket errors' "$out" || ! grep -q 'requests in' "$out"; then
        echo "bench: FAILED: $name: wrk saw failed requests; its numbers are not a measurement:" >&2
        cat "$out" >&2
        exit 1
    fi
}

# Fails the run, loudly, unless h2load's output ($1) shows requests, all
# of them answered 2xx: as check_wrk, for HTTP/2.
check_h2load() {
    if ! awk '/^requests:/ { ok = $8 > 0 && $10 == 0 && $12 == 0 }
              /^status codes:/ { ok = ok && $5 == 0 && $7 == 0 && $9 == 0 }
              END { exit !ok }' "$1"; then
        echo "bench: FAILED: h2load saw failed requests:" >&2
        cat "$1" >&2
        exit 1
    fi
}

# Builds the release gateway and prints its path.
release_gateway() {
    echo "building kylin-gateway (release)..." >&2
    cargo build --release -p kylin-gateway --manifest-path "$root/Cargo.toml" >&2
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    echo "$target_dir/release/kylin-gateway"
}

# Starts nginx on 127.0.0.1:$1 returning a small fixed JSON body to any
# request, as a Kylin node would; its files live in $work/nginx.
start_nginx() {
    local port=$1
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 200 '{"code":"000","data":[{"name":"learn_kylin"}],"msg":""}';
        }
    }
}
CONF
    "${on_load_cpu[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr.log" &
    pids+=($!)
}

# Starts nginx on 127.0.0.1:$1 as a reverse proxy to 127.0.0.1:$2 (one
# process, upstream keep-alive): the proxy to measure against. $3: more
# directives for its http block. $! is its pid.
start_nginx_proxy() {
    local port=$1 backend=$2 extra=${3:-} dir="$work/nginx-proxy"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    $extra
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream kylin {
        server 127.0.0.1:$backend;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://kylin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    "${on_proxy_cpu[@]}" nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    pids+=($!)
}

# Starts HAProxy on 127.0.0.1:$1 as a reverse proxy to 127.0.0.1:$2 (one
# process, server connections reused by every client: http-reuse always),
# with client and server timeouts of $3 and $4 seconds. $! is its pid.
start_haproxy() {
    local port=$1 backend=$2 client_s=$3 server_s=$4
    cat >"$work/haproxy.cfg" <<CONF
global
    maxconn 8192
defaults
    mode http
    timeout connect 1s
    timeout client ${client_s}s
    timeout server ${server_s}s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:$port
    default_backend kylin
backend kylin
    http-reuse always
    server node 127.0.0.1:$backend
CONF
    "${on_proxy_cpu[@]}" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
    pids+=($!)
}

# Writes a static-discovery gateway config with one node to file $1.
gateway_config() {
    local file=$1 http_port=$2 admin_port=$3 node_port=$4
    cat >"$file" <<CONF
[listen]
http = "127.0.0.1:$http_port"
admin = "127.0.0.1:$admin_port"
[discovery]
kind = "static"
[[discovery.nodes]]
address = "127.0.0.1:$node_port"
mode = "all"
leader = true
CONF
}

# Writes a self-signed P-256 certificate for 127.0.0.1 and its key to
# $work/tls.pem and $work/tls.key (serve_tls's arguments).
self_signed_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
}

# Turns gateway config $1 (gateway_config's) into one that serves its
# `http` port with TLS, certificate $2 and key $3; given a port $4, it serves
# TLS there instead, beside the plaintext `http` port.
serve_tls() {
    local file=$1 cert=$2 key=$3 https_port=${4:-}
    if [ -n "$https_port" ]; then
        sed -i "/^http = /a https = \"127.0.0.1:$https_port\"" "$file"
    else
        sed -i 's/^http = /https = /' "$file"
    fi
    cat >>"$file" <<CONF
[tls]
cert = "$cert"
key = "$key"
CONF
}

# The Kylin query bench/proxy.sh and bench/ab.sh post (the class routing
# plugins see).
query_body='{"project":"learn_kylin","sql":"select part_dt, sum(price) from kylin_sales group by part_dt","limit":500}'

# Writes to file $1 the wrk script that posts $query_body.
write_post_lua() {
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = '$query_body'
wrk.headers["Content-Type"] = "application/json"
EOF
}

# The query-affinity build the bench scripts load (relative to $root),
# unless PLUGIN names another.
PLUGIN=${PLUGIN:-plugins/target/wasm32-wasip2/release/query_affinity.wasm}

# The request to load the gateway with: with POST=yes the Kylin query
# ($query_body, posted by the wrk script $work/post.lua), else a GET.
# Sets REQUEST_PATH (unless given), request_method, wrk_script (wrk's
# arguments), probe_args (curl's, for expect_2xx) and h2load_body (h2load's).
choose_request() {
    wrk_script=() probe_args=() h2load_body=()
    if [ "${POST:-no}" = yes ]; then
        REQUEST_PATH=${REQUEST_PATH:-/kylin/api/query}
        request_method=POST
        write_post_lua "$work/post.lua"
        wrk_script=(-s "$work/post.lua")
        probe_args=(-H 'Content-Type: application/json' --data "$query_body")
        printf '%s' "$query_body" >"$work/body.json"
        h2load_body=(-d "$work/body.json" -H 'content-type: application/json')
    else
        REQUEST_PATH=${REQUEST_PATH:-/kylin/api/projects}
        request_method=GET
    fi
}

# A target is a gateway binary BIN, BIN+affinity (that binary with the
# query-affinity plugin, $PLUGIN) or BIN+plugin=FILE (with the plugin FILE,
# e.g. plugins/target/wasm32-wasip2/release/misbehave.wasm, which does
# nothing with this config: a plugin call's bare cost).
target_bin() { echo "${1%%+*}"; }

target_plugin() {
    case $1 in
        *+affinity) echo "$PLUGIN" ;;
        *+plugin=*) echo "${1#*+plugin=}" ;;
    esac
}

# gateway_config for target $1 (see target_bin). The other arguments are
# gateway_config's.
target_config() {
    local plugin
    plugin=$(target_plugin "$1")
    shift
    gateway_config "$@"
    if [ -n "$plugin" ]; then
        add_plugin "$1" "$plugin"
    fi
}

# Appends to gateway config $1 the plugin at $2 (relative to $root, or
# absolute; plugins/ built first if missing) with query-affinity's config,
# deciding every query.
add_plugin() {
    local file=$1 plugin=$2
    case $plugin in /*) ;; *) plugin=$root/$plugin ;; esac
    if [ ! -f "$plugin" ]; then
        (cd "$root/plugins" && cargo build --release --target wasm32-wasip2 >&2)
    fi
    cat >>"$file" <<EOF
[[plugins]]
name = "affinity"
path = "$plugin"
config = '{"hash": "project+sql"}'
EOF
}
