# Shared by the bench scripts: the realistic image, timing and peak memory.
# Run as root: debootstrap, chroot and a non-rootless umoci need it (berth itself does not).

BENCH=${BERTH_BENCH_DIR:-/var/tmp/berth-bench}
# Debian's own python3 and charliecloud, whatever else is on PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin USER=${USER:-root}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH=("$(command -v node)" "$REPO/dist/berth.cjs")

need() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Debian 12 minbase, then python3, then numpy: three layers, built once and cached.
bench_image() {
  local oci=$BENCH/oci
  [ -f "$BENCH/image.done" ] && return
  need debootstrap umoci
  rm -rf "$oci" "$BENCH/bundle" "$BENCH/rootfs"
  debootstrap --variant=minbase bookworm "$BENCH/rootfs" >/dev/null
  umoci init --layout "$oci"
  umoci new --image "$oci:bench"
  umoci unpack --image "$oci:bench" "$BENCH/bundle"
  cp -a "$BENCH/rootfs/." "$BENCH/bundle/rootfs/"
  umoci repack --refresh-bundle --image "$oci:bench" "$BENCH/bundle"
  for pkgs in python3 python3-numpy; do
    mount -t proc proc "$BENCH/bundle/rootfs/proc"
    chroot "$BENCH/bundle/rootfs" sh -c "apt-get install -y -qq --no-install-recommends $pkgs >/dev/null && apt-get clean"
    umount "$BENCH/bundle/rootfs/proc"
    umoci repack --refresh-bundle --image "$oci:bench" "$BENCH/bundle"
  done
  umoci config --image "$oci:bench" --config.cmd python3
  # The floor's input: the same final tree as one already-merged tar.
  tar -C "$BENCH/bundle/rootfs" --numeric-owner --xattrs -cf "$BENCH/merged.tar" .
  touch "$BENCH/image.done"
}

# Runs a command; prints "seconds peak_rss_kb cpu_seconds": peak RSS is the largest of the
# process and its descendants, sampled from /proc (VmHWM is a high-water mark, so sampling loses
# little); cpu is the user + system time of the whole tree, which on two cores says how much of
# the wall time is work and how much waiting.
measure() {
  local start end pid peak=0
  start=$(date +%s.%N)
  ( "$@"; status=$?; times > "$BENCH/last.times"; exit $status ) >/dev/null 2>"$BENCH/last.err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for p in $pid $(pgrep -d' ' -P "$pid") $(for c in $(pgrep -P "$pid"); do pgrep -P "$c"; done); do
      local hwm
      hwm=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
      [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    done
    sleep 0.05
  done
  wait "$pid" || { echo "failed: $*" >&2; cat "$BENCH/last.err" >&2; return 1; }
  end=$(date +%s.%N)
  # times' second line: the children's user and system time, as "0m1.234s 0m0.056s".
  local cpu
  cpu=$(sed -n 2p "$BENCH/last.times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%.2f", n }')
  echo "$(echo "$end - $start" | bc) $peak $cpu"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# A TLS registry on loopback holding the bench image (Charliecloud pulls only over https).
registry_up() {
  mkdir -p "$BENCH/registry"
  [ -f "$BENCH/registry/cert.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$BENCH/registry/key.pem" -out "$BENCH/registry/cert.pem" 2>/dev/null
  cat > "$BENCH/registry/config.yml" <<EOF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $BENCH/registry/data } }
http: { addr: "127.0.0.1:5443", tls: { certificate: $BENCH/registry/cert.pem, key: $BENCH/registry/key.pem } }
EOF
  docker-registry serve "$BENCH/registry/config.yml" >"$BENCH/registry/log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 50); do skopeo inspect --tls-verify=false docker://127.0.0.1:5443/none:x >/dev/null 2>&1 && break
    grep -q 'listening' "$BENCH/registry/log" && break; sleep 0.1; done
  skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH/oci:bench" docker://127.0.0.1:5443/bench:latest
}

# ch-image's --tls-no-verify is not honoured in 0.31; trusting the test certificate works.
export CH_IMAGE_STORAGE=$BENCH/ch REQUESTS_CA_BUNDLE=$BENCH/registry/cert.pem
ch_pull() { rm -rf "$BENCH/ch"; ch-image pull 127.0.0.1:5443/bench:latest; }

# Prints "seconds peak_rss_kb cpu_seconds" of ch-image pull + ch-convert into $1.
charliecloud_pull_convert() {
  local t r c t2 r2 c2
  read -r t r c < <(measure ch_pull)
  rm -f "$1"
  read -r t2 r2 c2 < <(measure ch-convert -i ch-image -o squash 127.0.0.1:5443/bench:latest "$1")
  echo "$(echo "$t + $t2" | bc) $(( r > r2 ? r : r2 )) $(echo "$c + $c2" | bc)"
}
