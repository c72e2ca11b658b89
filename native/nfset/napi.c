/* N-API surface of nfset.c. Most calls are synchronous: one netlink exchange of a few
 * milliseconds per thousand elements. getAsync and dumpAsync run theirs on libuv's thread pool
 * (a job's 20,000 keys take ~100 ms, which must not stop the event loop) and settle a promise.
 *
 *   open(nsPath | null, table, family) → handle   (family: NFPROTO_INET 1 or NFPROTO_NETDEV 5)
 *   apply(handle, [[op, set, keyLen, keys: Buffer, comments: (string|null)[] | null], …])
 *   get(handle, set, keyLen, keys: Buffer) → [found: Uint8Array, counters: Float64Array, comments[]]
 *   getAsync(…the same) → Promise of the same
 *   dump(handle, set) → [keys: Buffer, keyLen, counters: Float64Array, comments[]]
 *   dumpAsync(handle, set) → Promise of the same
 *   rules(handle, chain) → number of rules in that chain of the table
 *   close(handle)
 * Errors are thrown (or the promise rejected) as Error with .errno (positive) and .code (e.g.
 * "ENOENT"). One socket serves one request at a time: while an async call holds the handle,
 * every other call on it fails with EBUSY (the caller queues), and close() waits for it. */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfset.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "nfset: N-API call failed: " #call); return NULL; } } while (0)

static napi_value errno_error(napi_env env, const char *what, int err) {
  if (err < 0) err = -err;
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, n, code;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &n);
  napi_set_named_property(env, e, "errno", n);
  const char *name = strerrorname_np(err);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_set_named_property(env, e, "code", code);
  return e;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  napi_throw(env, errno_error(env, what, err));
  return NULL;
}

static char *string_arg(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

/* The handle is an external of this box. close() clears c, so a closed handle throws instead of
 * touching freed memory. busy and close_pending are only touched on the JS thread: an async
 * call sets busy when it queues its work and clears it in its completion, where a close() that
 * came meanwhile is carried out. */
typedef struct {
  nfset_conn *c;
  int busy, close_pending;
} nfset_box;

static void finalize_box(napi_env env, void *data, void *hint) {
  nfset_box *box = data;
  /* A pending async call holds a reference, so busy only at the environment's teardown, with a
   * worker still on the socket: leave it to the exiting process. */
  if (box->busy) return;
  nfset_close(box->c);
  free(box);
}

static nfset_box *box_arg(napi_env env, napi_value v) {
  void *p = NULL;
  napi_get_value_external(env, v, &p);
  return p;
}

/* The box's connection if a call may use it now, else NULL with an exception pending. */
static nfset_conn *usable(napi_env env, nfset_box *box, const char *what) {
  if (!box || !box->c || box->close_pending) { napi_throw_error(env, NULL, "nfset: handle is closed"); return NULL; }
  if (box->busy) { throw_errno(env, what, EBUSY); return NULL; }
  return box->c;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  uint32_t family = 1;
  if (argc >= 3 && napi_get_value_uint32(env, argv[2], &family) != napi_ok) family = 0;
  if (family != 1 && family != 5) { napi_throw_type_error(env, NULL, "nfset.open: family must be 1 (inet) or 5 (netdev)"); return NULL; }
  char *ns = t == napi_string ? string_arg(env, argv[0]) : NULL;
  char *table = string_arg(env, argv[1]);
  if (!table) { free(ns); napi_throw_type_error(env, NULL, "nfset.open: table must be a string"); return NULL; }
  int err = 0;
  nfset_conn *c = nfset_open(ns, table, (uint16_t)family, &err);
  free(ns);
  free(table);
  if (!c) return throw_errno(env, "nfset.open", err);
  nfset_box *box = calloc(1, sizeof *box);
  if (!box) abort();
  box->c = c;
  napi_value h;
  CHECK(napi_create_external(env, box, finalize_box, NULL, &h));
  return h;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *p = NULL;
  CHECK(napi_get_value_external(env, argv[0], &p));
  nfset_box *box = p;
  if (box->busy) box->close_pending = 1; /* the worker still reads from the socket */
  else {
    nfset_close(box->c);
    box->c = NULL;
  }
  return NULL;
}

static napi_value js_apply(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = usable(env, box_arg(env, argv[0]), "nfset.apply");
  if (!c) return NULL;
  uint32_t nops = 0;
  CHECK(napi_get_array_length(env, argv[1], &nops));
  nfset_op *ops = calloc(nops ? nops : 1, sizeof *ops);
  char **owned = NULL; /* every string we allocated, freed at the end */
  size_t nowned = 0, capowned = 0;
#define OWN(p) do { if (nowned == capowned) { capowned = capowned ? 2 * capowned : 64; owned = realloc(owned, capowned * sizeof *owned); } owned[nowned++] = (p); } while (0)
  const char *bad = NULL;
  for (uint32_t k = 0; k < nops && !bad; k++) {
    napi_value o, v;
    napi_get_element(env, argv[1], k, &o);
    int32_t op = 0;
    uint32_t klen = 0;
    napi_get_element(env, o, 0, &v);
    napi_get_value_int32(env, v, &op);
    napi_get_element(env, o, 1, &v);
    char *set = string_arg(env, v);
    if (!set) { bad = "set name must be a string"; break; }
    OWN(set);
    napi_get_element(env, o, 2, &v);
    napi_get_value_uint32(env, v, &klen);
    napi_get_element(env, o, 3, &v);
    void *data = NULL;
    size_t blen = 0;
    if (napi_get_buffer_info(env, v, &data, &blen) != napi_ok || klen == 0 || klen > 64 || blen % klen) { bad = "keys must be a Buffer of whole keys"; break; }
    ops[k] = (nfset_op){ .op = op, .set = set, .klen = klen, .keys = data, .n = (uint32_t)(blen / klen) };
    napi_get_element(env, o, 4, &v);
    napi_valuetype t;
    napi_typeof(env, v, &t);
    if (t == napi_object) {
      char **cm = calloc(ops[k].n ? ops[k].n : 1, sizeof *cm);
      OWN((char *)cm);
      for (uint32_t i = 0; i < ops[k].n; i++) {
        napi_value s;
        napi_get_element(env, v, i, &s);
        napi_typeof(env, s, &t);
        if (t == napi_string) OWN(cm[i] = string_arg(env, s));
      }
      ops[k].comments = (const char *const *)cm;
    }
  }
  int r = bad ? 0 : nfset_apply(c, ops, nops);
  for (size_t i = 0; i < nowned; i++) free(owned[i]);
  free(owned);
  free(ops);
  if (bad) { napi_throw_type_error(env, NULL, bad); return NULL; }
  if (r) return throw_errno(env, "nfset.apply", r);
  return NULL;
}

/* A read's arguments and results, owned by C so that the work can run off the JS thread. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref href; /* keeps the handle (and its socket) alive until completion */
  nfset_box *box;
  int dump;      /* 0 keyed get, 1 dump */
  char *set;
  uint32_t klen, n;
  uint8_t *keys, *found;
  double *counters;
  char **comments;
  nfset_elems e;
  int r;
} nfset_read;

