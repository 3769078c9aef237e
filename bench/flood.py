# Hold N idle sockets to HOST:PORT (half plain TCP, half WebSocket-upgraded and then silent),
# reopening each as soon as the hub drops it, for SECS seconds. Prints reopen counts.
import selectors, socket, sys, time, errno
host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
UPGRADE = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
opened = reopened = 0
def open_one(i):
    global opened
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_WRITE, (i, False))
    opened += 1
for i in range(n):
    open_one(i)
end = time.time() + secs
while time.time() < end:
    for key, ev in sel.select(timeout=0.1):
        s = key.fileobj; i, ready = key.data
        if not ready:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sel.unregister(s); s.close(); reopened += 1; open_one(i); continue
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
