
/* ---- dvm: sessions. Appended to qjs.c by build.sh; see README.md beside it. ----
 *
 * A session is one instance of this module that the host never starts with `_start`: it
 * calls `turn(code, len)` once per call instead, with the code written into memory it got
 * from `host_alloc(len)`. The first turn sets up the runtime as `qjs --std --stack-size 512`
 * does; every turn then evaluates its code as a global script with top-level `await`, runs
 * the promise jobs and timers it left until nothing is pending, and writes the value of its
 * final expression to stdout. Globals (`var`, `let`, `const`, functions, classes) carry
 * over from turn to turn. `turn` returns the status: 0, or 1 after an uncaught error, an
 * unhandled rejection or a top-level `await` nothing left could settle. `std.exit(n)` ends
 * the instance as it ends a program. Output is flushed at the end of every turn. */

extern void __wasm_call_ctors(void);

static JSRuntime *dvm_rt;
static JSContext *dvm_ctx;
/* The echo formatter: a function kept here, never reachable from guest code. */
static JSValue dvm_inspect;

/* Promises rejected with no handler, as the rejection tracker reports them; a handler
 * attached later in the turn takes its promise off again. */
typedef struct {
    JSValue promise;
    JSValue reason;
} DvmRejection;
static DvmRejection *dvm_rejections;
static size_t dvm_rejection_count, dvm_rejection_cap;

static char dvm_argv0[] = "qjs";
static char *dvm_argv[] = { dvm_argv0, NULL };

/* Node-like echo of a value: strings quoted, objects and arrays one line when short. */
static const char dvm_inspect_source[] =
    "(() => {\n"
    "  const seen = new Set();\n"
    "  const quote = s => \"'\" + s.replace(/[\\\\']/g, c => '\\\\' + c)\n"
    "    .replace(/\\n/g, '\\\\n') + \"'\";\n"
    "  const key = k => typeof k === 'symbol' ? '[' + k.toString() + ']'\n"
    "    : /^[A-Za-z_$][\\w$]*$/.test(k) ? k : quote(k);\n"
    "  const name = v => {\n"
    "    const proto = Object.getPrototypeOf(v);\n"
    "    const c = proto && proto.constructor;\n"
    "    return proto === null ? '[Object: null prototype]'\n"
    "      : typeof c === 'function' && c.name && c !== Object ? c.name : '';\n"
    "  };\n"
    "  const wrap = (open, parts, close) => {\n"
    "    if (parts.length === 0) return open + close;\n"
    "    const line = open + ' ' + parts.join(', ') + ' ' + close;\n"
    "    if (line.length <= 76 && !line.includes('\\n')) return line;\n"
    "    return open + '\\n' + parts.map(p => '  ' + p.replace(/\\n/g, '\\n  '))\n"
    "      .join(',\\n') + '\\n' + close;\n"
    "  };\n"
    "  const some = (items, shown) => items.length > 100\n"
    "    ? shown.concat(['... ' + (items.length - 100) + ' more items']) : shown;\n"
    "  const fmt = (v, depth) => {\n"
    "    switch (typeof v) {\n"
    "      case 'string': return quote(v);\n"
    "      case 'number': return Object.is(v, -0) ? '-0' : String(v);\n"
    "      case 'bigint': return v + 'n';\n"
    "      case 'symbol': return v.toString();\n"
    "      case 'function': {\n"
    "        const n = v.name || '(anonymous)';\n"
    "        return /^class[\\s{]/.test(Function.prototype.toString.call(v))\n"
    "          ? '[class ' + n + ']' : '[Function: ' + n + ']';\n"
    "      }\n"
    "      case 'undefined': case 'boolean': return String(v);\n"
    "    }\n"
    "    if (v === null) return 'null';\n"
    "    if (seen.has(v)) return '[Circular]';\n"
    "    if (v instanceof Error) return String(v.stack || '').includes(v.message)\n"
    "      ? String(v.stack).trimEnd() : (String(v) + '\\n' + String(v.stack || '')).trimEnd();\n"
    "    if (v instanceof Date) return isNaN(v) ? 'Invalid Date' : v.toISOString();\n"
    "    if (v instanceof RegExp) return String(v);\n"
    "    if (v instanceof Promise) return 'Promise {}';\n"
    "    if (v instanceof WeakMap || v instanceof WeakSet) return name(v) + ' { <items unknown> }';\n"
    "    if (depth > 2) return Array.isArray(v) ? '[Array]' : '[' + (name(v) || 'Object') + ']';\n"
    "    seen.add(v);\n"
    "    try {\n"
    "      const d = depth + 1;\n"
    "      if (Array.isArray(v))\n"
    "        return wrap('[', some(v, v.slice(0, 100).map(x => fmt(x, d))), ']');\n"
    "      if (v instanceof Map)\n"
    "        return wrap('Map(' + v.size + ') {', some([...v.keys()], [...v].slice(0, 100)\n"
    "          .map(([k, x]) => fmt(k, d) + ' => ' + fmt(x, d))), '}');\n"
    "      if (v instanceof Set)\n"
    "        return wrap('Set(' + v.size + ') {', some([...v], [...v].slice(0, 100)\n"
    "          .map(x => fmt(x, d))), '}');\n"
    "      if (ArrayBuffer.isView(v) && typeof v.length === 'number')\n"
    "        return wrap(name(v) + '(' + v.length + ') [',\n"
    "          some(v, Array.from(v.slice(0, 100), x => fmt(x, d))), ']');\n"
    "      const keys = Reflect.ownKeys(v)\n"
    "        .filter(k => Object.prototype.propertyIsEnumerable.call(v, k));\n"
    "      const parts = some(keys, keys.slice(0, 100).map(k => key(k) + ': ' + fmt(v[k], d)));\n"
    "      const n = name(v);\n"
    "      return wrap(n ? n + ' {' : '{', parts, '}');\n"
    "    } finally {\n"
    "      seen.delete(v);\n"
    "    }\n"
    "  };\n"
    "  return v => fmt(v, 0);\n"
    "})()\n";

