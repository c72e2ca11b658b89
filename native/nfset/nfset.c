/* nf_tables set elements over netlink, built and parsed by libnftnl, sent by libmnl.
 *
 * Why these shapes (measured on kernel 6.18, see docs/counters.md):
 *  - changes go in one NFNL_MSG_BATCH_BEGIN … END transaction, all or nothing, as nft does;
 *  - one message holds at most ~64 KB of elements (NFTA_SET_ELEM_LIST_ELEMENTS is a 16-bit
 *    nest), so a big change is many messages in one batch, sent by one sendmsg, which needs
 *    SO_SNDBUFFORCE;
 *  - keyed reads are NFT_MSG_GETSETELEM without NLM_F_DUMP: one reply per key, in order; the
 *    kernel stops at the first missing key with ENOENT, so the rest is asked again. */
#define _GNU_SOURCE
#include "nfset.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>

#ifndef NFT_MSG_DESTROYSETELEM
#define NFT_MSG_DESTROYSETELEM 30 /* kernel ≥ 6.3: delete that ignores a missing element */
#endif

#define ELEMS_BUDGET 60000      /* bytes of elements per message, under the 16-bit nest */
#define KEYS_PER_GET 1024       /* keys per GETSETELEM: replies stay well inside the rcvbuf */
#define RECV_SIZE (1 << 18)
#define RCVBUF (8 << 20)
#define SNDBUF (1 << 20)

struct nfset_conn {
  uint16_t family; /* NFPROTO_INET, or NFPROTO_NETDEV for a job's link */
  struct mnl_socket *nl;
  uint32_t portid, seq;
  int sndbuf;
  char table[64];
  char *rbuf;
};

static int enter_netns(const char *path, int *saved) {
  *saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (*saved < 0) return -errno;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
    int e = -errno;
    if (fd >= 0) close(fd);
    close(*saved);
    return e;
  }
  close(fd);
  return 0;
}

nfset_conn *nfset_open(const char *ns_path, const char *table, uint16_t family, int *err) {
  if (strlen(table) >= sizeof(((nfset_conn *)0)->table)) { *err = -ENAMETOOLONG; return NULL; }
  int saved = -1;
  /* A netlink socket stays in the namespace it was made in: enter, open, come back (setns
   * changes only this thread). */
  if (ns_path && (*err = enter_netns(ns_path, &saved)) < 0) return NULL;
  struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  int open_err = nl ? 0 : -errno;
  if (ns_path) {
    if (setns(saved, CLONE_NEWNET) < 0) abort(); /* never run on in the wrong namespace */
    close(saved);
  }
  if (!nl) { *err = open_err; return NULL; }
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) { *err = -errno; mnl_socket_close(nl); return NULL; }
  nfset_conn *c = calloc(1, sizeof *c);
  c->rbuf = malloc(RECV_SIZE);
  if (!c || !c->rbuf) abort();
  c->nl = nl;
  c->portid = mnl_socket_get_portid(nl);
  c->seq = 1;
  c->family = family;
  strcpy(c->table, table);
  int fd = mnl_socket_get_fd(nl), rcv = RCVBUF, one = 1;
  /* Many replies per read request, and errors of a big batch, must not overflow the queue. */
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
  c->sndbuf = SNDBUF; /* apply() raises it for bigger batches, never lowers it */
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &c->sndbuf, sizeof c->sndbuf);
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  struct timeval tv = { .tv_sec = 10 }; /* a lost answer fails the call, never hangs the daemon */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return c;
}

void nfset_close(nfset_conn *c) {
  if (!c) return;
  mnl_socket_close(c->nl);
  free(c->rbuf);
  free(c);
}

static struct nftnl_set *set_for(nfset_conn *c, const char *name) {
  struct nftnl_set *s = nftnl_set_alloc();
  if (!s) abort();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, c->table);
  nftnl_set_set_str(s, NFTNL_SET_NAME, name);
  return s;
}

static struct nftnl_set_elem *elem_of(const uint8_t *key, uint32_t klen, const char *comment) {
  struct nftnl_set_elem *e = nftnl_set_elem_alloc();
  if (!e) abort();
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, klen);
  if (comment) {
    /* The TLV nft writes and reads, so `nft list` shows our comments and harvest finds them. */
    struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFTNL_UDATA_COMMENT_MAXLEN + 8);
    if (!ud) abort();
    nftnl_udata_put_strz(ud, NFTNL_UDATA_SET_ELEM_COMMENT, comment);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
    nftnl_udata_buf_free(ud);
  }
  return e;
}

