/* N-API surface of nfset.c (this file: the handle and the module; napi-read.c: get and dump;
 * napi-apply.c: changes). Every exchange has a synchronous form and one on libuv's thread pool
 * that settles a promise: a job's 20,000 keys take ~100 ms and a batch of 1,000 connections'
 * changes ~15 ms, which must not stop the event loop; small ones are cheaper done at once.
 *
 *   open(nsPath | null, table, family) → handle   (family: NFPROTO_INET 1 or NFPROTO_NETDEV 5)
 *   apply(handle, [[op, set, keyLen, keys: Buffer, comments: (string|null)[] | null], …])
 *   applyAsync(…the same) → Promise<undefined>
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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "napi-box.h"

napi_value errno_error(napi_env env, const char *what, int err) {
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

napi_value throw_errno(napi_env env, const char *what, int err) {
  napi_throw(env, errno_error(env, what, err));
  return NULL;
}

char *string_arg(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}


static void finalize_box(napi_env env, void *data, void *hint) {
  nfset_box *box = data;
  /* A pending async call holds a reference, so busy only at the environment's teardown, with a
   * worker still on the socket: leave it to the exiting process. */
  if (box->busy) return;
  nfset_close(box->c);
  free(box);
}

nfset_box *box_arg(napi_env env, napi_value v) {
  void *p = NULL;
  napi_get_value_external(env, v, &p);
  return p;
}

/* The box's connection if a call may use it now, else NULL with an exception pending. */
nfset_conn *usable(napi_env env, nfset_box *box, const char *what) {
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

/* Queues work on libuv's thread pool for an async call on the handle argv0; the handle stays
 * alive (a reference) and busy until the completion calls async_done. NULL: nothing queued, an
 * exception pending. */
napi_value async_start(napi_env env, napi_value handle, const char *name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *data, nfset_async *a) {
  napi_value promise, nm;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &nm);
  if (napi_create_reference(env, handle, 1, &a->href) != napi_ok || napi_create_promise(env, &a->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, nm, execute, complete, data, &a->work) != napi_ok || napi_queue_async_work(env, a->work) != napi_ok) {
    /* (leaks the reference and promise of a failed N-API call: never seen) */
    napi_throw_error(env, NULL, "nfset: cannot queue the call");
    return NULL;
  }
  a->box->busy = 1;
  return promise;
}

/* In a completion: frees the handle for the next call (closing it if close() came meanwhile)
 * and settles the promise — rejected with ECANCELED or r, else resolved with result(). */
void async_done(napi_env env, napi_status status, nfset_async *a, const char *what, int r, napi_value (*result)(napi_env, void *), void *data) {
  nfset_box *box = a->box;
  box->busy = 0;
  if (box->close_pending) {
    nfset_close(box->c);
    box->c = NULL;
    box->close_pending = 0;
  }
  if (status != napi_ok) napi_reject_deferred(env, a->deferred, errno_error(env, what, ECANCELED));
  else if (r) napi_reject_deferred(env, a->deferred, errno_error(env, what, r));
  else napi_resolve_deferred(env, a->deferred, result(env, data));
  napi_delete_reference(env, a->href);
  napi_delete_async_work(env, a->work);
}

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
    { "applyAsync", NULL, js_apply_async, NULL, NULL, NULL, napi_default, NULL },
    { "get", NULL, js_get, NULL, NULL, NULL, napi_default, NULL },
    { "getAsync", NULL, js_get_async, NULL, NULL, NULL, napi_default, NULL },
    { "dump", NULL, js_dump, NULL, NULL, NULL, napi_default, NULL },
    { "dumpAsync", NULL, js_dump_async, NULL, NULL, NULL, napi_default, NULL },
    { "rules", NULL, js_rules, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
