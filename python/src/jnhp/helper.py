"""Persistent validator helpers for jnhpd (``kind = "helper"``).

``run(check)`` turns a function ``check(name: bytes, value: bytes) -> bool``
into a helper speaking the line protocol of docs/validators.md
("Persistent helpers"): it reads ``<id> <name> <value>`` lines from stdin,
runs checks concurrently (threads for plain functions, see _Relay; tasks for
``async def``), answers ``<id> JNHP:1`` (allow) or ``<id> JNHP:0`` (deny)
once per id, in the order the checks finish, and returns when jnhpd closes
stdin and the checks in flight have been answered.

A check that raises, or returns anything but a bool, is a *failure* of that
request: the reply is ``<id> JNHP:error``, which jnhpd counts as a malformed
verdict for that request only, so the validator's ``on_failure`` decides
(``reject`` by default) and the helper keeps running; the traceback goes to
stderr, which jnhpd logs. While the helper runs, ``sys.stdout`` points at
stderr: a stray ``print()`` in a check is logged instead of breaking the
helper (jnhpd replaces a helper that writes anything but replies).
"""

import collections
import inspect
import io
import itertools
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO, Callable, Deque, List, Optional, Set

__all__ = ["run", "DEFAULT_THREADS", "DEFAULT_TASKS"]

# Checks running at once by default: jnhpd's own default `concurrency`
# (requests in flight per helper) for threads; for tasks, which are cheap,
# whatever jnhpd sends.
DEFAULT_THREADS = 32
DEFAULT_TASKS = 1024

# A request line holds a whole value: max_value_bytes may be up to 16 MiB.
MAX_LINE = 1 << 26

ALLOW, DENY, FAILURE = b" JNHP:1\n", b" JNHP:0\n", b" JNHP:error\n"


def _log(message: str) -> None:
    try:
        sys.__stderr__.write(f"jnhp.helper: {message}\n")
        sys.__stderr__.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _verdict(name: bytes, result: Any) -> bytes:
    if result is True:
        return ALLOW
    if result is False:
        return DENY
    _log(f"check returned {result!r} for name {name!r}, not a bool: a failure")
    return FAILURE


def _failed(name: bytes) -> bytes:
    _log(f"check failed for name {name!r}:\n{traceback.format_exc().rstrip()}")
    return FAILURE


def _split(line: bytes):
    """(id, name, value) of a request line without its line end; id None
    when the line is not a request at all."""
    parts = line.split(b" ", 2)
    if not parts[0].isdigit():
        return None, b"", b""
    if len(parts) < 3:
        return parts[0], b"", b""
    return parts[0], parts[1], parts[2]