static uint32_t elem_size(uint32_t klen, const char *comment) {
  uint32_t sz = 3 * NLA_HDRLEN + NLA_ALIGN(klen);
  if (comment) sz += NLA_HDRLEN + NLA_ALIGN(strlen(comment) + 3);
  return sz;
}

static const char *comment_at(const nfset_op *op, uint32_t i) {
  return op->comments ? op->comments[i] : NULL;
}

int nfset_apply(nfset_conn *c, const nfset_op *ops, size_t nops) {
  size_t cap = 2 * MNL_NLMSG_HDRLEN + 64;
  for (size_t k = 0; k < nops; k++) {
    size_t bytes = 0;
    for (uint32_t i = 0; i < ops[k].n; i++) bytes += elem_size(ops[k].klen, comment_at(&ops[k], i));
    cap += bytes + (bytes / ELEMS_BUDGET + 1) * (ELEMS_BUDGET / 8 + 512);
  }
  char *buf = malloc(cap);
  if (!buf) return -ENOMEM;
  size_t len = 0;
  uint32_t begin_seq = c->seq++;
  nftnl_batch_begin(buf, begin_seq);
  len += NLMSG_ALIGN(((struct nlmsghdr *)buf)->nlmsg_len);
  uint32_t first = c->seq, msgs = 0;
  for (size_t k = 0; k < nops; k++) {
    const nfset_op *op = &ops[k];
    int type = op->op == NFSET_ADD ? NFT_MSG_NEWSETELEM : op->op == NFSET_DESTROY ? NFT_MSG_DESTROYSETELEM : NFT_MSG_DELSETELEM;
    uint16_t flags = NLM_F_ACK | (op->op == NFSET_ADD ? NLM_F_CREATE : 0);
    for (uint32_t i = 0; i < op->n;) {
      struct nftnl_set *s = set_for(c, op->set);
      for (uint32_t used = 0; i < op->n && used < ELEMS_BUDGET; i++) {
        const char *cm = comment_at(op, i);
        used += elem_size(op->klen, cm);
        nftnl_set_elem_add(s, elem_of(op->keys + (size_t)i * op->klen, op->klen, cm));
      }
      struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf + len, type, c->family, flags, c->seq++);
      nftnl_set_elems_nlmsg_build_payload(nlh, s);
      nftnl_set_free(s);
      len += NLMSG_ALIGN(nlh->nlmsg_len);
      msgs++;
    }
  }
  uint32_t end_seq = c->seq++;
  struct nlmsghdr *end = nftnl_batch_end(buf + len, end_seq);
  len += NLMSG_ALIGN(end->nlmsg_len);
  if (msgs == 0) { free(buf); return 0; }
  if ((int)len + 4096 > c->sndbuf) {
    int want = (int)len + 4096; /* the kernel refuses a message larger than the send buffer */
    setsockopt(mnl_socket_get_fd(c->nl), SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want);
    c->sndbuf = want;
  }
  ssize_t sent = mnl_socket_sendto(c->nl, buf, len);
  free(buf);
  if (sent < 0) return -errno;
  /* One ack or error per element message, delivered after the whole batch ran; an error on
   * the batch's own begin or end (out of memory) ends it at once. */
  int first_err = 0;
  for (uint32_t acked = 0; acked < msgs;) {
    int n = (int)mnl_socket_recvfrom(c->nl, c->rbuf, RECV_SIZE);
    if (n < 0) return first_err ? first_err : -errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)c->rbuf; mnl_nlmsg_ok(h, n); h = mnl_nlmsg_next(h, &n)) {
      if (h->nlmsg_seq < begin_seq || h->nlmsg_seq > end_seq || h->nlmsg_type != NLMSG_ERROR) continue;
      int e = ((struct nlmsgerr *)mnl_nlmsg_get_payload(h))->error;
      if (e && !first_err) first_err = e;
      if (h->nlmsg_seq == begin_seq || h->nlmsg_seq == end_seq) return first_err;
      if (h->nlmsg_seq >= first) acked++;
    }
  }
  return first_err;
}

struct ctr { uint64_t packets, bytes; int seen; };

static int counter_cb(struct nftnl_expr *e, void *data) {
  struct ctr *c = data;
  const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
  if (name && strcmp(name, "counter") == 0) {
    c->packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
    c->bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
    c->seen = 1;
  }
  return 0;
}

static int comment_cb(const struct nftnl_udata *attr, void *data) {
  if (nftnl_udata_type(attr) != NFTNL_UDATA_SET_ELEM_COMMENT) return 0;
  uint8_t len = nftnl_udata_len(attr);
  const char *v = nftnl_udata_get(attr);
  if (len == 0 || v[len - 1] != '\0') return 0; /* not a string nft would have written */
  *(char **)data = strdup(v);
  return 0;
}