static void dvm_track_rejection(JSContext *ctx, JSValueConst promise, JSValueConst reason,
                                bool is_handled, void *opaque)
{
    size_t i;
    for (i = 0; i < dvm_rejection_count; i++) {
        if (JS_VALUE_GET_PTR(dvm_rejections[i].promise) == JS_VALUE_GET_PTR(promise))
            break;
    }
    if (is_handled) {
        if (i < dvm_rejection_count) {
            JS_FreeValue(ctx, dvm_rejections[i].promise);
            JS_FreeValue(ctx, dvm_rejections[i].reason);
            dvm_rejections[i] = dvm_rejections[--dvm_rejection_count];
        }
        return;
    }
    if (i < dvm_rejection_count)
        return;
    if (dvm_rejection_count == dvm_rejection_cap) {
        size_t cap = dvm_rejection_cap ? dvm_rejection_cap * 2 : 8;
        DvmRejection *grown = realloc(dvm_rejections, cap * sizeof(*grown));
        if (!grown)
            return;
        dvm_rejections = grown;
        dvm_rejection_cap = cap;
    }
    dvm_rejections[dvm_rejection_count].promise = JS_DupValue(ctx, promise);
    dvm_rejections[dvm_rejection_count].reason = JS_DupValue(ctx, reason);
    dvm_rejection_count++;
}

/* Reports the rejections no handler took by the end of the turn, and forgets them;
 * returns 1 when there were any. */
static int dvm_report_rejections(JSContext *ctx)
{
    size_t i, count = dvm_rejection_count;
    for (i = 0; i < count; i++) {
        fputs("Uncaught (in promise) ", stderr);
        JS_Throw(ctx, JS_DupValue(ctx, dvm_rejections[i].reason));
        js_std_dump_error(ctx);
        JS_FreeValue(ctx, dvm_rejections[i].promise);
        JS_FreeValue(ctx, dvm_rejections[i].reason);
    }
    dvm_rejection_count = 0;
    return count > 0;
}

/* Sets the runtime up once, as `qjs --std --stack-size 512` does; the state lives in
 * memory, so a session restored from an image finds it done. */
