#!/usr/bin/env bash
# Build QuickJS-NG `qjs` as a WASI command module (wasm32-wasip1, exports `_start`)
# from pinned sources with a pinned toolchain.
#
#   usage: build.sh OUT_DIR
#
# Writes OUT_DIR/qjs.wasm and OUT_DIR/LICENSE-quickjs-ng.txt and prints the sha256 of
# qjs.wasm. Every input is fetched by package name through its ordinary client (pip,
# cargo) into a private temporary directory and checked against the sha256 pinned below.
# Nothing is installed outside that directory. See README.md beside this file.
#
# Environment (all optional):
#   JOBS=N              parallel compile jobs (default: nproc)
#   QJS_KEEP_WORK=1     keep the temporary work directory and print its path
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------
# QuickJS-NG v0.17.0 engine: the PyPI sdist of the `quickjs-ng` Python wrapper vendors the
# upstream tag's engine sources (quickjs.c, libregexp, libunicode, dtoa, cutils.h, headers)
# in upstream-quickjs/, but not the command-line front end.
SDIST_NAME=quickjs-ng
SDIST_VERSION=0.17.0.2
SDIST_FILE=quickjs_ng-0.17.0.2.tar.gz
SDIST_SHA256=43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef

# QuickJS-NG v0.16.2 full tree (rquickjs-sys vendors it in quickjs/): supplies the files the
# sdist lacks: qjs.c, quickjs-libc.c, gen/repl.c, gen/standalone.c, and the upstream LICENSE.
CRATE_NAME=rquickjs-sys
CRATE_VERSION=0.14.0
CRATE_FILE=rquickjs-sys-0.14.0.crate
CRATE_SHA256=cee271d0eeba64f0915b846cb7ae02e16faf3dfdffdca91731101d9d30fe3423

# Toolchain: Zig's bundled clang + wasi-libc, from the PyPI `ziglang` wheel (Linux x86_64).
ZIG_NAME=ziglang
ZIG_VERSION=0.17.1
ZIG_FILE=ziglang-0.17.1-py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.musllinux_1_1_x86_64.whl
ZIG_SHA256=ea6cc5d87b033cf0aedfbc8f9549a908cae6c50ac31f1698188fa48a74524b54

# Expected output (the build is deterministic; see README.md).
QJS_WASM_SHA256=69630c71834e2f3a522650fed59567252510c80187f4161bcd8586dc1651796b
# -----------------------------------------------------------------------------------------

die() { echo "build.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT_DIR=$1

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] ||
    die "the pinned ziglang wheel is for Linux x86_64; this is $(uname -s) $(uname -m)"
command -v python3 >/dev/null || die "python3 not found"
command -v cargo >/dev/null || die "cargo not found (needed to fetch the $CRATE_NAME crate)"
command -v sha256sum >/dev/null || die "sha256sum not found"

RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -f "$RECIPE_DIR/console.py" ] && [ -f "$RECIPE_DIR/modules.py" ] && [ -f "$RECIPE_DIR/session.c" ] ||
    die "console.py, modules.py and session.c must sit beside build.sh"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
START=$(date +%s)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qjs-wasi-build.XXXXXX")
if [ "${QJS_KEEP_WORK:-0}" = 1 ]; then
    echo "build.sh: work directory kept at $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1

