"""Bulk-transfer clients for tests/relay_flow.rs: paramiko and asyncssh (Debian's
python3-paramiko and python3-asyncssh, run by /usr/bin/python3).

Modes:
  get REMOTE LOCAL COUNT   downloads REMOTE over SFTP COUNT times (paramiko's prefetching
                           SFTPClient.get; asyncssh with max_requests=1024), printing
                           `GOT i SHA256 SIZE` after each.
  stall                    runs `cat` on the target and floods it while reading nothing
                           back (the echo fills the client's window, then the target's
                           input stalls: both peers stop reading). Prints `STALLED` once
                           the flood is throttled, then `CLOSED` when the connection is
                           gone.

usage: flow_client.py LIB PORT KEY LOGIN MODE [ARGS...]
"""

import asyncio
import hashlib
import sys
import threading
import time


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def report_get(i, local):
    import os

    print(f"GOT {i} {sha256(local)} {os.path.getsize(local)}", flush=True)


def paramiko_main(port, key, login, mode, args):
    import paramiko

    t = paramiko.Transport(("127.0.0.1", int(port)))
    t.start_client(timeout=10)
    t.auth_publickey(login, paramiko.Ed25519Key.from_private_key_file(key))
    if mode == "get":
        remote, local, count = args[0], args[1], int(args[2])
        sftp = paramiko.SFTPClient.from_transport(t)
        for i in range(count):
            sftp.get(remote, local)
            report_get(i, local)
        sftp.close()
        t.close()
    elif mode == "stall":
        chan = t.open_session(timeout=10)
        chan.exec_command("cat")
        sent = [0]

        def flood():
            block = b"x" * 32768
            try:
                while True:
                    sent[0] += chan.send(block)
            except Exception:
                pass

        threading.Thread(target=flood, daemon=True).start()
        # stalled: under 64 KiB went out in the last second (Gatehouse shrank the window it
        # grants to a trickle of a few bytes per round trip)
        deadline = time.time() + 60
        while True:
            before = sent[0]
            time.sleep(1.0)
            if not t.is_active():
                raise SystemExit("connection closed before the flood stalled")
            if sent[0] - before < 65536:
                break
            if time.time() > deadline:
                raise SystemExit(f"flood never stalled: {sent[0]} bytes accepted")
        print(f"STALLED {sent[0]}", flush=True)
        while t.is_active():
            time.sleep(0.02)
        print("CLOSED", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


async def asyncssh_main(port, key, login, mode, args):
    import asyncssh

    async with asyncssh.connect(
        "127.0.0.1",
        port=int(port),
        username=login,
        client_keys=[key],
        known_hosts=None,
    ) as conn:
        if mode != "get":
            raise SystemExit(f"unknown mode {mode} for asyncssh")
        remote, local, count = args[0], args[1], int(args[2])
        async with conn.start_sftp_client() as sftp:
            for i in range(count):
                await sftp.get(remote, local, max_requests=1024)
                report_get(i, local)


def main():
    lib, port, key, login, mode = sys.argv[1:6]
    args = sys.argv[6:]
    if lib == "paramiko":
        paramiko_main(port, key, login, mode, args)
    elif lib == "asyncssh":
        asyncio.run(asyncssh_main(port, key, login, mode, args))
    else:
        raise SystemExit(f"unknown client library {lib}")
    print(f"DONE {mode}", flush=True)


if __name__ == "__main__":
    main()
