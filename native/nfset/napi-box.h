/* What the N-API files of nfset share: the handle's box, errors, arguments, async plumbing. */
#ifndef NFSET_NAPI_BOX_H
#define NFSET_NAPI_BOX_H
#define NAPI_VERSION 8
#include <node_api.h>

#include "nfset.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "nfset: N-API call failed: " #call); return NULL; } } while (0)

/* The handle is an external of this box. close() clears c, so a closed handle throws instead of
 * touching freed memory. busy and close_pending are only touched on the JS thread: an async
 * call sets busy when it queues its work and clears it in its completion, where a close() that
 * came meanwhile is carried out. */
typedef struct {
  nfset_conn *c;
  int busy, close_pending;
} nfset_box;

/* An async call's N-API state; box is the handle's. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref href; /* keeps the handle (and its socket) alive until completion */
  nfset_box *box;
} nfset_async;

napi_value errno_error(napi_env env, const char *what, int err);
napi_value throw_errno(napi_env env, const char *what, int err);
/* A malloc'd copy of a JS string; NULL if v is not one. */
char *string_arg(napi_env env, napi_value v);
nfset_box *box_arg(napi_env env, napi_value v);
/* The box's connection if a call may use it now, else NULL with an exception pending. */
nfset_conn *usable(napi_env env, nfset_box *box, const char *what);
napi_value async_start(napi_env env, napi_value handle, const char *name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *data, nfset_async *a);
void async_done(napi_env env, napi_status status, nfset_async *a, const char *what, int r, napi_value (*result)(napi_env, void *), void *data);

napi_value js_apply(napi_env env, napi_callback_info info);
napi_value js_apply_async(napi_env env, napi_callback_info info);
napi_value js_get(napi_env env, napi_callback_info info);
napi_value js_get_async(napi_env env, napi_callback_info info);
napi_value js_dump(napi_env env, napi_callback_info info);
napi_value js_dump_async(napi_env env, napi_callback_info info);
#endif