/* An element's counter (NFTA_SET_ELEM_EXPR or NFTA_SET_ELEM_EXPRESSIONS, libnftnl folds both
 * into one list) and comment. */
static void elem_info(struct nftnl_set_elem *e, double *counters, char **comment) {
  struct ctr ct = { 0 };
  nftnl_set_elem_expr_foreach(e, counter_cb, &ct);
  counters[0] = (double)ct.packets;
  counters[1] = (double)ct.bytes;
  *comment = NULL;
  uint32_t ulen = 0;
  if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
    const void *ud = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &ulen);
    nftnl_udata_parse(ud, ulen, comment_cb, comment);
  }
}

typedef int (*elem_fn)(struct nftnl_set_elem *e, void *ctx);

/* Feeds each element of a NEWSETELEM message to fn; fn's negative result stops. */
static int each_elem(const struct nlmsghdr *h, elem_fn fn, void *ctx) {
  struct nftnl_set *s = nftnl_set_alloc();
  if (!s) abort();
  int r = nftnl_set_elems_nlmsg_parse(h, s) < 0 ? -EPROTO : nftnl_set_elem_foreach(s, fn, ctx);
  nftnl_set_free(s);
  return r < 0 ? r : 0;
}

struct get_ctx {
  uint32_t klen, next, end;
  const uint8_t *keys;
  uint8_t *found;
  double *counters;
  char **comments;
};

static int get_elem(struct nftnl_set_elem *e, void *p) {
  struct get_ctx *g = p;
  uint32_t klen = 0;
  const void *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
  if (klen != g->klen) return -EPROTO;
  /* Replies come in the order of the keys asked; keys passed over were not found. */
  for (uint32_t j = g->next; j < g->end; j++) {
    if (memcmp(key, g->keys + (size_t)j * klen, klen) != 0) continue;
    g->found[j] = 1;
    elem_info(e, g->counters + 2 * (size_t)j, &g->comments[j]);
    g->next = j + 1;
    return 0;
  }
  return -EPROTO;
}

/* 0 if the set exists, else -errno (ENOENT): a missing set must not read as missing keys. */
static int set_exists(nfset_conn *c, const char *set) {
  char buf[1024];
  uint32_t seq = c->seq++;
  struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, c->family, NLM_F_ACK, seq);
  struct nftnl_set *s = set_for(c, set);
  nftnl_set_nlmsg_build_payload(nlh, s);
  nftnl_set_free(s);
  if (mnl_socket_sendto(c->nl, buf, nlh->nlmsg_len) < 0) return -errno;
  for (;;) {
    int len = (int)mnl_socket_recvfrom(c->nl, c->rbuf, RECV_SIZE);
    if (len < 0) return -errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)c->rbuf; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len))
      if (h->nlmsg_seq == seq && h->nlmsg_type == NLMSG_ERROR) return ((struct nlmsgerr *)mnl_nlmsg_get_payload(h))->error;
  }
}

int nfset_get(nfset_conn *c, const char *set, uint32_t klen, const uint8_t *keys, uint32_t n, uint8_t *found, double *counters, char **comments) {
  memset(found, 0, n);
  memset(comments, 0, n * sizeof *comments);
  memset(counters, 0, 2 * sizeof(double) * n);
  char *buf = malloc(ELEMS_BUDGET + 4096);
  if (!buf) return -ENOMEM;
  int r = 0, checked = 0;
  for (uint32_t i = 0; i < n && !r;) {
    struct nftnl_set *s = set_for(c, set);
    uint32_t m = 0;
    for (uint32_t used = 0; i + m < n && m < KEYS_PER_GET && used < ELEMS_BUDGET; m++) {
      used += elem_size(klen, NULL);
      nftnl_set_elem_add(s, elem_of(keys + (size_t)(i + m) * klen, klen, NULL));
    }
    uint32_t seq = c->seq++;
    struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, c->family, NLM_F_ACK, seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    if (mnl_socket_sendto(c->nl, buf, nlh->nlmsg_len) < 0) { r = -errno; break; }
    struct get_ctx g = { klen, i, i + m, keys, found, counters, comments };
    for (int done = 0; !done && !r;) {
      int len = (int)mnl_socket_recvfrom(c->nl, c->rbuf, RECV_SIZE);
      if (len < 0) { r = -errno; break; }
      for (struct nlmsghdr *h = (struct nlmsghdr *)c->rbuf; !done && !r && mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
        if (h->nlmsg_seq != seq) continue;
        if (h->nlmsg_type != NLMSG_ERROR) { r = each_elem(h, get_elem, &g); continue; }
        int e = ((struct nlmsgerr *)mnl_nlmsg_get_payload(h))->error;
        done = 1;
        if (e == 0) i += m;                  /* every key answered */
        else if (e == -ENOENT) {
          i = g.next + 1; /* key g.next is missing: ask again after it */
          if (!checked++ && (r = set_exists(c, set)) < 0) break;
        } else r = e;
      }
    }
  }
  free(buf);
  return r;
}

