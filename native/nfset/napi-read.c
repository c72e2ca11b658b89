/* get and dump, at once or on the thread pool (see napi.c for the JavaScript surface). */
#include <stdlib.h>
#include <string.h>

#include "napi-box.h"

/* A read's arguments and results, owned by C so that the work can run off the JS thread. */
typedef struct {
  nfset_async a;
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
  rd->a.box = box;
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
  rd->r = rd->dump ? nfset_dump(rd->a.box->c, rd->set, &rd->e) : nfset_get(rd->a.box->c, rd->set, rd->klen, rd->keys, rd->n, rd->found, rd->counters, rd->comments);
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

static napi_value read_result_of(napi_env env, void *data) { return read_result(env, data); }

static void read_complete(napi_env env, napi_status status, void *data) {
  nfset_read *rd = data;
  async_done(env, status, &rd->a, rd->dump ? "nfset.dumpAsync" : "nfset.getAsync", rd->r, read_result_of, rd);
  read_free(rd);
}

static napi_value read_async(napi_env env, napi_callback_info info, int dump) {
  nfset_read *rd = read_args(env, info, dump, 1);
  if (!rd) return NULL;
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_value promise = async_start(env, argv[0], dump ? "nfset.dumpAsync" : "nfset.getAsync", read_execute, read_complete, rd, &rd->a);
  if (!promise) read_free(rd);
  return promise;
}

napi_value js_get(napi_env env, napi_callback_info info) { return read_sync(env, info, 0); }
napi_value js_get_async(napi_env env, napi_callback_info info) { return read_async(env, info, 0); }
napi_value js_dump(napi_env env, napi_callback_info info) { return read_sync(env, info, 1); }
napi_value js_dump_async(napi_env env, napi_callback_info info) { return read_async(env, info, 1); }

