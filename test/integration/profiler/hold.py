"""Opens a TCP connection to each ADDR:PORT, touches READY, holds them until GATE exists.

hold.py READY GATE ADDR:PORT...
"""
import os, socket, sys, time

ready, gate, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
held = []
for t in targets:
    host, port = t.rsplit(':', 1)
    held.append(socket.create_connection((host.strip('[]'), int(port))))
open(ready, 'w').close()
while not os.path.exists(gate):
    time.sleep(0.05)
for s in held:
    s.close()
