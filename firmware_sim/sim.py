"""`tessera sim`: the firmware behind a TCP socket or a pseudo-terminal, with link faults.

``--listen socket://127.0.0.1:PORT`` serves one connection at a time (loopback unless
``--bind-any``); ``--pty`` opens a pseudo-terminal pair and prints the device path, so that the
simulator looks like a serial port to any tool (pyserial, screen, minicom). ``--baud`` limits the
link's speed (10 bits per byte, both directions); ``--drop P`` / ``--corrupt P`` drop or flip a
fraction P of the bytes in each direction; ``--crash-during-save`` kills the process between writing the
new flash image and renaming it (the old image must survive); ``--reboot-after N`` power-cycles the
device after every N-th request (RAM state lost, flash kept).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..protocol.framing import encode_frame
from ..protocol.messages import encode, error_message
from ..runtime.errors import InputError
from .device import Firmware

__all__ = ["LinkFaults", "serve_socket", "serve_pty", "parse_listen"]


@dataclass
class LinkFaults:
    drop: float = 0.0
    corrupt: float = 0.0
    baud: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("drop", "corrupt"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise InputError(f"{name} is a fraction of bytes in [0, 1), got {v:g}",
                                 param=name)
        if self.baud < 0:
            raise InputError(f"baud must be a positive speed in bits per second (0: no "
                             f"limit), got {self.baud}", param="baud")
        self.rng = np.random.default_rng(self.seed)

    def mangle(self, data: bytes) -> bytes:
        if not (self.drop or self.corrupt) or not data:
            return data
        a = np.frombuffer(data, np.uint8).copy()
        u = self.rng.random(a.size)
        flip = u < self.corrupt
        a[flip] ^= self.rng.integers(1, 256, int(flip.sum()), dtype=np.uint8)
        keep = self.rng.random(a.size) >= self.drop
        return a[keep].tobytes()

    def pace(self, nbytes: int) -> None:
        if self.baud:
            time.sleep(nbytes * 10 / self.baud)

    def exchange(self, fw: Firmware, data: bytes) -> bytes:
        """Bytes from the host through this link to ``fw`` and its answer back."""
        self.pace(len(data))
        out = self.mangle(fw.receive(self.mangle(data)))
        self.pace(len(out))
        return out


def parse_listen(url: str, bind_any: bool = False) -> tuple[str, int]:
    if not url.startswith("socket://"):
        raise InputError(f"listen takes socket://HOST:PORT, got {url!r}", param="listen")
    host, _, port = url[len("socket://"):].rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"listen: no port (0..65535) in {url!r}", param="listen")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host   # [::1]
    host = host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1") and not bind_any:
        raise InputError(f"refusing to listen on {host}: only bind_any leaves loopback",
                         param="bind_any")
    return host, int(port)


def serve_socket(fw: Firmware, host: str, port: int, faults: LinkFaults, ready=None,
                 max_connections: int = 0, idle_s: float = 30.0) -> None:
    """Serve one host at a time on a TCP socket. A host is let go when no whole frame has
    arrived from it for ``idle_s`` seconds (an idle host, or one that trickles bytes that never
    make a frame), so that the next one is served; a frame half received from a host that left
    is dropped."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET           # ::1 is IPv6
    try:
        srv = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot open a socket for {host}: {exc.strerror}") from None
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((host, port))
    except OSError as exc:
        srv.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror} (is another simulator "
                         f"or program using it? pick another port, or port 0 for a free one)"
                         ) from None
    srv.listen(1)
    if ready:
        ready(srv.getsockname()[1])
    served = 0
    try:
        while not max_connections or served < max_connections:
            conn, _ = srv.accept()
            served += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fw.decoder.drop_partial()                   # nothing of the last host is kept
            progress, heard = time.monotonic(), _frames_heard(fw)
            busy = _BusyRefuser(srv)
            with conn, busy:
                while True:
                    left = progress + idle_s - time.monotonic() if idle_s else None
                    if left is not None and left <= 0:
                        fw.stats["idle_hosts_released"] = \
                            fw.stats.get("idle_hosts_released", 0) + 1
                        break                           # silent or trickling: let go
                    r, _, _ = select.select([conn, srv], [], [], left)
                    if not r:
                        continue
                    if srv in r and conn not in r:     # a second host: refused, never mixed
                        if _closed(conn):              # in, unless the first one just left
                            break
                        _refuse(srv)
                        continue
                    try:
                        data = conn.recv(65536)
                    except ConnectionResetError:
                        break
                    if not data:
                        break
                    with busy.working():            # a long request (a commit): other
                        out = faults.exchange(fw, data)   # hosts are refused meanwhile
                    if _frames_heard(fw) != heard:
                        progress, heard = time.monotonic(), _frames_heard(fw)
                    if out:
                        try:
                            conn.sendall(out)
                        except (BrokenPipeError, ConnectionResetError):
                            break
    finally:
        srv.close()


