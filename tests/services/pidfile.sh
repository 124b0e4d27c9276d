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

# Waits up to SECONDS for the script's `answers` to succeed while the server runs; on failure
# shows the tail of the LOG files.   wait_until_answers SECONDS LABEL LOG...
wait_until_answers() {
  local seconds=$1 label=$2
  shift 2
  for _ in $(seq 1 $((seconds * 2))); do
    if answers; then
      echo "$label running"
      return 0
    fi
    if ! running; then
      tail -n 40 "$@" >&2 || true
      echo "$label exited during start (log: $1)" >&2
      return 1
    fi
    sleep 0.5
  done
  tail -n 40 "$@" >&2 || true
  echo "$label did not answer within $seconds s (log: $1)" >&2
  return 1
}