static int dvm_session_init(void)
{
    static const char std_globals[] =
        "import * as bjson from 'qjs:bjson';\n"
        "import * as std from 'qjs:std';\n"
        "import * as os from 'qjs:os';\n"
        "globalThis.bjson = bjson;\n"
        "globalThis.std = std;\n"
        "globalThis.os = os;\n";
    if (dvm_ctx)
        return 0;
    __wasm_call_ctors();
    qjs__argc = 1;
    qjs__argv = dvm_argv;
    dvm_rt = JS_NewRuntime();
    if (!dvm_rt)
        return -1;
    JS_SetMaxStackSize(dvm_rt, 512 * 1024);
    js_std_set_worker_new_context_func(JS_NewCustomContext);
    js_std_init_handlers(dvm_rt);
    dvm_ctx = JS_NewCustomContext(dvm_rt);
    if (!dvm_ctx)
        return -1;
    JS_SetModuleLoaderFunc2(dvm_rt, dvm_module_normalize, dvm_module_loader,
                            js_module_check_attributes, NULL);
    JS_SetHostPromiseRejectionTracker(dvm_rt, dvm_track_rejection, NULL);
    js_std_add_helpers(dvm_ctx, 0, NULL);
    if (eval_buf(dvm_ctx, std_globals, strlen(std_globals), "<input>", JS_EVAL_TYPE_MODULE))
        return -1;
    dvm_inspect = JS_Eval(dvm_ctx, dvm_inspect_source, strlen(dvm_inspect_source), "<dvm>",
                          JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(dvm_inspect)) {
        js_std_dump_error(dvm_ctx);
        return -1;
    }
    return 0;
}

static void dvm_echo(JSContext *ctx, JSValueConst value)
{
    JSValue shown = JS_Call(ctx, dvm_inspect, JS_UNDEFINED, 1, &value);
    size_t len;
    const char *text = NULL;
    if (!JS_IsException(shown))
        text = JS_ToCStringLen(ctx, &len, shown);
    if (!text) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        text = JS_ToCStringLen(ctx, &len, value);
    }
    if (text) {
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
        JS_FreeCString(ctx, text);
    } else {
        JS_FreeValue(ctx, JS_GetException(ctx));
        fputs("[a value that cannot be shown]\n", stdout);
    }
    JS_FreeValue(ctx, shown);
}

/* Shows the value of a settled turn, or reports its error; returns the status. */
static int dvm_settled(JSContext *ctx, JSValueConst promise)
{
    if (JS_PromiseState(ctx, promise) == JS_PROMISE_REJECTED) {
        /* Reported here as the turn's error, not again as an unhandled rejection. */
        dvm_track_rejection(ctx, promise, JS_UNDEFINED, true, NULL);
        JS_Throw(ctx, JS_PromiseResult(ctx, promise));
        js_std_dump_error(ctx);
        return 1;
    }
    JSValue result = JS_PromiseResult(ctx, promise);
    JSValue value = JS_GetPropertyStr(ctx, result, "value");
    if (JS_IsException(value))
        JS_FreeValue(ctx, JS_GetException(ctx));
    else if (!JS_IsUndefined(value))
        dvm_echo(ctx, value);
    JS_FreeValue(ctx, value);
    JS_FreeValue(ctx, result);
    return 0;
}

/* Room for `len` bytes of code and the terminating NUL `turn` writes after them. */
__attribute__((export_name("host_alloc"))) void *dvm_host_alloc(int32_t len)
{
    return len < 0 ? NULL : malloc((size_t)len + 1);
}

__attribute__((export_name("turn"))) int32_t dvm_turn(char *code, int32_t len)
{
    JSContext *ctx;
    JSValue promise;
    int status = 0;

    if (dvm_session_init() < 0) {
        free(code);
        fputs("qjs: the session could not be set up\n", stderr);
        fflush(stderr);
        return 2;
    }
    ctx = dvm_ctx;
    JS_UpdateStackTop(dvm_rt);
    /* Each turn has stdin of its own: forget the last one's end of file. */
    clearerr(stdin);
    code[len] = '\0';
    promise = JS_Eval(ctx, code, (size_t)len, "<turn>",
                      JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_ASYNC);
    free(code);
    if (JS_IsException(promise)) {
        js_std_dump_error(ctx);
        status = 1;
    } else {
        /* Run promise jobs and timers until none is left; the turn's own value is shown
         * as soon as it settles, before what runs after it (as a REPL does). */
        bool settled = false;
        for (;;) {
            int next;
            if (!settled && JS_PromiseState(ctx, promise) != JS_PROMISE_PENDING) {
                status |= dvm_settled(ctx, promise);
                settled = true;
            }
            next = js_std_loop_once(ctx);
            if (next == -1)
                break;
            if (next == -2) {
                js_std_dump_error(ctx);
                status = 1;
            } else if (next > 0) {
                js_std_poll_io(ctx, next);
            }
        }
        if (!settled) {
            if (JS_PromiseState(ctx, promise) != JS_PROMISE_PENDING) {
                status |= dvm_settled(ctx, promise);
            } else {
                fputs("Error: the turn's top-level await never settled: nothing left to run "
                      "could settle what it waits for\n", stderr);
                status = 1;
            }
        }
        JS_FreeValue(ctx, promise);
    }
    status |= dvm_report_rejections(ctx);
    fflush(stdout);
    fflush(stderr);
    return status;
}

