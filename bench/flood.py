# Hold N idle sockets to HOST:PORT [from SOURCE] (half plain TCP, half WebSocket-upgraded and then
# silent), reopening each as soon as the hub drops it, for SECS seconds. Says when N connections
# have been made, and at the end how many were reopened.
import selectors, signal, socket, sys, time
host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# Optional 5th argument: the local address to flood from (127.0.0.2 on loopback: another host).
source = sys.argv[5] if len(sys.argv) > 5 else None
sel = selectors.DefaultSelector()
UPGRADE = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
opened = reopened = connected = 0
announced = False
def open_one(i):
    global opened
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    if source:
        s.bind((source, 0))
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_WRITE, (i, False))
    opened += 1
for i in range(n):
    open_one(i)
end = time.time() + secs
# SIGTERM ends the flood early, with its summary.
signal.signal(signal.SIGTERM, lambda *_: globals().update(end=0))
while time.time() < end:
    for key, ev in sel.select(timeout=0.1):
        s = key.fileobj; i, ready = key.data
        if not ready:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sel.unregister(s); s.close(); reopened += 1; open_one(i); continue
            connected += 1
            if connected >= n and not announced:
                # As many connections made as the flood holds: it is at full strength.
                print(f"flood: {n} connections made", flush=True)
                announced = True
            if i % 2 == 0:
                try: s.send(UPGRADE)
                except OSError: pass
            sel.modify(s, selectors.EVENT_READ, (i, True))
            continue
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s); s.close(); reopened += 1; open_one(i)
print(f"flood: {n} sockets held, {reopened} reopened after the hub dropped them", flush=True)
