# Sourced by scripts/helm.sh, jaeger.sh and otelcol.sh: the build-once cache of a
# Go-built tool binary they share. Each script sets what differs (name, version,
# how to build) and calls these; stdout carries only the binary's path.

# The cache every tool binary lands in.
gotool_bindir="${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/bin"

# gotool_module_version SCRIPT GO_MOD MODULE: the version GO_MOD pins MODULE at
# (its require line); exits 1 naming SCRIPT when there is none.
gotool_module_version() {
  local script="$1" gomod="$2" module="$3" v
  v="$(awk -v m="$module" '$1 == m { print $2; exit }' "$gomod")"
  if [[ -z "$v" ]]; then
    echo "$script: cannot find the $module version in $gomod" >&2
    exit 1
  fi
  echo "$v"
}

# gotool_build SCRIPT BIN LOCK WHAT BUILD_FN [force]: print BIN, building it first
# when it is missing (or when forced). Concurrent callers (parallel test workers)
# are serialised on the lock file LOCK and re-check after taking it. BUILD_FN is
# called in a subshell with a temporary path to write the binary to, its output
# on stderr; the binary is moved into place only once it is complete.
gotool_build() {
  local script="$1" bin="$2" lock="$3" what="$4" build_fn="$5" force="${6:-}"
  if [[ -z "$force" && -x "$bin" ]]; then echo "$bin"; return 0; fi
  command -v go >/dev/null 2>&1 || { echo "$script: 'go' not found on PATH; Go is needed to build $what" >&2; exit 1; }
  mkdir -p "$(dirname "$bin")"
  exec 9>"$lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [[ -z "$force" && -x "$bin" ]]; then echo "$bin"; return 0; fi
  local tmp="$bin.tmp.$$"
  # shellcheck disable=SC2064  # expand now: the path of this build
  trap "rm -f '$tmp'" EXIT
  echo "$script: building $what -> $bin (first time takes minutes)" >&2
  local t0=$SECONDS
  ( "$build_fn" "$tmp" ) >&2
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "$script: built in $((SECONDS - t0))s" >&2
  echo "$bin"
}