/* When the session closes: flush what is buffered. */
__attribute__((export_name("shutdown"))) int32_t dvm_shutdown(void)
{
    fflush(stdout);
    fflush(stderr);
    return 0;
}

/* ---- dvm: host tools. `import { search } from 'dvm:tools'` (or `import * as tools`)
 * gives the host tools bound to the run, as in python's dvm_tools: `call(name, args)`,
 * `ToolError`, `tools` (name -> function), one export per tool, and one object per group
 * of tools (an MCP server's, in code mode: `import { github } from 'dvm:tools'`,
 * `github.search_issues(...)`). They reach the host
 * through the `host.call` door, as the python guest's do: JSON frames, op `list` and
 * `call`. The module is made when first imported, from the list the host gives; importing
 * it in a run without tools throws. Names JavaScript reserves stay in `tools` only. */

__attribute__((import_module("host"), import_name("call")))
extern int32_t dvm_door(const char *request, int32_t len, char **reply, int32_t *reply_len);

/* `call(request)` of the `dvm:host` module: one door request, its reply as a string. */
static JSValue dvm_js_door(JSContext *ctx, JSValueConst this_val, int argc,
                           JSValueConst *argv)
{
    size_t len;
    char *reply = NULL;
    int32_t reply_len = 0, status;
    const char *request = JS_ToCStringLen(ctx, &len, argv[0]);
    if (!request)
        return JS_EXCEPTION;
    status = dvm_door(request, (int32_t)len, &reply, &reply_len);
    JS_FreeCString(ctx, request);
    if (status == -1)
        return JS_ThrowReferenceError(ctx, "no host tools are bound to this run");
    if (status != 0 || !reply || reply_len < 0)
        return JS_ThrowInternalError(ctx, "the host door failed");
    JSValue out = JS_NewStringLen(ctx, reply, (size_t)reply_len);
    free(reply);
    return out;
}

static int dvm_host_module_init(JSContext *ctx, JSModuleDef *m)
{
    return JS_SetModuleExport(ctx, m, "call", JS_NewCFunction(ctx, dvm_js_door, "call", 1));
}

/* Makes the source of `dvm:tools` from the host's list (a JSON string). */
static const char dvm_tools_maker[] =
    "(list => {\n"
    "  const reserved = new Set(('break case catch class const continue debugger default '\n"
    "    + 'delete do else enum export extends false finally for function if implements '\n"
    "    + 'import in instanceof interface let new null package private protected public '\n"
    "    + 'return static super switch this throw true try typeof var void while with '\n"
    "    + 'yield await arguments eval call tools ToolError').split(' '));\n"
    "  const listed = JSON.parse(list).tools;\n"
    "  const usable = n => /^[A-Za-z_$][\\w$]*$/.test(n) && !reserved.has(n);\n"
    "  const names = listed.filter(t => !t.group).map(t => t.name).filter(usable);\n"
    "  const groups = [...new Set(listed.filter(t => t.group).map(t => t.group))].filter(usable);\n"
    "  return `import { call as door } from 'dvm:host';\n"
    "export class ToolError extends Error {\n"
    "  constructor(message) { super(message); this.name = 'ToolError'; }\n"
    "}\n"
    "export function call(name, args = {}) {\n"
    "  const reply = JSON.parse(door(JSON.stringify({ v: 1, op: 'call', tool: name, args })));\n"
    "  if (!reply.ok) throw new ToolError(reply.error || 'the tool failed');\n"
    "  return reply.result;\n"
    "}\n"
    "const specs = JSON.parse(${JSON.stringify(list)}).tools;\n"
    "const qualified = spec => spec.group ? spec.group + '.' + spec.name : spec.name;\n"
    "const make = spec => {\n"
    "  const schema = spec.parameters || {};\n"
    "  const props = Object.keys(schema.properties || {});\n"
    "  const required = (schema.required || []).filter(p => props.includes(p));\n"
    "  const order = [...required, ...props.filter(p => !required.includes(p))];\n"
    "  const tool = (...args) => {\n"
    "    const one = args.length === 1 && args[0] !== null && typeof args[0] === 'object'\n"
    "      && !Array.isArray(args[0]);\n"
    "    const named = one ? { ...args[0] } : {};\n"
    "    if (!one) args.forEach((value, i) => { named[order[i]] = value; });\n"
    "    const missing = required.filter(p => !(p in named));\n"
    "    if (missing.length)\n"
    "      throw new TypeError(spec.name + '() missing required arguments: ' + missing.join(', '));\n"
    "    return call(qualified(spec), named);\n"
    "  };\n"
    "  Object.defineProperty(tool, 'name', { value: spec.name });\n"
    "  tool.description = spec.description;\n"
    "  tool.parameters = schema;\n"
    "  return tool;\n"
    "};\n"
    "export const tools = Object.fromEntries(specs.map(spec => [qualified(spec), make(spec)]));\n"
    "const group = g => Object.fromEntries(specs.filter(s => s.group === g)\n"
    "  .map(s => [s.name, tools[qualified(s)]]));\n"
    "` + names.map(n => `export const ${n} = tools[${JSON.stringify(n)}];\\n`).join('')\n"
    "  + groups.map(g => `export const ${g} = group(${JSON.stringify(g)});\\n`).join('');\n"
    "})\n";

