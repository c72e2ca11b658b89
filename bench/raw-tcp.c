/* Sends `count` crafted IPv4 TCP packets through the local output hook as fast as one thread can
 * (a raw socket with IP_HDRINCL passes netfilter's output hooks like any local packet), then
 * prints the nanoseconds per packet. Used by bench/datapath-cost.mjs to time our rules per packet
 * without TCP's coalescing: every packet has the given flags and the same 4-tuple, or with `vary`
 * a source port of its own (SPORT, SPORT+1, …: a new connection's SYN each).
 *   raw-tcp SRC DST SPORT DPORT syn|ack COUNT [vary] */
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 7 && argc != 8) return fprintf(stderr, "usage: raw-tcp SRC DST SPORT DPORT syn|ack COUNT [vary]\n"), 2;
  int vary = argc == 8 && !strcmp(argv[7], "vary");
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s < 0) return perror("socket"), 1;
  unsigned char pkt[sizeof(struct iphdr) + sizeof(struct tcphdr) + 64];
  memset(pkt, 0, sizeof pkt);
  struct iphdr *ip = (struct iphdr *)pkt;
  struct tcphdr *tcp = (struct tcphdr *)(pkt + sizeof *ip);
  ip->version = 4, ip->ihl = 5, ip->ttl = 64, ip->protocol = IPPROTO_TCP, ip->tot_len = htons(sizeof pkt);
  inet_pton(AF_INET, argv[1], &ip->saddr);
  inet_pton(AF_INET, argv[2], &ip->daddr);
  tcp->source = htons(atoi(argv[3])), tcp->dest = htons(atoi(argv[4])), tcp->doff = 5, tcp->window = htons(512);
  if (!strcmp(argv[5], "syn")) tcp->syn = 1; else tcp->ack = 1;
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = ip->daddr };
  long n = atol(argv[6]);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  int sport = atoi(argv[3]);
  for (long i = 0; i < n; i++) {
    if (vary) tcp->source = htons(sport + i % 20000);
    if (sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) < 0) return perror("sendto"), 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
  return 0;
}
