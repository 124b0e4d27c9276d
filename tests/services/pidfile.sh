# Process handling shared by the service scripts (sourced): each keeps its server's pid in
# "$pidfile".

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# SIGTERM, wait up to 30 s for a clean shutdown, then SIGKILL.
stop() {
  running || { rm -f "$pidfile"; return 0; }
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# SIGKILL at once, as a crash or a pulled cable would.
crash() {
  running && kill -9 "$(cat "$pidfile")" 2>/dev/null
  rm -f "$pidfile"
}