# verify NAME FILE EXPECTED_SHA256
verify() {
    local name=$1 file=$2 want=$3 got
    [ -f "$file" ] || die "$name: expected file $file was not downloaded"
    got=$(sha256sum "$file" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "build.sh: error: sha256 mismatch for package $name ($(basename "$file"))" >&2
        echo "  expected: $want" >&2
        echo "  actual:   $got" >&2
        exit 1
    fi
    echo "  ok  $name  $(basename "$file")  sha256 $got"
}

# pip_fetch NAME VERSION SHA256 PIP_ARGS...: download one pinned file by package name.
# --require-hashes makes pip itself refuse a file with another hash before it runs any of
# the package's code (preparing an sdist's metadata executes its setup.py).
pip_fetch() {
    local name=$1 version=$2 sha=$3; shift 3
    printf '%s==%s --hash=sha256:%s\n' "$name" "$version" "$sha" >"$WORK/req-$name.txt"
    if ! python3 -m pip download --quiet --no-deps --require-hashes \
            -r "$WORK/req-$name.txt" -d "$WORK/dl" "$@" >"$WORK/pip-$name.log" 2>&1; then
        cat "$WORK/pip-$name.log" >&2
        local got
        got=$(sed -n 's/^ *Got *\([0-9a-f]\{64\}\).*/\1/p' "$WORK/pip-$name.log" | head -n1)
        if [ -n "$got" ]; then
            echo "build.sh: error: sha256 mismatch for package $name==$version" >&2
            echo "  expected: $sha" >&2
            echo "  actual:   $got" >&2
            exit 1
        fi
        die "pip could not fetch $name==$version (see pip's message above)"
    fi
}

echo "== fetching pinned inputs into $WORK"
mkdir -p "$WORK/dl"
pip_fetch "$SDIST_NAME" "$SDIST_VERSION" "$SDIST_SHA256" --no-binary :all:
verify "$SDIST_NAME==$SDIST_VERSION" "$WORK/dl/$SDIST_FILE" "$SDIST_SHA256"
pip_fetch "$ZIG_NAME" "$ZIG_VERSION" "$ZIG_SHA256" --only-binary :all:
verify "$ZIG_NAME==$ZIG_VERSION" "$WORK/dl/$ZIG_FILE" "$ZIG_SHA256"

# cargo has no "download one crate" command: fetch it as the only dependency of a
# throw-away package, with a private CARGO_HOME so the crate file lands inside $WORK.
mkdir -p "$WORK/fetch/src"
cat >"$WORK/fetch/Cargo.toml" <<EOF
[package]
name = "qjs-source-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE_NAME = "=$CRATE_VERSION"
EOF
: >"$WORK/fetch/src/lib.rs"
if ! (cd "$WORK/fetch" && CARGO_HOME="$WORK/cargo-home" cargo fetch --quiet) \
        >"$WORK/cargo-fetch.log" 2>&1; then
    cat "$WORK/cargo-fetch.log" >&2
    die "cargo could not fetch $CRATE_NAME $CRATE_VERSION"
fi
crate_path=$(find "$WORK/cargo-home/registry/cache" -name "$CRATE_FILE" -print -quit)
verify "$CRATE_NAME $CRATE_VERSION" "${crate_path:-$WORK/missing/$CRATE_FILE}" "$CRATE_SHA256"

echo "== installing the toolchain into $WORK/zig (private, from the verified wheel)"
python3 -m pip install --quiet --no-deps --no-index --target "$WORK/zig" \
    "$WORK/dl/$ZIG_FILE" >"$WORK/pip-install.log" 2>&1 ||
    { cat "$WORK/pip-install.log" >&2; die "could not install $ZIG_FILE"; }
export PYTHONPATH="$WORK/zig"
# Zig builds wasi-libc on first use; keep its caches private so every build starts clean.
export ZIG_GLOBAL_CACHE_DIR="$WORK/zig-cache" ZIG_LOCAL_CACHE_DIR="$WORK/zig-cache"
zigcc() { python3 -m ziglang cc "$@"; }
echo "  zig $(python3 -m ziglang version)"

echo "== assembling sources"
mkdir -p "$WORK/x" "$WORK/src/gen"
tar -xzf "$WORK/dl/$SDIST_FILE" -C "$WORK/x"
tar -xzf "$crate_path" -C "$WORK/x"
ENGINE="$WORK/x/quickjs_ng-$SDIST_VERSION/upstream-quickjs"
TREE="$WORK/x/$CRATE_NAME-$CRATE_VERSION/quickjs"
SRC="$WORK/src"
cp "$ENGINE"/*.c "$ENGINE"/*.h "$SRC/"
for f in qjs.c quickjs-libc.c gen/repl.c gen/standalone.c; do
    [ ! -e "$SRC/$f" ] || die "$f unexpectedly present in the $SDIST_NAME sdist; revisit this recipe"
    cp "$TREE/$f" "$SRC/$f"
done
cp "$TREE/LICENSE" "$SRC/LICENSE"
# dvm's changes to the sources: console.error/warn write to stderr (see console.py), bare
# module specifiers resolve from /node_modules (see modules.py), and the session entry
# points `turn`, `host_alloc` and `shutdown` (session.c, appended to qjs.c so that it shares
# the shell's context set-up and module loader).
python3 "$RECIPE_DIR/console.py" "$SRC/quickjs-libc.c"
python3 "$RECIPE_DIR/modules.py" "$SRC/qjs.c"
cat "$RECIPE_DIR/session.c" >>"$SRC/qjs.c"
# The mix is sound only while these hold; fail loudly if a pin bump breaks them.
cmp -s "$ENGINE/quickjs-libc.h" "$TREE/quickjs-libc.h" ||
    die "quickjs-libc.h differs between $SDIST_NAME $SDIST_VERSION and $CRATE_NAME $CRATE_VERSION"
bc() { sed -n 's/^#define BC_VERSION \([0-9]*\).*/\1/p' "$1"; }
[ -n "$(bc "$ENGINE/quickjs.c")" ] && [ "$(bc "$ENGINE/quickjs.c")" = "$(bc "$TREE/quickjs.c")" ] ||
    die "bytecode version differs: gen/repl.c and gen/standalone.c would not load"
grep -q '^#define QJS_VERSION_MINOR 17$' "$SRC/quickjs.h" || die "engine is not QuickJS-NG 0.17"

echo "== compiling (jobs: $JOBS)"
CFLAGS=(
    -target wasm32-wasi -O2 -g0 -DNDEBUG
    -funsigned-char                        # as upstream's CMakeLists.txt
    -D_GNU_SOURCE -DQJS_BUILD_LIBC
    -D_WASI_EMULATED_PROCESS_CLOCKS -D_WASI_EMULATED_SIGNAL
    -ffile-prefix-map="$WORK"=/qjs -fno-ident
    -Wall -Wno-sign-compare -Wno-unused-parameter -Wno-unused-but-set-variable
    -Wno-implicit-fallthrough -Wno-missing-field-initializers
    -I"$SRC"
)
UNITS=(quickjs.c libregexp.c libunicode.c dtoa.c quickjs-libc.c qjs.c gen/repl.c gen/standalone.c)
mkdir -p "$WORK/obj"
export -f zigcc
export WORK SRC
printf '%s\n' "${UNITS[@]}" | xargs -P "$JOBS" -I{} bash -c \
    'zigcc "$@" -c "$SRC/{}" -o "$WORK/obj/$(echo {} | tr / _).o" || exit 255' _ "${CFLAGS[@]}"

OBJS=()
for u in "${UNITS[@]}"; do OBJS+=("$WORK/obj/$(echo "$u" | tr / _).o"); done
echo "== linking"
# 8 MiB shadow stack (upstream uses 8 MiB on Windows too); no DWARF, no custom sections.
zigcc -target wasm32-wasi -O2 -g0 "${OBJS[@]}" -o "$WORK/qjs.wasm" \
    -lwasi-emulated-process-clocks -lwasi-emulated-signal \
    -Wl,-z,stack-size=8388608 -Wl,--strip-debug

mkdir -p "$OUT_DIR"
cp "$WORK/qjs.wasm" "$OUT_DIR/qjs.wasm"
cp "$SRC/LICENSE" "$OUT_DIR/LICENSE-quickjs-ng.txt"

got=$(sha256sum "$OUT_DIR/qjs.wasm" | cut -d' ' -f1)
echo "== done in $(( $(date +%s) - START )) s: $OUT_DIR/qjs.wasm ($(stat -c %s "$OUT_DIR/qjs.wasm") bytes)"
echo "sha256 $got  qjs.wasm"
if [ "$got" != "$QJS_WASM_SHA256" ]; then
    echo "build.sh: error: qjs.wasm differs from the pinned output" >&2
    echo "  expected: $QJS_WASM_SHA256" >&2
    echo "  actual:   $got" >&2
    exit 3
fi
echo "matches the pinned output hash"