static void read_free(nfset_read *rd) {
  if (rd->comments) for (uint32_t i = 0; i < rd->n; i++) free(rd->comments[i]);
  free(rd->comments);
  free(rd->counters);
  free(rd->found);
  free(rd->keys);
  free(rd->set);
  nfset_elems_free(&rd->e);
  free(rd);
}

/* Checks and copies get's or dump's arguments (a Buffer may change once JS runs again). */
static nfset_read *read_args(napi_env env, napi_callback_info info, int dump, int async) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  const char *what = dump ? (async ? "nfset.dumpAsync" : "nfset.dump") : (async ? "nfset.getAsync" : "nfset.get");
  nfset_box *box = box_arg(env, argv[0]);
  if (!usable(env, box, what)) return NULL;
  nfset_read *rd = calloc(1, sizeof *rd);
  if (!rd) abort();
  rd->box = box;
  rd->dump = dump;
  rd->set = string_arg(env, argv[1]);
  void *keys = NULL;
  size_t blen = 0;
  if (!dump) napi_get_value_uint32(env, argv[2], &rd->klen);
  if (!rd->set || (!dump && (napi_get_buffer_info(env, argv[3], &keys, &blen) != napi_ok || rd->klen == 0 || rd->klen > 64 || blen % rd->klen))) {
    read_free(rd);
    napi_throw_type_error(env, NULL, dump ? "nfset.dump: (handle, set)" : "nfset.get: (handle, set, keyLen, keys Buffer)");
    return NULL;
  }
  if (dump) return rd;
  rd->n = (uint32_t)(blen / rd->klen);
  rd->keys = malloc(blen ? blen : 1);
  rd->found = malloc(rd->n ? rd->n : 1);
  rd->counters = malloc((2 * (size_t)rd->n + 1) * sizeof(double));
  rd->comments = calloc(rd->n + 1, sizeof(char *));
  if (!rd->keys || !rd->found || !rd->counters || !rd->comments) abort();
  if (blen) memcpy(rd->keys, keys, blen);
  return rd;
}

/* The socket work; on the thread pool for the async calls, so no N-API here. */
static void read_execute(napi_env env, void *data) {
  nfset_read *rd = data;
  rd->r = rd->dump ? nfset_dump(rd->box->c, rd->set, &rd->e) : nfset_get(rd->box->c, rd->set, rd->klen, rd->keys, rd->n, rd->found, rd->counters, rd->comments);
}

static napi_value comments_array(napi_env env, char **comments, uint32_t n) {
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; i < n; i++) {
    if (!comments[i]) continue;
    napi_value s;
    napi_create_string_utf8(env, comments[i], NAPI_AUTO_LENGTH, &s);
    napi_set_element(env, arr, i, s);
  }
  return arr;
}

