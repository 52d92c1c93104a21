#!/usr/bin/env bash
# Class path of a real Apache Kafka 4.x broker (KRaft) for the integration tests,
# resolved from Maven Central with tools/kafka/pom.xml. Nothing needs to be
# installed beforehand but Java 17+ and Maven.
#
#   scripts/kafka.sh fetch   resolve the jars if the libs folder is missing or
#                            incomplete (idempotent, safe to run concurrently);
#                            prints the libs folder on stdout, last line
#   scripts/kafka.sh path    print the libs folder, fetch nothing (exit 1 if
#                            it is not complete)
#
# Where:   ${XDG_CACHE_HOME:-~/.cache}/traceo-sampler/kafka-<version>/libs
# Version: KAFKA_VERSION, default the <kafka.version> of tools/kafka/pom.xml.
# Other knobs: KAFKA_FETCH_TIMEOUT (seconds, default 1200) bounds the Maven run
# and the wait for another fetch holding the lock. Maven's downloads stay in
# ~/.m2, so a refetch after the cache folder was removed is fast.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POM="$ROOT/tools/kafka/pom.xml"
MARKER_NAME=.traceo-kafka-complete

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

[[ -f "$POM" ]] || die "missing $POM"

default_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1
}
VERSION=${KAFKA_VERSION:-$(default_version)}
[[ -n "$VERSION" ]] || die "cannot read <kafka.version> from $POM"
[[ "$VERSION" =~ ^[0-9A-Za-z._-]+$ ]] || die "bad KAFKA_VERSION: $VERSION"
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler
BASE="$CACHE_ROOT/kafka-$VERSION"
LIBS="$BASE/libs"
MARKER="$LIBS/$MARKER_NAME"
TIMEOUT=${KAFKA_FETCH_TIMEOUT:-1200}

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

# The marker is written last. It records the version, the pom's digest (a
# changed pom means another set of jars) and every jar, each of which must
# still be there and be non-empty.
is_complete() {
    [[ -f "$MARKER" ]] || return 1
    local line n=0
    { read -r line && [[ "$line" == "version=$VERSION" ]] &&
      read -r line && [[ "$line" == "pom-sha256=$(pom_digest)" ]]; } < "$MARKER" || return 1
    while read -r line; do
        [[ "$line" == jar=* ]] || continue
        [[ -s "$LIBS/${line#jar=}" ]] || return 1
        n=$((n + 1))
    done < "$MARKER"
    [[ $n -gt 0 && -f "$LIBS/kafka_2.13-$VERSION.jar" ]] || return 1
}

check_tools() {
    command -v java >/dev/null || die "java not found on PATH (the Kafka 4.x broker needs Java 17+)"
    command -v mvn >/dev/null || die "mvn not found on PATH (needed to resolve the Kafka jars from Maven Central)"
    local v
    v=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    [[ "${v%%.*}" =~ ^[0-9]+$ && "${v%%.*}" -ge 17 ]] || die "Kafka $VERSION needs Java 17+, found java.specification.version=${v:-?}"
}

fetch() {
    if is_complete; then echo "$LIBS"; return 0; fi
    check_tools
    mkdir -p "$BASE"
    # One fetch at a time per version (parallel test runs share the cache).
    exec 9>"$BASE/.lock"
    flock -w "$TIMEOUT" 9 || die "timed out after ${TIMEOUT}s waiting for another fetch ($BASE/.lock)"
    if is_complete; then echo "$LIBS"; return 0; fi

    local tmp mvnlog start
    tmp=$(mktemp -d "$BASE/libs.tmp.XXXXXX")
    mvnlog="$BASE/fetch.log"
    trap 'rm -rf "$tmp"' EXIT
    log "resolving Apache Kafka $VERSION jars with Maven (first time: ~1 min) ..."
    start=$SECONDS
    if ! timeout --kill-after=10 "$TIMEOUT" \
            mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$VERSION" \
                dependency:copy-dependencies -DoutputDirectory="$tmp" \
                </dev/null >"$mvnlog" 2>&1; then
        tail -n 40 "$mvnlog" | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
        die "Maven could not resolve org.apache.kafka:kafka_2.13:$VERSION (full log: $mvnlog)"
    fi
    [[ -s "$tmp/kafka_2.13-$VERSION.jar" ]] || die "Maven finished but $tmp/kafka_2.13-$VERSION.jar is missing (log: $mvnlog)"
    ls "$tmp"/log4j-slf4j*-impl-*.jar >/dev/null 2>&1 ||
        die "no log4j SLF4J binding among the jars: the broker would not log (check $POM)"

    {
        echo "version=$VERSION"
        echo "pom-sha256=$(pom_digest)"
        (cd "$tmp" && for j in *.jar; do echo "jar=$j"; done)
    } > "$tmp/$MARKER_NAME.part"
    mv "$tmp/$MARKER_NAME.part" "$tmp/$MARKER_NAME"   # marker last
    chmod 755 "$tmp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    trap - EXIT
    log "$(ls "$LIBS"/*.jar | wc -l) jars in $LIBS ($((SECONDS - start))s)"
    echo "$LIBS"
}

case "${1:-}" in
    fetch) fetch ;;
    path)  is_complete || die "no complete Kafka $VERSION libs in $LIBS (run: $0 fetch)"; echo "$LIBS" ;;
    ""|-h|--help|help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" ;;
    *) die "unknown command: $1 (try: fetch, path)" ;;
esac
