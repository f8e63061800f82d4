"""An SSH client that misbehaves on purpose, for tests/adversarial_ssh.rs.

Drives Gatehouse with paramiko (Debian's python3-paramiko, run by /usr/bin/python3) and
sends what a stock client never would: stray and duplicate channel requests, data before a
shell, channels and requests while the session is locked or ending. It prints one line per
step (`STEP name result`) for the test to assert on; the effects that matter (files on the
target, bytes in the recording) are checked by the test itself.

usage: ssh_attacker.py PORT KEY LOGIN SCENARIO [ARGS...]
"""

import socket
import sys
import time

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message


def step(name, result):
    print(f"STEP {name} {result}", flush=True)


def read_until(chan, needle, timeout=15.0):
    buf = b""
    end = time.time() + timeout
    chan.settimeout(0.2)
    while needle not in buf:
        if time.time() > end:
            raise SystemExit(f"timeout waiting for {needle!r}; got {buf[-400:]!r}")
        try:
            data = chan.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise SystemExit(f"channel closed waiting for {needle!r}; got {buf[-400:]!r}")
        buf += data
    return buf


def raw_request(transport, chan, kind, want_reply, *strings):
    """A channel request built by hand: paramiko's own helpers always want a reply."""
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(kind)
    m.add_boolean(want_reply)
    for s in strings:
        m.add_string(s)
    transport._send_user_message(m)


def try_exec(transport, command):
    """Opens a new channel and runs `command`; returns what happened."""
    try:
        chan = transport.open_session(timeout=5)
    except Exception as e:  # the broker rejected the channel
        return f"open-refused({type(e).__name__})"
    try:
        chan.exec_command(command)
    except Exception as e:
        return f"exec-refused({type(e).__name__})"
    return "exec-accepted"


def try_exec_on(chan, command):
    try:
        chan.exec_command(command)
    except Exception as e:
        return f"exec-refused({type(e).__name__})"
    return "exec-accepted"


def connect(port, key, login):
    t = paramiko.Transport(("127.0.0.1", int(port)))
    t.start_client(timeout=10)
    t.auth_publickey(login, paramiko.Ed25519Key.from_private_key_file(key))
    return t


def shell(t, pty=True):
    chan = t.open_session(timeout=10)
    if pty:
        chan.get_pty(term="xterm", width=80, height=24)
    chan.invoke_shell()
    chan.send(b"export PS1='gh$ '; echo ready-$((6*7))\n")
    read_until(chan, b"ready-42")
    return chan


def stray_requests(t, args):
    """Stray start requests on a channel that runs a shell must not switch recording off."""
    chan = shell(t)
    raw_request(t, chan, "subsystem", False, "sftp")
    raw_request(t, chan, "exec", False, f"touch {args[0]}")
    raw_request(t, chan, "shell", False)
    time.sleep(0.5)
    chan.send(b"echo after-$((7*7))\n")
    read_until(chan, b"after-49")
    step("after-stray", "seen")
    chan.send(b"exit\n")
    chan.recv_exit_status()


def data_before_shell(t, args):
    """Bytes sent before the program starts would reach it unrecorded."""
    chan = t.open_session(timeout=10)
    chan.send(f"touch {args[0]}\n".encode())
    raw_request(t, chan, "signal", False, "KILL")
    time.sleep(0.5)
    chan.invoke_shell()
    chan.send(b"echo started-$((5*5))\n")
    read_until(chan, b"started-25")
    chan.send(b"exit\n")
    step("exit", chan.recv_exit_status())


def while_locked(t, args):
    """Every path to the target while the lock prompt shows: none may get through."""
    marker_dir, password = args[0], args[1]
    spare = t.open_session(timeout=10)  # opened before the lock, never started
    chan = shell(t)
    read_until(chan, b"password for", timeout=20)
    step("locked", "yes")
    step("new-channel", try_exec(t, f"touch {marker_dir}/new-channel"))
    step("spare-channel", try_exec_on(spare, f"touch {marker_dir}/spare-channel"))
    raw_request(t, chan, "exec", False, f"touch {marker_dir}/stray-exec")
    raw_request(t, chan, "signal", False, "INT")
    chan.resize_pty(width=101, height=41)
    time.sleep(0.5)
    chan.send(f"{password}\r".encode())
    read_until(chan, b"unlocked")
    step("unlocked", "yes")
    # the size set while locked reached the target at the unlock
    chan.send(b"stty size; echo sized-$((4*4))\n")
    out = read_until(chan, b"sized-16")
    step("size", "41x101" if b"41 101" in out else "wrong:" + repr(out[-200:]))
    chan.send(b"exit\n")
    chan.recv_exit_status()


def while_ending(t, args):
    """Channels and input sent after the end notice reached the operator."""
    marker_dir = args[0]
    spare = t.open_session(timeout=10)
    chan = shell(t)
    step("ready", "yes")
    read_until(chan, b"terminated by admin", timeout=20)
    results = [
        try_exec(t, f"touch {marker_dir}/end-new-channel"),
        try_exec_on(spare, f"touch {marker_dir}/end-spare"),
    ]
    try:
        chan.send(f"touch {marker_dir}/end-typed\n".encode())
    except Exception:
        pass
    step("after-end", ",".join(results))


def subsystem(t, args):
    """A subsystem other than sftp: refused unless the environment allows it."""
    chan = t.open_session(timeout=10)
    try:
        chan.invoke_subsystem(args[0])
    except Exception as e:
        step("subsystem", f"refused({type(e).__name__})")
        return
    chan.send(b"raw-subsystem-bytes-123\n")
    read_until(chan, b"raw-subsystem-bytes-123")
    chan.shutdown_write()
    step("subsystem", "echoed")


SCENARIOS = {
    "subsystem": subsystem,
    "stray-requests": stray_requests,
    "data-before-shell": data_before_shell,
    "while-locked": while_locked,
    "while-ending": while_ending,
}


def main():
    port, key, login, scenario = sys.argv[1:5]
    t = connect(port, key, login)
    try:
        SCENARIOS[scenario](t, sys.argv[5:])
    finally:
        t.close()
    step("done", scenario)


if __name__ == "__main__":
    main()
