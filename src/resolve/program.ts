/**
 * The bpftrace program, embedded so the daemon ships as plain JS (no .bt file to find at run
 * time). Tracepoints only: this kernel offers no kprobes, and tracepoints are a stable ABI.
 * One short line per event, space separated, parsed strictly by events.ts:
 *
 *   C <ns> <pid> <family> <saddr> <sport> <daddr> <dport> <netns> <newstate>   connect
 *   A <ns> <pid> <family> <laddr> <lport> <raddr> <rport> <netns>              accept
 *   F <ns> <parent tgid> <child pid>                                           fork (not threads)
 *   X <ns> <tgid> <start ticks>                                                process exit
 *
 * <ns> is bpftrace's nsecs (CLOCK_MONOTONIC, as process.hrtime), <netns> the network namespace
 * inode, start ticks the /proc/PID/stat field 22 value of the exiting process (USER_HZ = 100).
 *
 * connect: at TCP_SYN_SENT the connecting process is current but the source port is still 0
 * (tcp_v4_connect binds it after the state change), so the pid is kept per socket. It is printed
 * at the latest when the socket leaves SYN_SENT — to ESTABLISHED on the SYN-ACK or CLOSE on a RST
 * or when connect gives up — when the tracepoint carries the full tuple (tcp_set_state traces
 * before CLOSE releases the port). This sees every connect path (blocking or not, io_uring, TFO).
 * But the SYN-ACK may come seconds after the SYN (a peer whose backlog is full drops SYNs until
 * the 1 s, 3 s … retransmission): so when connect() returns with the socket still in SYN_SENT
 * (EINPROGRESS, or 0 for TFO), its exit prints the event at once, from the fd's socket, and the
 * state change then prints nothing. <newstate> is then the socket's state at that moment (2).
 * accept: the new fd → struct socket → struct sock, in the accepting process.
 */
export const BPF_PROGRAM = String.raw`
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 2/
{
  @conn[(uint64)args->skaddr] = pid;
}

tracepoint:syscalls:sys_enter_connect
{
  @cfd[tid] = args->fd + 1;
}

tracepoint:syscalls:sys_exit_connect /@cfd[tid]/
{
  $fd = @cfd[tid] - 1;
  delete(@cfd[tid]);
  if (args->ret == 0 || args->ret == -115) {
    $file = *(curtask->files->fdt->fd + $fd);
    $sk = ((struct socket *)$file->private_data)->sk;
    $c = $sk->__sk_common;
    if ($c.skc_state == 2 && @conn[(uint64)$sk]) {
      if ($c.skc_family == 2) {
        printf("C %llu %u 4 %s %u %s %u %u %d\n", nsecs, pid, ntop($c.skc_rcv_saddr), $c.skc_num,
               ntop($c.skc_daddr), bswap($c.skc_dport), $c.skc_net.net->ns.inum, $c.skc_state);
      } else {
        printf("C %llu %u 6 %s %u %s %u %u %d\n", nsecs, pid, ntop($c.skc_v6_rcv_saddr.in6_u.u6_addr8), $c.skc_num,
               ntop($c.skc_v6_daddr.in6_u.u6_addr8), bswap($c.skc_dport), $c.skc_net.net->ns.inum, $c.skc_state);
      }
      delete(@conn[(uint64)$sk]);
    }
  }
}

tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->oldstate == 2 && @conn[(uint64)args->skaddr]/
{
  $sk = (struct sock *)args->skaddr;
  $netns = $sk->__sk_common.skc_net.net->ns.inum;
  if (args->family == 2) {
    printf("C %llu %u 4 %s %u %s %u %u %d\n", nsecs, @conn[(uint64)args->skaddr], ntop(args->saddr), args->sport,
           ntop(args->daddr), args->dport, $netns, args->newstate);
  } else {
    printf("C %llu %u 6 %s %u %s %u %u %d\n", nsecs, @conn[(uint64)args->skaddr], ntop(args->saddr_v6), args->sport,
           ntop(args->daddr_v6), args->dport, $netns, args->newstate);
  }
  delete(@conn[(uint64)args->skaddr]);
}

tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /args->ret >= 0/
{
  $file = *(curtask->files->fdt->fd + args->ret);
  $sock = (struct socket *)$file->private_data;
  $c = $sock->sk->__sk_common;
  if ($c.skc_family == 2) {
    printf("A %llu %u 4 %s %u %s %u %u\n", nsecs, pid, ntop($c.skc_rcv_saddr), $c.skc_num,
           ntop($c.skc_daddr), bswap($c.skc_dport), $c.skc_net.net->ns.inum);
  } else if ($c.skc_family == 10) {
    printf("A %llu %u 6 %s %u %s %u %u\n", nsecs, pid, ntop($c.skc_v6_rcv_saddr.in6_u.u6_addr8), $c.skc_num,
           ntop($c.skc_v6_daddr.in6_u.u6_addr8), bswap($c.skc_dport), $c.skc_net.net->ns.inum);
  }
}

tracepoint:task:task_newtask /(args->clone_flags & 0x10000) == 0/
{
  printf("F %llu %u %u\n", nsecs, pid, args->pid);
}

tracepoint:sched:sched_process_exit /args->group_dead/
{
  printf("X %llu %u %llu\n", nsecs, pid, curtask->start_boottime / 10000000);
}

END
{
  clear(@conn); // bpftrace prints maps at exit; these are not events
  clear(@cfd);
}
`;
