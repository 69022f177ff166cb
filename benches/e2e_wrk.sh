#!/bin/bash
# End-to-end load: each mode of examples/load.rs under wrk on loopback,
# reporting requests/s and server CPU time per request, then a summary
# (mean over the rounds, and the ratio to `bare`, the same app with no layer).
#
# usage: bash benches/e2e_wrk.sh [ROUNDS [SECONDS [MODE...]]]   (default 3 5, all modes)
#   modes: bare minimal session tower-sessions axum-session; a mode may be
#     given as MODE@BINARY to compare builds (e.g. session@/tmp/load_before)
#   ROUTES="read write create" (default): the routes to drive.
#   SESSIONS=512 (default): read and write traffic goes round that many
#     sessions, one after the other (a wrk Lua script), as real traffic
#     spreads over many sessions; SESSIONS=1 puts it all on one hot session.
#   BIN=...: the load binary (default target/release/examples/load).
# Needs wrk (installed with apt-get if missing) and curl. Run by hand, not in CI.
# Build first: cargo build --release --example load
set -u
ROUNDS=${1:-3}
SECS=${2:-5}
shift 2 2>/dev/null
MODES=${*:-bare minimal session tower-sessions axum-session}
SESSIONS=${SESSIONS:-512}
ROUTES=${ROUTES:-read write create}
BIN=${BIN:-target/release/examples/load}
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } || exit 1
fi
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release --example load" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# CPU ticks (user + system, 1/100 s) of process $1, fields 14 and 15.
ticks() { sed 's/.*) //' /proc/$1/stat | awk '{print $12 + $13}'; }

# $1 port: makes $SESSIONS sessions with one curl (one connection) and writes
# the Cookie header values that send them back, one a line, to stdout. A
# response's Set-Cookie name=value pairs are joined with "; ".
make_sessions() {
  local urls=() i
  for i in $(seq 1 $SESSIONS); do urls+=(-o /dev/null "http://127.0.0.1:$1/create"); done
  curl -s -D - "${urls[@]}" | tr -d '\r' | awk '
    /^HTTP\// { if (n++) print c; c = "" }
    tolower($0) ~ /^set-cookie:/ { sub(/^[^:]*: */, ""); sub(/;.*/, ""); c = (c == "" ? $0 : c "; " $0) }
    END { if (n) print c }'
}

# The wrk script: each request sends the next cookie of $1 (a file).
lua_for() {
  { echo 'local cookies = {'
    sed 's/.*/  "&",/' "$1"
    echo '}'
    echo 'local i = 0'
    echo 'request = function()'
    echo '  i = i % #cookies + 1'
    echo '  return wrk.format(nil, nil, { ["Cookie"] = cookies[i] })'
    echo 'end'
  } > "$1.lua"
}

# bare sets no cookie: made-up ids of the same shape, which it ignores.
for i in $(seq 1 $SESSIONS); do echo "id=$(cat /proc/sys/kernel/random/uuid)"; done > "$work/bare.cookies"
lua_for "$work/bare.cookies"

echo "sessions=$SESSIONS rounds=$ROUNDS seconds=$SECS modes: $MODES"
port=3200
for round in $(seq 1 $ROUNDS); do
for route in $ROUTES; do
for entry in $MODES; do
  mode=${entry%%@*}; bin=$BIN; [ "$entry" != "$mode" ] && bin=${entry#*@}
  port=$((port+1))
  $bin $mode $port > "$work/$mode.out" 2>&1 &
  spid=$!
  for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$port/read && break; sleep 0.1; done
  lua=$work/bare.cookies.lua
  if [ $mode != bare ]; then
    make_sessions $port > "$work/$mode.cookies"
    if [ "$(grep -c . "$work/$mode.cookies")" -ne "$SESSIONS" ]; then
      echo "mode $mode: could not make $SESSIONS sessions" >&2; kill -INT $spid; exit 1
    fi
    lua_for "$work/$mode.cookies"
    lua=$work/$mode.cookies.lua
  fi
  before=$(ticks $spid)
  if [ $route = create ]; then
    out=$(wrk -t1 -c32 -d${SECS}s http://127.0.0.1:$port/$route)
  else
    out=$(wrk -t1 -c32 -d${SECS}s -s "$lua" http://127.0.0.1:$port/$route)
  fi
  after=$(ticks $spid)
  kill -INT $spid; wait $spid
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  us=$(awk -v t=$((after - before)) -v n=$n 'BEGIN { printf "%.2f", t * 10000 / n }')
  echo "round=$round route=$route mode=$entry rps=$rps requests=$n non2xx=${bad:-0} cpu_us_per_req=$us"
done; done; done | tee "$work/lines"

echo
echo "server CPU µs per request, mean of $ROUNDS rounds (ratio to bare), $SESSIONS session(s):"
awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
       k = f["route"] " " f["mode"]; sum[k] += f["cpu_us_per_req"]; cnt[k]++
       if (!(f["mode"] in seen)) { seen[f["mode"]] = 1; modes[++m] = f["mode"] } }
     END {
           n = split("'"$ROUTES"'", routes, " ")
           printf "%-8s", "route"; for (j = 1; j <= m; j++) printf " %22s", modes[j]; print ""
           for (r = 1; r <= n; r++) {
             b = sum[routes[r] " bare"] / cnt[routes[r] " bare"]
             printf "%-8s", routes[r]
             for (j = 1; j <= m; j++) { k = routes[r] " " modes[j]; v = sum[k] / cnt[k]
               if (b > 0) printf " %13.2f (%5.3fx)", v, v / b; else printf " %22.2f", v }
             print "" } }' "$work/lines"
