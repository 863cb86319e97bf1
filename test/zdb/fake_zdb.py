#!/usr/bin/env python3
"""fake_zdb.py — a 0-db DIALECT FAKE for CI (not 0-db): speaks the subset of
0-db v2.0.7's RESP dialect that nbdsrv uses, as reference/zdb.md describes
it, so the zdb code paths (SELECT ns SECURE, SET echoing the key, $-1 for an
identical value, -Key not found on DEL, NSNEW/NSSET/NSINFO, admin AUTH
SECURE, a namespace in seq mode refusing a key it did not hand out, a
public namespace with a password read-only without it) run end to end in CI.  The real 0-db runs in test-pool-zdb.sh when
it is installed.

    fake_zdb.py PORT [--admin PASSWORD]

Namespaces live in memory; "default" always exists and is public.
"""
import hashlib, os, socket, socketserver, sys, threading

PORT = int(sys.argv[1])
ADMIN = sys.argv[sys.argv.index("--admin") + 1] if "--admin" in sys.argv else None
lock = threading.Lock()
namespaces = {"default": {"password": None, "public": True, "mode": "user", "keys": {}}}


def sha1hex(nonce, pw):
    return hashlib.sha1(f"{nonce}:{pw}".encode()).hexdigest()


class Handler(socketserver.StreamRequestHandler):
    def reply(self, b):
        self.wfile.write(b)

    def bulk(self, v):
        self.reply(b"$%d\r\n%s\r\n" % (len(v), v))

    def read_cmd(self):
        line = self.rfile.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            self.reply(b"-Malformed request, array expected\r\n")
            return None
        argv = []
        for _ in range(int(line[1:])):
            hdr = self.rfile.readline()
            n = int(hdr[1:])
            if n > 8 * 1024 * 1024:
                self.reply(b"-Payload too big\r\n")
                return None
            argv.append(self.rfile.read(n + 2)[:-2])
        return argv

    def handle(self):
        ns, writable, admin, nonce = "default", True, ADMIN is None, None
        while True:
            argv = self.read_cmd()
            if argv is None:
                return
            cmd = argv[0].upper().decode()
            a = [x.decode(errors="replace") for x in argv[1:]]
            with lock:
                n = namespaces.get(ns)
                if cmd == "PING":
                    self.reply(b"+PONG\r\n")
                elif cmd == "INFO":
                    self.bulk(b"# server\nserver_name: 0-db (zdb)\nversion: 2.0.7-fake\n")
                elif cmd == "AUTH" and len(a) == 2 and a[0].upper() == "SECURE":
                    if a[1].upper() == "CHALLENGE":
                        nonce = os.urandom(8).hex()
                        self.reply(b"+%s\r\n" % nonce.encode())
                    elif ADMIN is None:
                        self.reply(b"-Authentication disabled\r\n")
                    elif nonce and a[1] == sha1hex(nonce, ADMIN):
                        admin = True
                        self.reply(b"+OK\r\n")
                    else:
                        self.reply(b"-Access denied\r\n")
                elif cmd == "AUTH" and len(a) == 1:
                    if ADMIN is None:
                        self.reply(b"-Authentication disabled\r\n")
                    elif a[0] == ADMIN:
                        admin = True
                        self.reply(b"+OK\r\n")
                    else:
                        self.reply(b"-Access denied\r\n")
                elif cmd in ("NSNEW", "NSSET", "NSDEL") and not admin:
                    self.reply(b"-Permission denied\r\n")
                elif cmd == "NSNEW":
                    if a[0] in namespaces:
                        self.reply(b"-This namespace is not available\r\n")
                    else:
                        namespaces[a[0]] = {"password": None, "public": True, "mode": "user", "keys": {}}
                        self.reply(b"+OK\r\n")
                elif cmd == "NSSET":
                    t = namespaces.get(a[0])
                    if a[0] == "default":
                        self.reply(b"-Cannot update default namespace\r\n")
                    elif t is None:
                        self.reply(b"-Namespace not found\r\n")
                    elif a[1] == "password":
                        t["password"] = None if a[2] == "*" else a[2]
                        self.reply(b"+OK\r\n")
                    elif a[1] == "public":
                        t["public"] = a[2] == "1"
                        self.reply(b"+OK\r\n")
                    elif a[1] == "mode":
                        t["mode"] = a[2]
                        self.reply(b"+OK\r\n")
                    else:
                        self.reply(b"-Invalid property\r\n")
                elif cmd == "SELECT":
                    t = namespaces.get(a[0])
                    if t is None:
                        self.reply(b"-Namespace not found\r\n")
                    elif t["password"] is None:
                        ns, writable = a[0], True
                        self.reply(b"+OK\r\n")
                    elif len(a) == 1:
                        if t["public"]:
                            ns, writable = a[0], False
                            self.reply(b"+OK\r\n")
                        else:
                            self.reply(b"-Namespace protected and private\r\n")
                    elif (len(a) == 3 and a[1] == "SECURE" and nonce and
                          a[2] == sha1hex(nonce, t["password"])) or (len(a) == 2 and a[1] == t["password"]):
                        ns, writable = a[0], True
                        self.reply(b"+OK\r\n")
                    else:
                        self.reply(b"-Access denied\r\n")
                elif cmd == "NSINFO":
                    t = namespaces.get(a[0])
                    if t is None:
                        self.reply(b"-Namespace not found\r\n")
                    else:
                        size = sum(len(v) for v in t["keys"].values())
                        self.bulk(("# namespace\nname: %s\nentries: %d\npublic: %s\npassword: %s\n"
                                   "data_size_bytes: %d\ndata_limits_bytes: 0\nmode: %s\n" %
                                   (a[0], len(t["keys"]), "yes" if t["public"] else "no",
                                    "yes" if t["password"] else "no", size, t["mode"])).encode())
                elif cmd == "SET":
                    k, v = argv[1], argv[2]
                    if len(k) > 255:
                        self.reply(b"-Key too large\r\n")
                    elif not writable:
                        self.reply(b"-Namespace is in read-only mode\r\n")
                    elif n["mode"] == "seq" and k == b"":
                        k = len(n["keys"]).to_bytes(8, "little")
                        n["keys"][k] = v
                        self.bulk(k)
                    elif n["mode"] == "seq" and k not in n["keys"]:
                        self.reply(b"-Invalid key, only update authorized\r\n")
                    elif n["keys"].get(k) == v:
                        self.reply(b"$-1\r\n")
                    else:
                        n["keys"][k] = v
                        self.bulk(k)
                elif cmd == "GET":
                    v = n["keys"].get(argv[1])
                    self.reply(b"$-1\r\n") if v is None else self.bulk(v)
                elif cmd == "DEL":
                    if not writable:
                        self.reply(b"-Namespace is in read-only mode\r\n")
                    elif n["keys"].pop(argv[1], None) is None:
                        self.reply(b"-Key not found\r\n")
                    else:
                        self.reply(b"+OK\r\n")
                elif cmd == "EXISTS":
                    self.reply(b":%d\r\n" % (1 if argv[1] in n["keys"] else 0))
                else:
                    self.reply(b"-Command not supported\r\n")
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