static int dump_elem(struct nftnl_set_elem *e, void *p) {
  nfset_elems *o = p;
  uint32_t klen = 0;
  const void *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
  if (o->n && klen != o->klen) return -EPROTO;
  o->klen = klen;
  if (o->n == o->cap) {
    o->cap = o->cap ? 2 * o->cap : 1024;
    o->keys = realloc(o->keys, (size_t)o->cap * 64);
    o->counters = realloc(o->counters, (size_t)o->cap * 2 * sizeof(double));
    o->comments = realloc(o->comments, (size_t)o->cap * sizeof(char *));
    if (!o->keys || !o->counters || !o->comments) abort();
  }
  memcpy(o->keys + (size_t)o->n * klen, key, klen);
  elem_info(e, o->counters + 2 * (size_t)o->n, &o->comments[o->n]);
  o->n++;
  return 0;
}

int nfset_dump(nfset_conn *c, const char *set, nfset_elems *out) {
  char buf[1024];
  uint32_t seq = c->seq++;
  struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, c->family, NLM_F_DUMP | NLM_F_ACK, seq);
  struct nftnl_set *s = set_for(c, set);
  nftnl_set_elems_nlmsg_build_payload(nlh, s);
  nftnl_set_free(s);
  if (mnl_socket_sendto(c->nl, buf, nlh->nlmsg_len) < 0) return -errno;
  for (;;) {
    int len = (int)mnl_socket_recvfrom(c->nl, c->rbuf, RECV_SIZE);
    if (len < 0) return -errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)c->rbuf; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        int e = ((struct nlmsgerr *)mnl_nlmsg_get_payload(h))->error;
        if (e) return e;
        continue;
      }
      int r = each_elem(h, dump_elem, out);
      if (r) return r;
    }
  }
}

void nfset_elems_free(nfset_elems *e) {
  for (uint32_t i = 0; i < e->n; i++) free(e->comments[i]);
  free(e->keys);
  free(e->counters);
  free(e->comments);
  memset(e, 0, sizeof *e);
}

/* Reads replies to seq until its ack or NLMSG_DONE; counts the data messages. */
static int count_replies(nfset_conn *c, uint32_t seq, uint32_t *count) {
  for (;;) {
    int len = (int)mnl_socket_recvfrom(c->nl, c->rbuf, RECV_SIZE);
    if (len < 0) return -errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)c->rbuf; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type != NLMSG_ERROR) { (*count)++; continue; }
      int e = ((struct nlmsgerr *)mnl_nlmsg_get_payload(h))->error;
      if (e || !(h->nlmsg_flags & NLM_F_MULTI)) return e;
    }
  }
}

int nfset_rules(nfset_conn *c, const char *chain, uint32_t *count) {
  char buf[1024];
  uint32_t chains = 0, seq = c->seq++;
  /* The chain first: a rule dump of a missing chain is empty, not an error. */
  struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, c->family, NLM_F_ACK, seq);
  struct nftnl_chain *ch = nftnl_chain_alloc();
  if (!ch) abort();
  nftnl_chain_set_str(ch, NFTNL_CHAIN_TABLE, c->table);
  nftnl_chain_set_str(ch, NFTNL_CHAIN_NAME, chain);
  nftnl_chain_nlmsg_build_payload(nlh, ch);
  nftnl_chain_free(ch);
  if (mnl_socket_sendto(c->nl, buf, nlh->nlmsg_len) < 0) return -errno;
  int r = count_replies(c, seq, &chains);
  if (r) return r;
  seq = c->seq++;
  nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, c->family, NLM_F_DUMP | NLM_F_ACK, seq);
  struct nftnl_rule *rule = nftnl_rule_alloc();
  if (!rule) abort();
  nftnl_rule_set_str(rule, NFTNL_RULE_TABLE, c->table);
  nftnl_rule_set_str(rule, NFTNL_RULE_CHAIN, chain);
  nftnl_rule_nlmsg_build_payload(nlh, rule);
  nftnl_rule_free(rule);
  if (mnl_socket_sendto(c->nl, buf, nlh->nlmsg_len) < 0) return -errno;
  *count = 0;
  return count_replies(c, seq, count);
}
