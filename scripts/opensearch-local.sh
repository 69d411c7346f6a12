#!/usr/bin/env bash
# A real single-node OpenSearch 2.19.1 with the k-NN plugin, without Docker.
#
#   scripts/opensearch-local.sh provision        # download + assemble once (cached)
#   scripts/opensearch-local.sh start [PORT]     # start on 127.0.0.1:PORT, wait for health
#   scripts/opensearch-local.sh stop [PORT]
#   scripts/opensearch-local.sh start-cluster [PORT] [N]  # N nodes (default 3) on PORT..PORT+N-1
#   scripts/opensearch-local.sh stop-cluster [PORT] [N]
#   scripts/opensearch-local.sh kill-node PORT             # kill -9 one node (fault tests)
#   scripts/opensearch-local.sh start-node PORT BASE N     # (re)start one node of a cluster
#
# Assembled from Maven Central: the integ-test distribution, lang-painless as a module (k-NN
# extends it) and the k-NN plugin (lucene engine; the Maven zip carries no faiss/nmslib
# natives). OpenSearch refuses to run as root, so it runs as the unprivileged user `opensearch`.
set -euo pipefail

OS_VERSION=${RAG_OPENSEARCH_VERSION:-2.19.1}
KNN_VERSION=${RAG_OPENSEARCH_KNN_VERSION:-${OS_VERSION}.0}
if [ "$(id -u)" -eq 0 ]; then DEFAULT_CACHE=/var/cache/rag-opensearch; else
  DEFAULT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/rag-opensearch; fi
CACHE=${RAG_OPENSEARCH_CACHE:-$DEFAULT_CACHE/$OS_VERSION}
RUN_ROOT=${RAG_OPENSEARCH_RUN:-/tmp/rag-opensearch}
HEAP=${RAG_OPENSEARCH_HEAP:-768m}
MDP=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
HOME_DIR=$CACHE/opensearch-$OS_VERSION
RUN_USER=opensearch

java_home() {
  for j in "${JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 \
           /usr/lib/jvm/temurin-17-jdk-amd64; do
    if [ -n "$j" ] && [ -x "$j/bin/java" ] && "$j/bin/java" -version 2>&1 | grep -q '"17\.'; then
      echo "$j"; return; fi
  done
  echo "opensearch-local: Java 17 not found (set JAVA_HOME)" >&2; exit 1
}

PROVISIONED=$CACHE/.provisioned-v2  # bump when the assembly changes

