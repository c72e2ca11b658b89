"""The two ends of a late-registration scenario.

late-peer.py server ADDR PORT --send N [--pace-s S]
    per connection: send N bytes (spread over S seconds), shut down writing (half-close), read
    to EOF, close.
late-peer.py client ADDR PORT [--gate FILE]
    connect with a receive buffer big enough for everything, print "connected", read nothing
    until FILE exists (default: at once), read to EOF, close, print "closed", then stay alive
    (so that it can still be registered).
"""
import argparse, os, socket, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument('role', choices=['server', 'client'])
p.add_argument('addr')
p.add_argument('port', type=int)
p.add_argument('--send', type=int, default=0)
p.add_argument('--pace-s', type=float, default=0)
p.add_argument('--gate', default=None)
a = p.parse_args()
fam = socket.AF_INET6 if ':' in a.addr else socket.AF_INET
CHUNK = 16384


def serve(c):
    steps = max(1, a.send // CHUNK)
    left = a.send
    for i in range(steps):
        n = left if i == steps - 1 else min(CHUNK, left)
        c.sendall(b'x' * n)
        left -= n
        if a.pace_s:
            time.sleep(a.pace_s / steps)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()


if a.role == 'server':
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
else:
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect((a.addr, a.port))
    print('connected', flush=True)
    while a.gate and not os.path.exists(a.gate):
        time.sleep(0.02)
    while s.recv(65536):
        pass
    s.close()
    print('closed', flush=True)
    time.sleep(3600)