static napi_value float_array(napi_env env, const double *src, size_t count) {
  napi_value ab, ta;
  void *data = NULL;
  napi_create_arraybuffer(env, count * sizeof(double), &data, &ab);
  if (count) memcpy(data, src, count * sizeof(double));
  napi_create_typedarray(env, napi_float64_array, count, ab, 0, &ta);
  return ta;
}

/* [found, counters, comments] of a get, [keys, keyLen, counters, comments] of a dump. */
static napi_value read_result(napi_env env, nfset_read *rd) {
  napi_value out, v;
  if (rd->dump) {
    nfset_elems *e = &rd->e;
    napi_create_array_with_length(env, 4, &out);
    napi_create_buffer_copy(env, (size_t)e->n * e->klen, e->keys ? (void *)e->keys : (void *)"", NULL, &v);
    napi_set_element(env, out, 0, v);
    napi_create_uint32(env, e->klen, &v);
    napi_set_element(env, out, 1, v);
    napi_set_element(env, out, 2, float_array(env, e->counters, 2 * (size_t)e->n));
    napi_set_element(env, out, 3, comments_array(env, e->comments, e->n));
    return out;
  }
  napi_value ab;
  void *data = NULL;
  napi_create_arraybuffer(env, rd->n, &data, &ab);
  if (rd->n) memcpy(data, rd->found, rd->n);
  napi_create_typedarray(env, napi_uint8_array, rd->n, ab, 0, &v);
  napi_create_array_with_length(env, 3, &out);
  napi_set_element(env, out, 0, v);
  napi_set_element(env, out, 1, float_array(env, rd->counters, 2 * (size_t)rd->n));
  napi_set_element(env, out, 2, comments_array(env, rd->comments, rd->n));
  return out;
}

static napi_value read_sync(napi_env env, napi_callback_info info, int dump) {
  nfset_read *rd = read_args(env, info, dump, 0);
  if (!rd) return NULL;
  read_execute(env, rd);
  napi_value out = rd->r ? throw_errno(env, dump ? "nfset.dump" : "nfset.get", rd->r) : read_result(env, rd);
  read_free(rd);
  return out;
}

static void read_complete(napi_env env, napi_status status, void *data) {
  nfset_read *rd = data;
  nfset_box *box = rd->box;
  box->busy = 0;
  if (box->close_pending) {
    nfset_close(box->c);
    box->c = NULL;
    box->close_pending = 0;
  }
  const char *what = rd->dump ? "nfset.dumpAsync" : "nfset.getAsync";
  if (status != napi_ok) napi_reject_deferred(env, rd->deferred, errno_error(env, what, ECANCELED));
  else if (rd->r) napi_reject_deferred(env, rd->deferred, errno_error(env, what, rd->r));
  else napi_resolve_deferred(env, rd->deferred, read_result(env, rd));
  napi_delete_reference(env, rd->href);
  napi_delete_async_work(env, rd->work);
  read_free(rd);
}

static napi_value read_async(napi_env env, napi_callback_info info, int dump) {
  nfset_read *rd = read_args(env, info, dump, 1);
  if (!rd) return NULL;
  size_t argc = 1;
  napi_value argv[1], promise, name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_create_string_utf8(env, dump ? "nfset.dumpAsync" : "nfset.getAsync", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[0], 1, &rd->href) != napi_ok || napi_create_promise(env, &rd->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, name, read_execute, read_complete, rd, &rd->work) != napi_ok || napi_queue_async_work(env, rd->work) != napi_ok) {
    read_free(rd); /* (leaks the reference and promise of a failed N-API call: never seen) */
    napi_throw_error(env, NULL, "nfset: cannot queue the read");
    return NULL;
  }
  rd->box->busy = 1;
  return promise;
}

static napi_value js_get(napi_env env, napi_callback_info info) { return read_sync(env, info, 0); }
static napi_value js_get_async(napi_env env, napi_callback_info info) { return read_async(env, info, 0); }
static napi_value js_dump(napi_env env, napi_callback_info info) { return read_sync(env, info, 1); }
static napi_value js_dump_async(napi_env env, napi_callback_info info) { return read_async(env, info, 1); }

static napi_value js_rules(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = usable(env, box_arg(env, argv[0]), "nfset.rules");
  if (!c) return NULL;
  char *chain = string_arg(env, argv[1]);
  if (!chain) { napi_throw_type_error(env, NULL, "nfset.rules: (handle, chain)"); return NULL; }
  uint32_t count = 0;
  int r = nfset_rules(c, chain, &count);
  free(chain);
  if (r) return throw_errno(env, "nfset.rules", r);
  napi_value out;
  CHECK(napi_create_uint32(env, count, &out));
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
    { "apply", NULL, js_apply, NULL, NULL, NULL, napi_default, NULL },
    { "get", NULL, js_get, NULL, NULL, NULL, napi_default, NULL },
    { "getAsync", NULL, js_get_async, NULL, NULL, NULL, napi_default, NULL },
    { "dump", NULL, js_dump, NULL, NULL, NULL, napi_default, NULL },
    { "dumpAsync", NULL, js_dump_async, NULL, NULL, NULL, napi_default, NULL },
    { "rules", NULL, js_rules, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
