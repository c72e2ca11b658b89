"""One end of test TCP connections, deterministic enough to compare counters with conntrack.

peer.py server ADDR PORT [opts] | peer.py client ADDR PORT --bind LOCAL --port0 P [opts]
Per connection: send --early bytes at once, wait for --gate (a file) to exist, then either
send --send bytes, shut down writing and read to EOF (default), or with --after-eof read to
EOF first and only then send (keeps sending after the peer's FIN: a half-closed connection).
A reader thread drains the socket all along, so both ends can send at once.
"""
import argparse, os, socket, threading, time

p = argparse.ArgumentParser()
p.add_argument('role', choices=['server', 'client'])
p.add_argument('addr')
p.add_argument('port', type=int)
p.add_argument('--bind', default=None)
p.add_argument('--port0', type=int, default=0)
p.add_argument('--count', type=int, default=1)
p.add_argument('--early', type=int, default=0)
p.add_argument('--send', type=int, default=0)
p.add_argument('--gate', default=None)
p.add_argument('--after-eof', action='store_true')
a = p.parse_args()
fam = socket.AF_INET6 if ':' in a.addr else socket.AF_INET
CHUNK = b'x' * 65536


def send(s, n):
    while n > 0:
        k = s.send(CHUNK[:min(n, len(CHUNK))])
        n -= k


def talk(s):
    eof = threading.Event()
    got = [0]

    def reader():
        while True:
            d = s.recv(65536)
            if not d:
                break
            got[0] += len(d)
        eof.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    send(s, a.early)
    if a.gate:
        while not os.path.exists(a.gate):
            time.sleep(0.01)
    if a.after_eof:
        eof.wait()
        send(s, a.send)
        s.close()
        return
    send(s, a.send)
    s.shutdown(socket.SHUT_WR)
    eof.wait()
    s.close()


if a.role == 'server':
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(128)
    for _ in range(a.count):
        c, _ = ls.accept()
        talk(c)
else:
    for i in range(a.count):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.bind, a.port0 + i if a.port0 else 0))
        s.connect((a.addr, a.port))
        talk(s)