/* The module loader: `dvm:host` and `dvm:tools` are made here; every other name is a file,
 * as qjs loads it. */
JSModuleDef *dvm_module_loader(JSContext *ctx, const char *name, void *opaque,
                               JSValueConst attributes)
{
    if (!strcmp(name, "dvm:host")) {
        JSModuleDef *m = JS_NewCModule(ctx, name, dvm_host_module_init);
        if (m && JS_AddModuleExport(ctx, m, "call") < 0)
            return NULL;
        return m;
    }
    if (!strcmp(name, "dvm:tools")) {
        JSValue maker, list, source, module;
        const char *text;
        size_t len;
        JSModuleDef *m = NULL;
        JSValue request = JS_NewString(ctx, "{\"v\":1,\"op\":\"list\"}");
        if (JS_IsException(request))
            return NULL;
        list = dvm_js_door(ctx, JS_UNDEFINED, 1, (JSValueConst *)&request);
        JS_FreeValue(ctx, request);
        if (JS_IsException(list))
            return NULL;
        maker = JS_Eval(ctx, dvm_tools_maker, strlen(dvm_tools_maker), "<dvm:tools>",
                        JS_EVAL_TYPE_GLOBAL);
        if (JS_IsException(maker)) {
            JS_FreeValue(ctx, list);
            return NULL;
        }
        source = JS_Call(ctx, maker, JS_UNDEFINED, 1, (JSValueConst *)&list);
        JS_FreeValue(ctx, maker);
        JS_FreeValue(ctx, list);
        if (JS_IsException(source))
            return NULL;
        text = JS_ToCStringLen(ctx, &len, source);
        JS_FreeValue(ctx, source);
        if (!text)
            return NULL;
        module = JS_Eval(ctx, text, len, name, JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
        JS_FreeCString(ctx, text);
        if (JS_IsException(module))
            return NULL;
        m = JS_VALUE_GET_PTR(module);
        JS_FreeValue(ctx, module);
        return m;
    }
    return js_module_loader(ctx, name, opaque, attributes);
}

/* ---- dvm: `fetch`. A global `fetch(url, {method, headers, body, redirect})` that sends
 * the request through the host door (op `http`), which reaches only the hosts the run
 * allows. It resolves to a Response (`status`, `ok`, `statusText`, `headers`, `url`,
 * `redirected`, `text()`, `json()`, `arrayBuffer()`, `bytes()`) and rejects with a
 * TypeError when the host refuses or the request fails, as fetch does. Redirects are
 * followed here (at most 20), so each hop is a request of its own that the host checks and
 * records; a hop to another origin goes without the Authorization and Cookie headers. The implementation is compiled on the first call: runs that never fetch do not
 * pay for it. */
static const char dvm_fetch_maker[] =
    "(function (door) {\n"
    "const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';\n"
    "const encode = (b) => { const out = [];\n"
    "  for (let i = 0; i < b.length; i += 3) {\n"
    "    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);\n"
    "    out.push(A[(n >> 18) & 63] + A[(n >> 12) & 63] + (i + 1 < b.length ? A[(n >> 6) & 63] : '=')\n"
    "      + (i + 2 < b.length ? A[n & 63] : '='));\n"
    "  }\n"
    "  return out.join(''); };\n"
    "const decode = (t) => { const s = t.replace(/=+$/, '');\n"
    "  const out = new Uint8Array(Math.floor(s.length * 3 / 4)); let acc = 0, bits = 0, j = 0;\n"
    "  for (let i = 0; i < s.length; i++) { acc = ((acc << 6) | A.indexOf(s[i])) & 0xffffff; bits += 6;\n"
    "    if (bits >= 8) { bits -= 8; out[j++] = (acc >> bits) & 255; } }\n"
    "  return out; };\n"
    "const utf8 = (s) => { const t = unescape(encodeURIComponent(s)); const b = new Uint8Array(t.length);\n"
    "  for (let i = 0; i < t.length; i++) b[i] = t.charCodeAt(i); return b; };\n"
    "const text = (b) => { let t = '';\n"
    "  for (let i = 0; i < b.length; i += 8192) t += String.fromCharCode.apply(null, b.subarray(i, i + 8192));\n"
    "  try { return decodeURIComponent(escape(t)); } catch { return t; } };\n"
    "class Headers {\n"
    "  #map = new Map();\n"
    "  constructor(init) {\n"
    "    if (init == null) return;\n"
    "    const pairs = init instanceof Headers ? [...init] : Array.isArray(init) ? init : Object.entries(init);\n"
    "    for (const [k, v] of pairs) this.append(k, v);\n"
    "  }\n"
    "  append(k, v) { k = String(k).toLowerCase(); const old = this.#map.get(k);\n"
    "    this.#map.set(k, old === undefined ? String(v) : old + ', ' + v); }\n"
    "  set(k, v) { this.#map.set(String(k).toLowerCase(), String(v)); }\n"
    "  get(k) { return this.#map.get(String(k).toLowerCase()) ?? null; }\n"
    "  has(k) { return this.#map.has(String(k).toLowerCase()); }\n"
    "  delete(k) { this.#map.delete(String(k).toLowerCase()); }\n"
    "  forEach(f, self) { for (const [k, v] of this) f.call(self, v, k, this); }\n"
    "  *entries() { yield* [...this.#map].sort((a, b) => a[0] < b[0] ? -1 : 1); }\n"
    "  *keys() { for (const [k] of this.entries()) yield k; }\n"
    "  *values() { for (const [, v] of this.entries()) yield v; }\n"
    "  [Symbol.iterator]() { return this.entries(); }\n"
    "}\n"
    "class Response {\n"
    "  #body;\n"
    "  constructor(body, init = {}) {\n"
    "    this.#body = body instanceof Uint8Array ? body : utf8(body == null ? '' : String(body));\n"
    "    this.status = init.status ?? 200; this.statusText = init.statusText ?? '';\n"
    "    this.headers = new Headers(init.headers); this.ok = this.status >= 200 && this.status < 300;\n"
    "    this.url = init.url ?? ''; this.redirected = !!init.redirected; this.bodyUsed = false;\n"
    "  }\n"
    "  async bytes() { this.bodyUsed = true; return this.#body.slice(); }\n"
    "  async arrayBuffer() { return (await this.bytes()).buffer; }\n"
    "  async text() { return text(await this.bytes()); }\n"
    "  async json() { return JSON.parse(await this.text()); }\n"
    "}\n"
    "const bodyOf = (body) => {\n"
    "  if (body == null) return new Uint8Array(0);\n"
    "  if (body instanceof Uint8Array) return body;\n"
    "  if (body instanceof ArrayBuffer) return new Uint8Array(body);\n"
    "  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);\n"
    "  return utf8(String(body)); };\n"
    "const resolve = (base, loc) => {\n"
    "  if (/^[a-z][a-z0-9+.-]*:/i.test(loc)) return loc;\n"
    "  const m = /^([a-z][a-z0-9+.-]*:)\\/\\/([^/?#]*)([^?#]*)/i.exec(base);\n"
    "  if (!m) return loc;\n"
    "  if (loc.startsWith('//')) return m[1] + loc;\n"
    "  if (loc.startsWith('/')) return m[1] + '//' + m[2] + loc;\n"
    "  return m[1] + '//' + m[2] + m[3].replace(/[^/]*$/, '') + loc; };\n"
    "async function fetch(input, init = {}) {\n"
    "  let url = String(typeof input === 'object' && input && 'url' in input ? input.url : input);\n"
    "  let method = String(init.method ?? 'GET').toUpperCase();\n"
    "  const headers = [...new Headers(init.headers)];\n"
    "  let body = bodyOf(init.body);\n"
    "  if (typeof init.body === 'string' && !headers.some(([k]) => k === 'content-type'))\n"
    "    headers.push(['content-type', 'text/plain;charset=UTF-8']);\n"
    "  for (let hop = 0; ; hop++) {\n"
    "    let reply;\n"
    "    try {\n"
    "      reply = JSON.parse(door(JSON.stringify({ v: 1, op: 'http', method, url, headers, body: encode(body) })));\n"
    "    } catch (e) { throw new TypeError('fetch failed: ' + e.message); }\n"
    "    if (!reply.ok) throw new TypeError('fetch failed: ' + reply.error);\n"
    "    const response = new Response(decode(reply.body), { status: reply.status,\n"
    "      statusText: reply.reason, headers: reply.headers, url, redirected: hop > 0 });\n"
    "    const location = response.headers.get('location');\n"
    "    if (![301, 302, 303, 307, 308].includes(reply.status) || !location || init.redirect === 'manual')\n"
    "      return response;\n"
    "    if (init.redirect === 'error') throw new TypeError('fetch failed: redirected to ' + location);\n"
    "    if (hop >= 20) throw new TypeError('fetch failed: more than 20 redirects');\n"
    "    const next = resolve(url, location);\n"
    "    const origin = (u) => (/^[a-z][a-z0-9+.-]*:\\/\\/[^/?#]*/i.exec(u) || [''])[0].toLowerCase();\n"
    "    if (origin(next) !== origin(url))\n"
    "      for (let i = headers.length - 1; i >= 0; i--)\n"
    "        if (['authorization', 'cookie', 'proxy-authorization'].includes(headers[i][0])) headers.splice(i, 1);\n"
    "    url = next;\n"
    "    if (reply.status === 303 || ((reply.status === 301 || reply.status === 302) && method === 'POST')) {\n"
    "      method = 'GET'; body = new Uint8Array(0); }\n"
    "  }\n"
    "}\n"
    "if (!globalThis.Headers) globalThis.Headers = Headers;\n"
    "if (!globalThis.Response) globalThis.Response = Response;\n"
    "return fetch;\n"
    "})\n";

static JSValue dvm_js_fetch(JSContext *ctx, JSValueConst this_val, int argc,
                            JSValueConst *argv)
{
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue impl = JS_GetPropertyStr(ctx, global, "__dvm_fetch");
    if (JS_IsUndefined(impl)) {
        JSValue door, maker = JS_Eval(ctx, dvm_fetch_maker, strlen(dvm_fetch_maker),
                                      "<dvm:fetch>", JS_EVAL_TYPE_GLOBAL);
        if (JS_IsException(maker)) {
            JS_FreeValue(ctx, global);
            return maker;
        }
        door = JS_NewCFunction(ctx, dvm_js_door, "door", 1);
        impl = JS_Call(ctx, maker, JS_UNDEFINED, 1, (JSValueConst *)&door);
        JS_FreeValue(ctx, door);
        JS_FreeValue(ctx, maker);
        if (JS_IsException(impl)) {
            JS_FreeValue(ctx, global);
            return impl;
        }
        JS_DefinePropertyValueStr(ctx, global, "__dvm_fetch", JS_DupValue(ctx, impl), 0);
    }
    JS_FreeValue(ctx, global);
    JSValue result = JS_Call(ctx, impl, JS_UNDEFINED, argc, argv);
    JS_FreeValue(ctx, impl);
    return result;
}

void dvm_add_fetch(JSContext *ctx)
{
    JSValue global = JS_GetGlobalObject(ctx);
    JS_SetPropertyStr(ctx, global, "fetch", JS_NewCFunction(ctx, dvm_js_fetch, "fetch", 2));
    JS_FreeValue(ctx, global);
}
