# Shared by the end-to-end bench scripts: a throwaway redis-server on loopback,
# filled with the data set of benches/dataset.py, and timing helpers.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_redis DIR [SERVER] -> sets REDIS_PORT, REDIS_PID. SERVER is a
# redis-server binary (default: Debian's); before 7.0 DEBUG needs no option.
start_redis() {
  local dir=$1 bin=${2:-redis-server} debug=(--enable-debug-command yes)
  "$bin" --version | grep -q 'v=[56]\.' && debug=()
  REDIS_PORT=$(free_port)
  "$bin" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --repl-diskless-sync-delay 0 "${debug[@]}" --daemonize no \
    --logfile "$dir/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start; see $dir/redis.log" >&2
  return 1
}

stop_redis() {
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
}

# fill_redis KEYS
fill_redis() {
  python3 "$(dirname "${BASH_SOURCE[0]}")/dataset.py" --keys "$1" | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
}

# timed OUTVAR_SECONDS OUTVAR_RSS_KB cmd... : wall seconds and peak RSS of one command
timed() {
  local __s=$1 __r=$2; shift 2
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@"
  read -r secs rss < "$tf"; rm -f "$tf"
  printf -v "$__s" '%s' "$secs"; printf -v "$__r" '%s' "$rss"
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b if b else float('inf')))" "$1" "$2"; }