class _BusyRefuser:
    """While the firmware works on a host's bytes (a ``load_commit`` may take up to 2 s), a
    thread answers any other host ``LINK_BUSY`` at once instead of leaving it unanswered until
    the work ends. The listening socket is non-blocking while a host is served, so the two
    threads never wait on the same pending connection."""

    def __init__(self, srv: socket.socket):
        self.srv, self.busy, self.stop = srv, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.srv.setblocking(False)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.srv.setblocking(True)

    @contextlib.contextmanager
    def working(self):
        self.busy.set()
        try:
            yield
        finally:
            self.busy.clear()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.busy.wait(0.05):
                continue
            r, _, _ = select.select([self.srv], [], [], 0.02)
            if r and self.busy.is_set():
                _refuse(self.srv)


def _frames_heard(fw: Firmware) -> int:
    """Whole valid frames heard: only these keep a host's hold on the link (bad frames, partial
    frames and garbage never do; PROTOCOL.md, "One host at a time")."""
    return fw.stats["frames"]


def _closed(conn: socket.socket, wait_s: float = 0.1) -> bool:
    """Whether the host at ``conn`` has closed its end (its FIN may trail a new host's
    connection by a moment: wait that long)."""
    r, _, _ = select.select([conn], [], [], wait_s)
    if not r:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _refuse(srv: socket.socket) -> None:
    """Accept a connection only to tell it the link is taken (one ``LINK_BUSY`` error frame with
    id 0), then close it, in a thread: what the other host sent is read and dropped first (closing
    with unread bytes would reset the connection and lose the frame)."""
    try:
        other, _ = srv.accept()
    except OSError:
        return

    def tell_and_close() -> None:
        with other:
            try:
                other.sendall(encode_frame(encode(error_message(
                    0, "LINK_BUSY", "another host is connected to this device; one host at "
                                    "a time (try again when it disconnects)"))))
                other.shutdown(socket.SHUT_WR)
                other.settimeout(30.0)
                while other.recv(4096):
                    pass
            except OSError:
                pass

    threading.Thread(target=tell_and_close, daemon=True).start()


def serve_pty(fw: Firmware, faults: LinkFaults, announce=None) -> None:
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    if announce:
        announce(path)
    try:
        while True:
            r, _, _ = select.select([master], [], [], 1.0)
            if not r:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:                       # the other side closed: keep serving
                time.sleep(0.05)
                continue
            out = faults.exchange(fw, data)
            if out:
                view = memoryview(out)
                while view:
                    n = os.write(master, view)
                    view = view[n:]
    finally:
        os.close(master)
        os.close(slave)


