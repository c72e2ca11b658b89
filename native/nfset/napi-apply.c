/* Changes (apply), at once or on the thread pool (see napi.c for the JavaScript surface). The
 * arguments are copied into C memory either way: a Buffer may change once JavaScript runs. */
#include <stdlib.h>
#include <string.h>

#include "napi-box.h"

typedef struct {
  nfset_async a;
  nfset_op *ops;
  uint32_t nops;
  void **owned; /* every block allocated for ops, freed with it */
  size_t nowned, capowned;
  int r;
} nfset_change;

static void *own(nfset_change *ch, void *p) {
  if (!p) abort();
  if (ch->nowned == ch->capowned) {
    ch->capowned = ch->capowned ? 2 * ch->capowned : 64;
    ch->owned = realloc(ch->owned, ch->capowned * sizeof *ch->owned);
    if (!ch->owned) abort();
  }
  return ch->owned[ch->nowned++] = p;
}

static void change_free(nfset_change *ch) {
  for (size_t i = 0; i < ch->nowned; i++) free(ch->owned[i]);
  free(ch->owned);
  free(ch->ops);
  free(ch);
}

/* [[op, set, keyLen, keys, comments | null], …] into C; NULL with a TypeError pending if bad. */
static nfset_change *change_args(napi_env env, napi_value list) {
  uint32_t nops = 0;
  if (napi_get_array_length(env, list, &nops) != napi_ok) {
    napi_throw_type_error(env, NULL, "nfset.apply: (handle, [[op, set, keyLen, keys, comments], …])");
    return NULL;
  }
  nfset_change *ch = calloc(1, sizeof *ch);
  if (!ch) abort();
  ch->nops = nops;
  ch->ops = calloc(nops ? nops : 1, sizeof *ch->ops);
  if (!ch->ops) abort();
  const char *bad = NULL;
  for (uint32_t k = 0; k < nops && !bad; k++) {
    napi_value o, v;
    napi_valuetype ot = napi_undefined;
    int32_t op = 0;
    uint32_t klen = 0;
    /* Every element read is checked: a value that is not an op array would leave v unset. */
    if (napi_get_element(env, list, k, &o) != napi_ok || napi_typeof(env, o, &ot) != napi_ok || ot != napi_object) { bad = "each op must be an array"; break; }
    if (napi_get_element(env, o, 0, &v) != napi_ok || napi_get_value_int32(env, v, &op) != napi_ok || op < NFSET_ADD || op > NFSET_DELETE) { bad = "op must be 0 (add), 1 (destroy) or 2 (delete)"; break; }
    if (napi_get_element(env, o, 1, &v) != napi_ok) { bad = "set name must be a string"; break; }
    char *set = string_arg(env, v);
    if (!set) { bad = "set name must be a string"; break; }
    own(ch, set);
    if (napi_get_element(env, o, 2, &v) != napi_ok || napi_get_value_uint32(env, v, &klen) != napi_ok) { bad = "keys must be a Buffer of whole keys"; break; }
    if (napi_get_element(env, o, 3, &v) != napi_ok) { bad = "keys must be a Buffer of whole keys"; break; }
    void *data = NULL;
    size_t blen = 0;
    if (napi_get_buffer_info(env, v, &data, &blen) != napi_ok || klen == 0 || klen > 64 || blen % klen) { bad = "keys must be a Buffer of whole keys"; break; }
    uint8_t *keys = own(ch, malloc(blen ? blen : 1));
    if (blen) memcpy(keys, data, blen);
    ch->ops[k] = (nfset_op){ .op = op, .set = set, .klen = klen, .keys = keys, .n = (uint32_t)(blen / klen) };
    napi_valuetype t = napi_undefined;
    if (napi_get_element(env, o, 4, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) { bad = "comments must be an array or null"; break; }
    if (t != napi_object) continue;
    char **cm = own(ch, calloc(ch->ops[k].n ? ch->ops[k].n : 1, sizeof *cm));
    for (uint32_t i = 0; i < ch->ops[k].n; i++) {
      napi_value s;
      napi_valuetype st = napi_undefined;
      if (napi_get_element(env, v, i, &s) == napi_ok && napi_typeof(env, s, &st) == napi_ok && st == napi_string) cm[i] = own(ch, string_arg(env, s));
    }
    ch->ops[k].comments = (const char *const *)cm;
  }
  if (!bad) return ch;
  change_free(ch);
  napi_throw_type_error(env, NULL, bad);
  return NULL;
}

static void change_execute(napi_env env, void *data) {
  nfset_change *ch = data;
  ch->r = nfset_apply(ch->a.box->c, ch->ops, ch->nops);
}

static napi_value no_result(napi_env env, void *data) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static void change_complete(napi_env env, napi_status status, void *data) {
  nfset_change *ch = data;
  async_done(env, status, &ch->a, "nfset.applyAsync", ch->r, no_result, ch);
  change_free(ch);
}

/* The box and the copied change, NULL with an exception pending. */
static nfset_change *change_start(napi_env env, napi_callback_info info, napi_value *handle, const char *what) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nfset_box *box = box_arg(env, argv[0]);
  if (!usable(env, box, what)) return NULL;
  nfset_change *ch = change_args(env, argv[1]);
  if (!ch) return NULL;
  ch->a.box = box;
  *handle = argv[0];
  return ch;
}

napi_value js_apply(napi_env env, napi_callback_info info) {
  napi_value handle;
  nfset_change *ch = change_start(env, info, &handle, "nfset.apply");
  if (!ch) return NULL;
  change_execute(env, ch);
  int r = ch->r;
  change_free(ch);
  if (r) return throw_errno(env, "nfset.apply", r);
  return NULL;
}

napi_value js_apply_async(napi_env env, napi_callback_info info) {
  napi_value handle;
  nfset_change *ch = change_start(env, info, &handle, "nfset.applyAsync");
  if (!ch) return NULL;
  napi_value promise = async_start(env, handle, "nfset.applyAsync", change_execute, change_complete, ch, &ch->a);
  if (!promise) change_free(ch);
  return promise;
}
