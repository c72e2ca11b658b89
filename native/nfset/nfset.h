/* Element operations on one nf_tables table over one netlink socket, through libnftnl and
 * libmnl. No N-API here: napi.c marshals JavaScript values to and from these calls. */
#ifndef NFSET_H
#define NFSET_H
#include <stddef.h>
#include <stdint.h>

typedef struct nfset_conn nfset_conn;

enum nfset_opcode { NFSET_ADD = 0, NFSET_DESTROY = 1, NFSET_DELETE = 2 };

typedef struct {
  int op;
  const char *set;
  uint32_t klen;
  const uint8_t *keys; /* n keys of klen bytes each */
  uint32_t n;
  const char *const *comments; /* NULL, or n entries (each NULL or a string) */
} nfset_op;

typedef struct {
  uint32_t n, cap, klen;
  uint8_t *keys;
  double *counters;   /* packets, bytes per element */
  char **comments;    /* NULL entries where there is none */
} nfset_elems;

/* Opens a netfilter netlink socket, in the network namespace at ns_path if not NULL. */
nfset_conn *nfset_open(const char *ns_path, const char *table, uint16_t family, int *err);
void nfset_close(nfset_conn *c);
/* All ops in one transaction (a netlink batch): 0, or -errno of the first refused message. */
int nfset_apply(nfset_conn *c, const nfset_op *ops, size_t nops);
/* Keyed reads: found[i] 1 or 0; counters[2i], [2i+1] packets, bytes; comments[i] malloc'd or NULL. */
int nfset_get(nfset_conn *c, const char *set, uint32_t klen, const uint8_t *keys, uint32_t n, uint8_t *found, double *counters, char **comments);
/* The whole set; out must be zeroed; free with nfset_elems_free. */
int nfset_dump(nfset_conn *c, const char *set, nfset_elems *out);
void nfset_elems_free(nfset_elems *e);
/* Rules in one chain of the table; -ENOENT if the table or chain is gone. */
int nfset_rules(nfset_conn *c, const char *chain, uint32_t *count);
#endif
