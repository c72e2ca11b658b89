#!/usr/bin/env python3
"""Traffic for the hardening tests.

server PORT            accept TCP on [::]:PORT; per connection: read a line, answer 1000 bytes,
                       then echo until the client closes.
client HOST PORT       read commands on stdin, answer "ok <n>" on stdout when done:
                         open      connect, exchange, keep the connection open
                         close     close every open connection
                         burst N   N short connections (connect, exchange, close), one after another
                         par N     N short connections at once (threads)
"""
import socket
import sys
import threading

def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(('::', port))
    s.listen(1024)
    print('listening', flush=True)
    def handle(c):
        try:
            f = c.makefile('rb')
            if f.readline():
                c.sendall(b'x' * 999 + b'\n')
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()

def exchange(host, port):
    c = socket.create_connection((host, port), timeout=10)
    c.sendall(b'hello\n')
    got = 0
    while got < 1000:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    return c

def client(host, port):
    held = []
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == 'open':
            held.append(exchange(host, port))
            n = 1
        elif cmd[0] == 'close':
            n = len(held)
            for c in held:
                c.close()
            held = []
        elif cmd[0] == 'burst':
            n = int(cmd[1])
            for _ in range(n):
                exchange(host, port).close()
        elif cmd[0] == 'par':
            n = int(cmd[1])
            ts = [threading.Thread(target=lambda: exchange(host, port).close()) for _ in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        print('ok', n, flush=True)

if __name__ == '__main__':
    if sys.argv[1] == 'server':
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
