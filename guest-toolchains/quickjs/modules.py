"""Gives the qjs front end bare module specifiers resolved from /node_modules.

Stock qjs passes `import x from "pkg"` to its loader as the file name `pkg`, relative to the
working directory. dvm installs packages read-only at /node_modules/<name>/ and writes each
package's entry file (from its package.json) into /node_modules/<name>/.dvm-entry. This
patch installs a module-name normaliser in qjs.c that:

  - resolves `pkg` to /node_modules/pkg/<entry>, and `pkg/sub/path` to
    /node_modules/pkg/sub/path, trying the path as is, then with .js, .mjs and /index.js
    (scoped names `@scope/pkg` work the same);
  - resolves `./x` and `../x` against the importing module's directory, as qjs does;
  - leaves every other name (absolute paths, `qjs:std`, names no package provides) as it is.

usage: python3 modules.py path/to/qjs.c
"""

import sys

NORMALIZER = r'''
#include <sys/stat.h>

/* dvm: the module loader, defined in session.c (appended to this file): `dvm:host` and
 * `dvm:tools`, and files as js_module_loader loads them. */
JSModuleDef *dvm_module_loader(JSContext *ctx, const char *name, void *opaque,
                               JSValueConst attributes);
/* dvm: the global `fetch`, defined in session.c: HTTP through the host door. */
void dvm_add_fetch(JSContext *ctx);

/* dvm: module names. See guest-toolchains/quickjs/modules.py. */
static int dvm_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* `base`'s directory joined with the relative `name`, with `.` and `..` segments folded. */
static char *dvm_join(JSContext *ctx, const char *base, const char *name)
{
    size_t cap = strlen(base) + strlen(name) + 2;
    char *out = js_malloc(ctx, cap);
    const char *slash = strrchr(base, '/');
    size_t len = slash ? (size_t)(slash - base) : 0;
    const char *seg = name;
    if (!out)
        return NULL;
    memcpy(out, base, len);
    out[len] = '\0';
    while (*seg) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            char *up = strrchr(out, '/');
            len = up ? (size_t)(up - out) : 0;
            out[len] = '\0';
        } else if (!(n == 0 || (n == 1 && seg[0] == '.'))) {
            if (len > 0 || base[0] == '/')
                out[len++] = '/';
            memcpy(out + len, seg, n);
            len += n;
            out[len] = '\0';
        }
        seg = end ? end + 1 : seg + n;
    }
    return out;
}

/* The file a bare specifier names under /node_modules, or NULL. */
static char *dvm_resolve_package(JSContext *ctx, const char *name)
{
    static const char *suffixes[] = { "", ".js", ".mjs", "/index.js" };
    char path[4096];
    const char *rest = strchr(name, '/');
    size_t pkg_len;
    int i;
    if (name[0] == '@' && rest)
        rest = strchr(rest + 1, '/');
    pkg_len = rest ? (size_t)(rest - name) : strlen(name);
    if (pkg_len == 0 || pkg_len > 1024)
        return NULL;
    if (!rest) {
        char entry[2048];
        size_t got;
        FILE *f;
        snprintf(path, sizeof path, "/node_modules/%.*s/.dvm-entry", (int)pkg_len, name);
        f = fopen(path, "r");
        if (!f)
            return NULL;
        got = fread(entry, 1, sizeof entry - 1, f);
        fclose(f);
        while (got > 0 && (entry[got - 1] == '\n' || entry[got - 1] == '\r'))
            got--;
        entry[got] = '\0';
        snprintf(path, sizeof path, "/node_modules/%.*s/%s", (int)pkg_len, name, entry);
        return dvm_is_file(path) ? js_strdup(ctx, path) : NULL;
    }
    for (i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/node_modules/%s%s", name, suffixes[i]);
        if (dvm_is_file(path))
            return js_strdup(ctx, path);
    }
    return NULL;
}

static char *dvm_module_normalize(JSContext *ctx, const char *base, const char *name,
                                  void *opaque)
{
    char *resolved;
    if (name[0] == '.')
        return dvm_join(ctx, base, name);
    if (name[0] != '/' && !strchr(name, ':')) {
        resolved = dvm_resolve_package(ctx, name);
        if (resolved)
            return resolved;
    }
    return js_strdup(ctx, name);
}

'''

EDITS = [
    (
        '#include "quickjs-libc.h"\n',
        '#include "quickjs-libc.h"\n' + NORMALIZER,
    ),
    (
        "    JS_SetModuleLoaderFunc2(rt, NULL, js_module_loader, js_module_check_attributes, NULL);\n",
        "    JS_SetModuleLoaderFunc2(rt, dvm_module_normalize, dvm_module_loader,\n"
        "                            js_module_check_attributes, NULL);\n",
    ),
    (
        '    js_init_module_bjson(ctx, "qjs:bjson");\n',
        '    js_init_module_bjson(ctx, "qjs:bjson");\n    dvm_add_fetch(ctx);\n',
    ),
]


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for old, new in EDITS:
        count = text.count(old)
        if count != 1:
            sys.exit(f"modules.py: expected one match in {path}, found {count}:\n{old}")
        text = text.replace(old, new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 modules.py path/to/qjs.c")
    main(sys.argv[1])