provision() {
  if [ -f "$PROVISIONED" ]; then return; fi
  mkdir -p "$(dirname "$CACHE")"
  exec 9>"$CACHE.lock"
  flock 9  # one provisioner at a time; the others wait and find it done
  if [ -f "$PROVISIONED" ]; then return; fi
  command -v mvn >/dev/null || { echo "opensearch-local: maven is required" >&2; exit 1; }
  rm -rf "$CACHE"; mkdir -p "$CACHE/dl" "$CACHE/pl"
  for artifact in "org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip" \
                  "org.opensearch.plugin:opensearch-knn:$KNN_VERSION:zip"; do
    mvn -B -q "$MDP:copy" -Dartifact="$artifact" -DoutputDirectory="$CACHE/dl"
  done
  unzip -q "$CACHE/dl/opensearch-$OS_VERSION.zip" -d "$CACHE"
  cat > "$CACHE/pl/pom.xml" <<POM
<project><modelVersion>4.0.0</modelVersion><groupId>rag</groupId><artifactId>painless</artifactId>
<version>1</version><dependencies><dependency><groupId>org.opensearch.plugin</groupId>
<artifactId>lang-painless</artifactId><version>$OS_VERSION</version><exclusions><exclusion>
<groupId>org.opensearch</groupId><artifactId>*</artifactId></exclusion></exclusions></dependency>
</dependencies></project>
POM
  local module=$HOME_DIR/modules/lang-painless
  mkdir -p "$module"
  mvn -B -q -f "$CACHE/pl/pom.xml" "$MDP:copy-dependencies" -DincludeScope=runtime \
      -DoutputDirectory="$module"
  local clash; clash=$(comm -12 <(ls "$HOME_DIR/lib") <(ls "$module"))
  if [ -n "$clash" ]; then echo "opensearch-local: jar hell: $clash" >&2; exit 1; fi
  local cls
  cls=$(unzip -l "$module/lang-painless-$OS_VERSION.jar" \
        | grep -oE 'org/opensearch/painless/PainlessModulePlugin\.class|org/opensearch/painless/PainlessPlugin\.class' \
        | head -1 | sed 's#/#.#g;s#\.class$##')
  printf 'name=lang-painless\ndescription=painless\nversion=%s\nopensearch.version=%s\njava.version=11\nclassname=%s\n' \
    "$OS_VERSION" "$OS_VERSION" "$cls" > "$module/plugin-descriptor.properties"
  printf 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n  permission java.lang.RuntimePermission "getClassLoader";\n};\n' \
    > "$module/plugin-security.policy"
  # analysis-common (language analyzers such as "english" for BM25), also as a module
  local common=$HOME_DIR/modules/analysis-common
  mkdir -p "$common"
  sed "s#<artifactId>lang-painless</artifactId>#<artifactId>analysis-common</artifactId>#" \
    "$CACHE/pl/pom.xml" > "$CACHE/pl/common.xml"
  mvn -B -q -f "$CACHE/pl/common.xml" "$MDP:copy-dependencies" -DincludeScope=runtime \
      -DoutputDirectory="$common"
  printf 'name=analysis-common\ndescription=analysis-common\nversion=%s\nopensearch.version=%s\njava.version=11\nclassname=org.opensearch.analysis.common.CommonAnalysisPlugin\nextended.plugins=lang-painless\n' \
    "$OS_VERSION" "$OS_VERSION" > "$common/plugin-descriptor.properties"
  JAVA_HOME=$(java_home) OPENSEARCH_JAVA_HOME=$(java_home) \
    "$HOME_DIR/bin/opensearch-plugin" install --batch "file://$CACHE/dl/opensearch-knn-$KNN_VERSION.zip" >/dev/null
  cat >> "$HOME_DIR/config/opensearch.yml" <<YML
cluster.name: rag-local
discovery.type: single-node
network.host: 127.0.0.1
bootstrap.system_call_filter: false
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
YML
  rm -rf "$CACHE/dl" "$CACHE/pl"
  touch "$PROVISIONED"
}

ensure_user() {
  if [ "$(id -u)" -ne 0 ]; then return; fi
  id -u "$RUN_USER" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$RUN_USER"
}

as_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$RUN_USER" -- "$@"; else "$@"; fi
}

