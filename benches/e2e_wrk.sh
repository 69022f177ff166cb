#!/bin/bash
# End-to-end load: each mode of examples/load.rs under wrk on loopback,
# reporting requests/s and server CPU time per request.
# usage: bash benches/e2e_wrk.sh ROUNDS SECONDS   (needs wrk and curl)
# Build first: cargo build --release --example load
BIN=${BIN:-target/release/examples/load}
port=3200
for round in $(seq 1 $1); do
for route in read write create; do
for mode in bare session tower-sessions; do
  port=$((port+1))
  $BIN $mode $port > /tmp/load_$mode.out 2>&1 &
  spid=$!
  for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$port/read && break; sleep 0.1; done
  C=$(curl -si http://127.0.0.1:$port/create | grep -i '^set-cookie' | sed 's/.*\(id=[^;]*\).*/\1/' | tr -d '\r')
  [ -z "$C" ] && C="id=none"
  if [ $route = create ]; then
    rps=$(wrk -t1 -c32 -d${2}s http://127.0.0.1:$port/$route | awk '/Requests\/sec/ {print $2}')
  else
    rps=$(wrk -t1 -c32 -d${2}s -H "Cookie: $C" http://127.0.0.1:$port/$route | awk '/Requests\/sec/ {print $2}')
  fi
  kill -INT $spid; wait $spid
  us=$(awk '/CPU per request/ {print $3}' /tmp/load_$mode.out)
  n=$(awk '/requests,/ {print $3}' /tmp/load_$mode.out)
  echo "round=$round route=$route mode=$mode rps=$rps requests=$n cpu_us_per_req=$us"
done; done; done
