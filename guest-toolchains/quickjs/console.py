"""Gives the qjs front end console.error/warn (to stderr) and console.info/debug (to stdout).

Stock quickjs-libc defines only console.log. js_print gains a `magic` argument that picks the
stream. Each edit must match exactly once, so a source change fails the build loudly.

usage: python3 console.py path/to/quickjs-libc.c
"""

import sys

EDITS = [
    (
        "static JSValue js_print(JSContext *ctx, JSValueConst this_val,\n"
        "                        int argc, JSValueConst *argv)\n",
        "static JSValue js_print(JSContext *ctx, JSValueConst this_val,\n"
        "                        int argc, JSValueConst *argv, int magic)\n",
    ),
    (
        "    fwrite(b.buf, 1, b.size, stdout);\n    fflush(stdout);\n",
        "    FILE *out = magic ? stderr : stdout;\n"
        "    fwrite(b.buf, 1, b.size, out);\n    fflush(out);\n",
    ),
    (
        '    JS_SetPropertyStr(ctx, console, "log",\n'
        '                      JS_NewCFunction(ctx, js_print, "log", 1));\n',
        "".join(
            f'    JS_SetPropertyStr(ctx, console, "{name}",\n'
            f"                      JS_NewCFunctionMagic(ctx, js_print, \"{name}\", 1,\n"
            f"                                           JS_CFUNC_generic_magic, {stream}));\n"
            for name, stream in [("log", 0), ("info", 0), ("debug", 0), ("error", 1), ("warn", 1)]
        ),
    ),
    (
        '    JS_SetPropertyStr(ctx, global_obj, "print",\n'
        '                      JS_NewCFunction(ctx, js_print, "print", 1));\n',
        '    JS_SetPropertyStr(ctx, global_obj, "print",\n'
        '                      JS_NewCFunctionMagic(ctx, js_print, "print", 1,\n'
        "                                           JS_CFUNC_generic_magic, 0));\n",
    ),
]


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for old, new in EDITS:
        count = text.count(old)
        if count != 1:
            sys.exit(f"console.py: expected one match in {path}, found {count}:\n{old}")
        text = text.replace(old, new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1])