# start PORT [BASE N]: a single node, or node PORT of the N-node cluster on BASE..BASE+N-1
# (transport ports +100; every node cluster-manager-eligible and data; a restarted node keeps
# its data directory, so it rejoins with its shard copies)
start() {
  local port=${1:-9250} base=${2:-} nodes=${3:-1}
  provision
  ensure_user
  local run=$RUN_ROOT/$port
  if [ -z "$base" ] || [ ! -d "$run/data" ]; then
    rm -rf "$run"; mkdir -p "$run/data" "$run/logs" "$run/config"
  fi
  cp -r "$HOME_DIR/config/." "$run/config/"
  # Lucene reads vectors and HNSW graphs through mmap (as in production; with mmap off every
  # vector read is a pread: 5x slower k-NN at 1M chunks). vm.max_map_count is only a warning on
  # a loopback node. RAG_OPENSEARCH_MMAP=false turns it off (caches provisioned before wrote it).
  sed -i '/^node.store.allow_mmap:/d' "$run/config/opensearch.yml"
  if [ "${RAG_OPENSEARCH_MMAP:-true}" = false ]; then
    echo "node.store.allow_mmap: false" >> "$run/config/opensearch.yml"
  fi
  local extra=()
  if [ -n "$base" ]; then
    sed -i '/^discovery.type: single-node$/d' "$run/config/opensearch.yml"
    local seeds="" names="" i
    for i in $(seq 0 $((nodes - 1))); do
      seeds="$seeds${seeds:+,}127.0.0.1:$((base + 100 + i))"; names="$names${names:+,}n$((base + i))"
    done
    extra=(-Enode.name="n$port" -Ecluster.name="rag-cluster-$base" -Ediscovery.seed_hosts="$seeds"
           -Ecluster.initial_cluster_manager_nodes="$names")
  fi
  # jvm.options writes gc logs, error files and heap dumps relative to OPENSEARCH_HOME
  sed -i -e "s#file=logs/#file=$run/logs/#" -e "s#ErrorFile=logs/#ErrorFile=$run/logs/#" \
         -e "s#HeapDumpPath=data#HeapDumpPath=$run/data#" "$run/config/jvm.options"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R "$RUN_USER": "$run"
    chmod -R o+rX "$CACHE"
    # the opensearch user must be able to reach the cache through every parent directory
    local d=$CACHE; while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
  local jh; jh=$(java_home)
  as_user env JAVA_HOME="$jh" OPENSEARCH_JAVA_HOME="$jh" OPENSEARCH_PATH_CONF="$run/config" \
    OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP -XX:ActiveProcessorCount=2" \
    "$HOME_DIR/bin/opensearch" -d -p "$run/opensearch.pid" \
      -Ehttp.port="$port" -Etransport.port=$((port + 100)) \
      -Epath.data="$run/data" -Epath.logs="$run/logs" "${extra[@]}" >"$run/stdout.log" 2>&1
  if [ -n "$base" ]; then return; fi  # a cluster waits for all its nodes (wait_cluster)
  wait_health "$port" yellow
}

wait_health() {
  local port=$1 status=$2 run=$RUN_ROOT/$1 nodes=${3:-1}
  for _ in $(seq 180); do
    if curl -fs "http://127.0.0.1:$port/_cluster/health?wait_for_status=$status&wait_for_nodes=$nodes&timeout=1s" >/dev/null; then
      echo "opensearch-local: $status on 127.0.0.1:$port"; return; fi
    if [ -f "$run/opensearch.pid" ] && ! kill -0 "$(cat "$run/opensearch.pid")" 2>/dev/null; then break; fi
    sleep 1
  done
  echo "opensearch-local: failed to start; last log lines:" >&2
  tail -n 30 "$run"/logs/*.log "$run/stdout.log" >&2 2>/dev/null || true
  exit 1
}

start_cluster() {
  local base=${1:-9270} nodes=${2:-3} i
  for i in $(seq 0 $((nodes - 1))); do rm -rf "${RUN_ROOT:?}/$((base + i))"; done
  for i in $(seq 0 $((nodes - 1))); do start $((base + i)) "$base" "$nodes"; done
  wait_health "$base" green "$nodes"
}

stop_cluster() {
  local base=${1:-9270} nodes=${2:-3} i
  for i in $(seq 0 $((nodes - 1))); do stop $((base + i)); done
}

kill_node() {
  local pidfile=$RUN_ROOT/$1/opensearch.pid
  [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

stop() {
  local port=${1:-9250}
  local pidfile=$RUN_ROOT/$port/opensearch.pid
  if [ -f "$pidfile" ]; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "${RUN_ROOT:?}/$port"
}

case "${1:-}" in
  provision) provision; echo "opensearch-local: provisioned at $HOME_DIR" ;;
  start) start "${2:-9250}" ;;
  stop) stop "${2:-9250}" ;;
  start-cluster) start_cluster "${2:-9270}" "${3:-3}" ;;
  stop-cluster) stop_cluster "${2:-9270}" "${3:-3}" ;;
  kill-node) kill_node "${2:?port}" ;;
  start-node) start "${2:?port}" "${3:?base}" "${4:-3}"; wait_health "${2}" yellow "${4:-3}" ;;
  home) echo "$HOME_DIR" ;;
  *) echo "usage: $0 provision|start [PORT]|stop [PORT]|start-cluster [PORT] [N]|stop-cluster [PORT] [N]|kill-node PORT|start-node PORT BASE N|home" >&2; exit 2 ;;
esac
