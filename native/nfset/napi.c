/* N-API surface of nfset.c. Calls are synchronous: each is one netlink exchange of at most a
 * few milliseconds per thousand elements, serialised by the caller anyway.
 *
 *   open(nsPath | null, table, family) → handle   (family: NFPROTO_INET 1 or NFPROTO_NETDEV 5)
 *   apply(handle, [[op, set, keyLen, keys: Buffer, comments: (string|null)[] | null], …])
 *   get(handle, set, keyLen, keys: Buffer) → [found: Uint8Array, counters: Float64Array, comments[]]
 *   dump(handle, set) → [keys: Buffer, keyLen, counters: Float64Array, comments[]]
 *   rules(handle, chain) → number of rules in that chain of the table
 *   close(handle)
 * Errors are thrown as Error with .errno (positive) and .code (e.g. "ENOENT"). */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfset.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "nfset: N-API call failed: " #call); return NULL; } } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
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
  napi_throw(env, e);
  return NULL;
}

static char *string_arg(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static nfset_conn *conn_arg(napi_env env, napi_value v) {
  void *p = NULL;
  napi_get_value_external(env, v, &p);
  return *(nfset_conn **)p;
}

/* The handle is an external holding a pointer that close() clears, so a closed handle throws
 * instead of touching freed memory. */
static void finalize_box(napi_env env, void *data, void *hint) {
  nfset_conn **box = data;
  nfset_close(*box);
  free(box);
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
  nfset_conn **box = malloc(sizeof *box);
  *box = c;
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
  nfset_close(*(nfset_conn **)p);
  *(nfset_conn **)p = NULL;
  return NULL;
}

static napi_value js_apply(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = conn_arg(env, argv[0]);
  if (!c) { napi_throw_error(env, NULL, "nfset: handle is closed"); return NULL; }
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

static napi_value js_get(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = conn_arg(env, argv[0]);
  if (!c) { napi_throw_error(env, NULL, "nfset: handle is closed"); return NULL; }
  char *set = string_arg(env, argv[1]);
  uint32_t klen = 0;
  napi_get_value_uint32(env, argv[2], &klen);
  void *keys = NULL;
  size_t blen = 0;
  if (!set || napi_get_buffer_info(env, argv[3], &keys, &blen) != napi_ok || klen == 0 || klen > 64 || blen % klen) {
    free(set);
    napi_throw_type_error(env, NULL, "nfset.get: (handle, set, keyLen, keys Buffer)");
    return NULL;
  }
  uint32_t n = (uint32_t)(blen / klen);
  napi_value found_ab, found;
  void *found_data = NULL;
  napi_create_arraybuffer(env, n ? n : 1, &found_data, &found_ab);
  double *counters = calloc(2 * (size_t)n + 1, sizeof(double));
  char **comments = calloc(n + 1, sizeof(char *));
  int r = nfset_get(c, set, klen, keys, n, found_data, counters, comments);
  free(set);
  napi_value out = NULL;
  if (r) throw_errno(env, "nfset.get", r);
  else {
    napi_create_typedarray(env, napi_uint8_array, n, found_ab, 0, &found);
    napi_create_array_with_length(env, 3, &out);
    napi_set_element(env, out, 0, found);
    napi_set_element(env, out, 1, float_array(env, counters, 2 * (size_t)n));
    napi_set_element(env, out, 2, comments_array(env, comments, n));
  }
  for (uint32_t i = 0; i < n; i++) free(comments[i]);
  free(comments);
  free(counters);
  return out;
}

static napi_value js_dump(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = conn_arg(env, argv[0]);
  if (!c) { napi_throw_error(env, NULL, "nfset: handle is closed"); return NULL; }
  char *set = string_arg(env, argv[1]);
  if (!set) { napi_throw_type_error(env, NULL, "nfset.dump: (handle, set)"); return NULL; }
  nfset_elems e = { 0 };
  int r = nfset_dump(c, set, &e);
  free(set);
  napi_value out = NULL;
  if (r) throw_errno(env, "nfset.dump", r);
  else {
    napi_value keys, klen;
    napi_create_buffer_copy(env, (size_t)e.n * e.klen, e.keys ? (void *)e.keys : (void *)"", NULL, &keys);
    napi_create_uint32(env, e.klen, &klen);
    napi_create_array_with_length(env, 4, &out);
    napi_set_element(env, out, 0, keys);
    napi_set_element(env, out, 1, klen);
    napi_set_element(env, out, 2, float_array(env, e.counters, 2 * (size_t)e.n));
    napi_set_element(env, out, 3, comments_array(env, e.comments, e.n));
  }
  nfset_elems_free(&e);
  return out;
}

static napi_value js_rules(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_conn *c = conn_arg(env, argv[0]);
  if (!c) { napi_throw_error(env, NULL, "nfset: handle is closed"); return NULL; }
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
    { "dump", NULL, js_dump, NULL, NULL, NULL, napi_default, NULL },
    { "rules", NULL, js_rules, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