def _lock_flash(flash: str):
    """Exclusive locks for this simulator's life, so that a second simulator with the same
    flash image is refused instead of both writing one image: on the ``.lock`` file beside the
    image's real path (a symbolic link to the image finds the same lock) and, when the image
    exists, on the image file itself (``flock`` on its device and inode: a hard link to it finds
    that lock). Anything at the path that is not a regular file is refused."""
    import fcntl

    real = os.path.realpath(flash)
    if os.path.exists(real) and not os.path.isfile(real):
        raise InputError("the flash image must be a regular file (not a device, pipe or "
                         "socket)", source=flash, param="flash")
    fh = _lock_file(real + ".lock", flash)
    if not os.path.isfile(real):
        return (fh,)
    image = open(real, "rb")
    try:
        fcntl.flock(image, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        image.close()
        fh.close()
        raise InputError("the flash image is in use by another simulator (through another "
                         "name for the same file); give each simulator its own flash image",
                         source=flash, param="flash") from None
    return fh, image


def _lock_file(path: str, flash: str):
    """``path`` opened and locked (exclusive, non-blocking), with this process's id in it."""
    import fcntl

    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise InputError(f"cannot create the flash image's lock file ({exc.strerror})",
                         source=path) from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip()
        fh.close()
        who = f" (pid {holder})" if holder else ""
        raise InputError(f"the flash image is in use by another simulator{who}; give each "
                         f"simulator its own flash image", source=flash, param="flash") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def main_loop(*, listen: str | None = None, pty: bool = False, bind_any: bool = False,
              model: str | None = None, flash: str | None = "tessera-flash.img",
              ram: int = 512 * 1024, seed: int = 0, drop: float = 0.0, corrupt: float = 0.0,
              baud: int | None = None, crash_during_save: bool = False, reboot_after: int = 0,
              json_out: bool = False, idle_s: float = 30.0) -> int:
    """Serve one simulated device until killed: on a pseudo-terminal (``pty``) or a socket
    (``listen``, ``socket://HOST:PORT``). It boots from ``flash`` (no flash image: ``None`` or
    "") or else installs ``model``; ``drop``/``corrupt``/``baud`` shape the link, the other
    options inject faults. The port is announced on stdout once it is open: the bare URL, or
    one JSON object with ``json_out``."""
    if flash and os.path.isdir(flash):
        raise InputError("the flash image must be a file, not a folder (e.g. "
                         f"{os.path.join(flash, 'tessera-flash.img')})", source=flash,
                         param="flash")
    lock = _lock_flash(flash) if flash else None        # held until this process ends
    fresh = bool(flash) and (not os.path.exists(flash) or os.path.getsize(flash) == 0)
    from .boot import boot_firmware

    fw, source = boot_firmware(model, flash, ram, seed)
    fw.flash_lock = lock
    if fresh:                                           # say why the board knows no word
        print(f"tessera sim: {flash}: no flash image yet (a board fresh from the factory): "
              f"serving {source or 'no model'} with no word taught; what it is taught is saved "
              f"there", file=sys.stderr, flush=True)
    if fw.boot_error:
        print(f"tessera sim: {flash}: {fw.boot_error}; booting without it",
              file=sys.stderr, flush=True)
    fw.crash_during_save = crash_during_save
    fw.reboot_after = reboot_after
    if model and source != model and fw.chip is not None:
        print(f"tessera sim: {flash} holds a model and its words: serving it (not {model}; "
              f"delete the image or give another flash image to start from {model})",
              file=sys.stderr, flush=True)
    faults = LinkFaults(drop=drop, corrupt=corrupt, baud=baud or 0, seed=seed)

    def announce(url: str) -> None:
        if json_out:
            import json

            from .handlers import FIRMWARE_VERSION

            print(json.dumps(dict(port=url, firmware=FIRMWARE_VERSION, model=source, flash=flash,
                                  boot_error=fw.boot_error)), flush=True)
        else:
            print(url, flush=True)

    if pty:
        serve_pty(fw, faults, announce=announce)
        return 0
    if not listen:
        raise InputError("the simulator needs a socket:// URL to listen on, or a pty")
    host, port = parse_listen(listen, bind_any)
    shown = f"[{host}]" if ":" in host else host
    serve_socket(fw, host, port, faults, ready=lambda p: announce(f"socket://{shown}:{p}"),
                 idle_s=idle_s)
    return 0

