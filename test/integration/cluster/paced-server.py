# A sender that paces itself: every connection gets 50 kB every 0.1 s (500 kB/s) for SECONDS,
# then is closed. `python3 paced-server.py PORT SECONDS`. The receiver's pace cannot be relied
# on (socket buffers absorb megabytes); the sender's can.
import socket, sys, threading, time

def serve(c):
    end = time.time() + float(sys.argv[2])
    try:
        while time.time() < end:
            c.sendall(b'x' * 50000)
            time.sleep(0.1)
    finally:
        c.close()

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(8)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