class _Replies:
    """Writes replies, each flushed at once, from any thread; with
    `later`, flushes are left to `flush` (the asyncio loop batches the
    replies of one turn into one write)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.broken = False

    def send(self, request_id: bytes, verdict: bytes, later: bool = False) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.out.write(request_id + verdict)
                if not later:
                    self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                # jnhpd is gone (or killed us as broken): nobody to answer.
                self.broken = True

    def flush(self) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True


def run(
    check: Optional[Callable[[bytes, bytes], Any]] = None,
    *,
    concurrency: Optional[int] = None,
    stdin: Optional[BinaryIO] = None,
    stdout: Optional[BinaryIO] = None,
) -> Any:
    """Serves ``check`` as a jnhpd helper until stdin closes.

    ``concurrency`` is how many checks run at once: threads for a plain
    function (default 32; 1 runs them one at a time), tasks for an
    ``async def`` (default 1024). jnhpd sends at
    most its validator's ``concurrency`` requests before it has their
    replies, so a lower limit here queues the rest in the helper.

    Without ``check``, returns a decorator that runs the helper at once::

        @jnhp.helper.run(concurrency=8)
        def check(name: bytes, value: bytes) -> bool:
            return b"forbidden" not in value
    """
    if check is None:
        return lambda f: run(f, concurrency=concurrency, stdin=stdin, stdout=stdout)
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    source = stdin if stdin is not None else sys.stdin.buffer
    out = stdout if stdout is not None else sys.stdout.buffer
    if isinstance(out, io.RawIOBase):
        # Unbuffered (python -u, PYTHONUNBUFFERED): replies written
        # together should still leave in one write.
        out = io.BufferedWriter(out, 1 << 16)
    # Every line on the real stdout must be a reply: print() in a check
    # goes to stderr (logged by jnhpd) while the helper runs.
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        if _is_async(check):
            import asyncio  # only here: it is a fifth of a plain helper's start-up

            asyncio.run(_serve_tasks(check, concurrency or DEFAULT_TASKS, source, out))
        else:
            _serve_threads(check, concurrency or DEFAULT_THREADS, source, out)
    finally:
        sys.stdout = saved
    return check


def _is_async(check: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
        getattr(check, "__call__", None)
    )


class _Lines:
    """Request lines from stdin, read in chunks as they come: the lines in
    hand (`ready`) tell the reader whether to flush its replies before it
    waits for more, so replies to a burst of requests go out in one
    write."""

    READ_SIZE = 1 << 16

    def __init__(self, source: BinaryIO) -> None:
        self.read = getattr(source, "read1", None) or source.read
        self.ready: Deque[bytes] = collections.deque()
        self.partial: List[bytes] = []
        self.partial_len = 0

    def fill(self) -> bool:
        """Reads more (blocking); False at the end of stdin."""
        chunk = self.read(self.READ_SIZE)
        if not chunk:
            if self.partial:
                _log("stdin closed in the middle of a request line: not answered")
            return False
        return self.partial_chunk(chunk)

    def partial_chunk(self, chunk: bytes) -> bool:
        """Takes a chunk read from stdin; False past MAX_LINE."""
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            # A long line (a large value) coming in pieces: joined once.
            self.partial.append(chunk)
            self.partial_len += len(chunk)
            if self.partial_len > MAX_LINE:
                _log("request line over 64 MiB: stopping")
                return False
            return True
        if self.partial:
            self.partial.append(parts[0])
            parts[0] = b"".join(self.partial)
        last = parts.pop()
        self.partial = [last] if last else []
        self.partial_len = len(last)
        self.ready.extend(parts)
        return True


def _serve_threads(check: Callable[[bytes, bytes], Any], limit: int, source: BinaryIO, out: BinaryIO) -> None:
    _Relay(check, limit, _Lines(source), _Replies(out)).run()


class _Relay:
    """Checks run in the thread that reads the requests, so a fast check
    costs no hand-over between threads; a check still running after
    HANDOFF seconds keeps its thread, and the reading moves on to a new
    thread (a relay): a slow check holds the others back by about that
    long, and at most `limit` checks run at once (no new reader while
    `limit` run). A watchdog thread notices slow checks; it sleeps while
    no check runs.

    Who ends a check is settled without a lock: the reader puts the
    check's number in `claimable` as it starts it and takes it out when
    it is done; the watchdog moves a check aside only by taking it out
    first. `set.remove` is one step under the interpreter lock, so
    exactly one of them succeeds: a reader that finds its number gone
    has been moved aside, and ends once it has answered."""

    HANDOFF = 0.001

    def __init__(self, check: Callable[[bytes, bytes], Any], limit: int, lines: _Lines, replies: _Replies) -> None:
        self.check = check
        self.limit = limit
        self.lines = lines
        self.replies = replies
        self.lock = threading.Lock()  # for the rare paths: moving aside, the end
        self.changed = threading.Condition(self.lock)
        self.numbers = itertools.count(1)
        self.current = 0  # the number of the reader's latest check
        self.claimable: Set[int] = set()  # the reader's check, while it runs
        self.aside = 0  # checks moved aside and still running
        self.reading = False  # whether a thread reads (or will)
        self.eof = False
        self.busy = threading.Event()  # set while the reader may be in a check
        self.busy_flag = False  # the same, cheaper to read

    def run(self) -> None:
        self._relay()
        # With a limit of 1 no check is ever moved aside: no watchdog.
        watchdog = None
        if self.limit > 1:
            watchdog = threading.Thread(target=self._watch, name="jnhp-watchdog", daemon=True)
            watchdog.start()
        with self.changed:
            self.changed.wait_for(lambda: self.eof and not self.reading and self.aside == 0)
        self.replies.flush()
        if watchdog is not None:
            self.busy.set()  # wakes the watchdog to see eof
            watchdog.join()

    def _relay(self) -> None:
        """Starts a new reader thread."""
        self.reading = True
        threading.Thread(target=self._read, name="jnhp-check", daemon=True).start()

    def _read(self) -> None:
        # The loop every request goes through: kept to plain operations
        # (no calls but the check's), as its cost is the helper's.
        lines = self.lines
        ready = lines.ready
        popleft = ready.popleft
        replies = self.replies
        out = replies.out
        write = out.write
        wlock = replies.lock
        check = self.check
        numbers = self.numbers
        claimable = self.claimable
        read = lines.read
        size = lines.READ_SIZE
        while True:
            if not ready:
                # Nothing more in hand: the replies go out before waiting.
                with wlock:
                    if not replies.broken:
                        try:
                            out.flush()
                        except (BrokenPipeError, ValueError, OSError):
                            replies.broken = True
                if replies.broken:
                    chunk = b""
                elif lines.partial:
                    chunk = b"" if not lines.fill() else None
                else:
                    chunk = read(size)
                    if chunk.endswith(b"\n"):
                        # The usual case: whole lines.
                        parts = chunk.split(b"\n")
                        parts.pop()
                        ready.extend(parts)
                        continue
                    if chunk:
                        lines.partial_chunk(chunk)
                        continue
                if chunk is None:
                    continue
                with self.changed:
                    self.eof = True
                    self.reading = False
                    self.changed.notify_all()
                return
            line = popleft()
            parts = line.split(b" ", 2)
            if len(parts) < 3 or not parts[0].isdigit() or not parts[2]:
                if parts[0].isdigit():
                    replies.send(parts[0], FAILURE, later=True)
                else:
                    _log(f"not a request line: {line[:80]!r}")
                continue
            request_id, name, value = parts
            mine = next(numbers)
            claimable.add(mine)
            self.current = mine
            if not self.busy_flag:
                self.busy_flag = True
                self.busy.set()
            try:
                result = check(name, value)
                verdict = ALLOW if result is True else DENY if result is False else _verdict(name, result)
            except BaseException:
                verdict = _failed(name)
            with wlock:
                if not replies.broken:
                    try:
                        write(request_id + verdict)
                    except (BrokenPipeError, ValueError, OSError):
                        replies.broken = True
            try:
                claimable.remove(mine)
            except KeyError:
                # Moved aside while this check ran (another thread reads
                # now): this reply goes out at once, and the thread ends.
                replies.flush()
                with self.changed:
                    self.aside -= 1
                    self.changed.notify_all()
                return

    # How the watchdog paces itself: waking costs the reader the GIL for a
    # moment, so under a steady flow of fast checks it looks less and less
    # often (the sampling interval doubles up to MAX_SAMPLE); a check it
    # finds running is looked at again HANDOFF later, and moved aside if
    # still the same. So a slow check holds the others back by HANDOFF to
    # 2 x HANDOFF, or up to about MAX_SAMPLE right after a run of fast
    # ones. With no check running for IDLE_SAMPLES samples it sleeps until
    # one starts.
    MAX_SAMPLE = 0.02
    IDLE_SAMPLES = 10

    def _watch(self) -> None:
        sample = self.HANDOFF
        idle = 0
        while True:
            self.busy.wait()
            if self.eof:
                return
            time.sleep(sample)
            if self.eof:
                return
            seen = self.current
            if seen not in self.claimable:
                idle += 1
                if idle >= self.IDLE_SAMPLES:
                    self.busy_flag = False
                    self.busy.clear()  # the reader waits for a request
                    # A check started between the look and the clear has
                    # seen the flag still set: look again for it.
                    if self.claimable:
                        self.busy_flag = True
                        self.busy.set()
                    idle = 0
                    sample = self.HANDOFF
                else:
                    sample = min(sample * 2, self.MAX_SAMPLE)
                continue
            idle = 0
            time.sleep(self.HANDOFF)
            if self.eof:
                return
            if self.current != seen:
                sample = min(sample * 2, self.MAX_SAMPLE)
                continue
            sample = self.HANDOFF
            with self.lock:
                if self.aside + 1 >= self.limit:
                    continue  # at the limit: look again soon
                try:
                    self.claimable.remove(seen)
                except KeyError:
                    continue  # it ended just now
                # The same check for at least HANDOFF: move on.
                self.aside += 1
                self._relay()


async def _serve_tasks(check: Callable[[bytes, bytes], Any], limit: int, source: BinaryIO, out: BinaryIO) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), source)
    except ValueError:
        # Not a pipe (a file, a tty in tests): read it in a thread.
        reader = None
    slots = asyncio.Semaphore(limit)
    replies = _Replies(out)
    tasks = set()

    flushing = [False]

    def flush() -> None:
        flushing[0] = False
        replies.flush()

    def schedule_flush() -> None:
        # Once per turn of the loop: the replies of checks finishing
        # together go out in one write.
        if not flushing[0]:
            flushing[0] = True
            loop.call_soon(flush)

    async def answer(request_id: bytes, name: bytes, value: bytes) -> None:
        try:
            try:
                verdict = _verdict(name, await check(name, value))
            except BaseException:
                # GeneratorExit, CancelledError (a check cancelling itself)
                # and BaseException subclasses too: every id gets a reply,
                # as in the threaded path.
                verdict = _failed(name)
            replies.send(request_id, verdict, later=True)
            schedule_flush()
        finally:
            slots.release()

    while True:
        if reader is not None:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                _log("request line over 64 MiB: stopping")
                break
        else:
            line = await loop.run_in_executor(None, source.readline, MAX_LINE + 1)
        if not line:
            break
        if not line.endswith(b"\n"):
            _log("stdin closed in the middle of a request line: not answered")
            break
        request_id, name, value = _split(line[:-1])
        if request_id is None:
            _log(f"not a request line: {line[:80]!r}")
            continue
        if not value:
            replies.send(request_id, FAILURE)
            continue
        await slots.acquire()
        task = loop.create_task(answer(request_id, name, value))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if replies.broken:
            break
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
