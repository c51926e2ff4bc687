"""End-to-end test of ward-client-ffi's Python bindings against a real relay.

Run by scripts/ffi-test.sh, which builds the library and `ward-relay`,
generates the bindings, and sets:

  WARD_FFI_BINDINGS  the directory holding ward_client_ffi.py and the library
  WARD_RELAY         the ward-relay binary

Standard library only. Every wait is bounded.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.environ["WARD_FFI_BINDINGS"])

from ward_client_ffi import (  # noqa: E402
    WardDevice,
    WardError,
    WardEvent,
    WardListener,
    WardOptions,
    WardReceiptKind,
)

RELAY = os.environ["WARD_RELAY"]
# A bound on every single wait; the whole test takes a few seconds.
TIMEOUT = 20.0
LISTENING = "ward-relay listening on "
FINGERPRINT = ", certificate sha256 fingerprint "


def admin(data_dir, *args):
    out = subprocess.run(
        [RELAY, "--data-dir", data_dir, "admin", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "RUST_LOG": "off"},
    )
    return out.stdout


def issue_token(data_dir, user):
    out = admin(data_dir, "token", "issue", user, "--valid-hours", "1")
    tokens = [line for line in out.splitlines() if line.startswith("ward-enroll-")]
    assert len(tokens) == 1, out
    return tokens[0]


def start_relay(data_dir):
    """Starts `ward-relay serve` on 127.0.0.1; returns (process, addr, fingerprint)."""
    process = subprocess.Popen(
        [RELAY, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": "off"},
    )
    line = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))
    reader.start()
    reader.join(TIMEOUT)
    if not line or not line[0].startswith(LISTENING):
        process.kill()
        raise RuntimeError(f"the relay did not start: {line!r}")
    addr, fingerprint = line[0].strip()[len(LISTENING):].split(FINGERPRINT)
    return process, addr, fingerprint


def key(n):
    return bytes([n]) * 32


def options():
    # No auto-lock during the test; the other fields keep their defaults.
    return WardOptions(auto_lock_after_ms=0)


async def bounded(awaitable):
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def next_message(device):
    """The next Message event; other events (receipts, new devices) are skipped."""
    while True:
        event = await bounded(device.next_event())
        if isinstance(event, WardEvent.MESSAGE):
            return event


async def next_receipt(device, kind):
    while True:
        event = await bounded(device.next_event())
        if isinstance(event, WardEvent.RECEIPT) and event.kind == kind:
            return event


class QueueListener(WardListener):
    """Hands events from the runtime's thread to the asyncio loop."""

    def __init__(self, loop):
        self.loop = loop
        self.events = asyncio.Queue()
        self.errors = asyncio.Queue()

    def on_event(self, event):
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def on_error(self, error):
        self.loop.call_soon_threadsafe(self.errors.put_nowait, error)


class FfiTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ward-ffi-")
        cls.data = os.path.join(cls.tmp, "relay")
        admin(cls.data, "user", "add", "alice", "--role", "doctor")
        admin(cls.data, "user", "add", "bob", "--role", "nurse")
        cls.tokens = {
            "a1": issue_token(cls.data, "alice"),
            "a2": issue_token(cls.data, "alice"),
            "b1": issue_token(cls.data, "bob"),
        }
        cls.relay, cls.addr, cls.fingerprint = start_relay(cls.data)

    @classmethod
    def tearDownClass(cls):
        cls.relay.terminate()
        try:
            cls.relay.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            cls.relay.kill()
            cls.relay.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def store(self, name):
        return os.path.join(self.tmp, f"{name}.ward")

    async def enroll(self, name, n):
        return await bounded(
            WardDevice.enroll(
                self.store(name),
                key(n),
                self.addr,
                self.fingerprint,
                self.tokens[name],
                options(),
            )
        )

    async def test_conversation_errors_and_listener(self):
        a1 = await self.enroll("a1", 1)
        a2 = await self.enroll("a2", 2)
        b1 = await self.enroll("b1", 3)
        self.assertEqual(a1.user(), "alice")
        self.assertEqual(b1.user(), "bob")
        self.assertEqual(len(a1.device_key()), 32)

        # A -> B: B receives it; A's other device sees its own message.
        sent = await bounded(a1.send_text(["bob"], "Bed 4: potassium 6.1", True))
        self.assertEqual(len(sent), 16)
        got = await next_message(b1)
        self.assertEqual(got.sender_user, "alice")
        self.assertEqual(got.sender_device, a1.device_key())
        self.assertEqual(got.message_id, sent)
        self.assertEqual(got.text, "Bed 4: potassium 6.1")
        self.assertTrue(got.urgent)
        self.assertFalse(got.from_own_device)
        self.assertGreater(got.sent_at_ms, 0)
        self.assertGreaterEqual(got.received_at_ms, got.sent_at_ms - 60_000)
        own = await next_message(a2)
        self.assertTrue(own.from_own_device)
        self.assertEqual(own.message_id, sent)
        self.assertEqual(own.text, got.text)

        # B -> A: both of A's devices receive it.
        reply = await bounded(b1.send_text(["alice"], "On my way.", False))
        for device in (a1, a2):
            got = await next_message(device)
            self.assertEqual((got.sender_user, got.text, got.urgent), ("bob", "On my way.", False))
            self.assertEqual(got.message_id, reply)
            self.assertFalse(got.from_own_device)

        # A read receipt crosses back, after the automatic delivery receipt.
        await bounded(b1.send_receipt("alice", WardReceiptKind.READ, [sent]))
        receipt = await next_receipt(a1, WardReceiptKind.READ)
        self.assertEqual((receipt.from_user, receipt.message_ids), ("bob", [sent]))

        number = await bounded(a1.safety_number("bob"))
        self.assertEqual(len(number), 60)
        self.assertTrue(number.isdigit())

        # Typed errors.
        with self.assertRaises(WardError.Refused) as refused:
            await bounded(a1.send_text(["nobody"], "hello?", False))
        self.assertEqual(refused.exception.code, "NOT_FOUND")
        with self.assertRaises(WardError.UnknownContact):
            await bounded(a1.safety_number("nobody"))
        with self.assertRaises(WardError.InvalidArgument):
            await bounded(b1.send_receipt("alice", WardReceiptKind.READ, [b"short"]))
        await bounded(a2.shutdown())
        with self.assertRaises(WardError.Closed):
            await bounded(a2.next_event())
        with self.assertRaises(WardError.WrongKey):
            await bounded(WardDevice.open(self.store("a2"), key(9), options()))
        with self.assertRaises(WardError.InvalidArgument):
            await bounded(WardDevice.open(self.store("a2"), b"\x02" * 31, options()))
        a2 = await bounded(WardDevice.open(self.store("a2"), key(2), options()))

        # Locking: calls fail until unlocked with the right key.
        await bounded(b1.lock())
        self.assertTrue(await bounded(b1.is_locked()))
        with self.assertRaises(WardError.Locked):
            await bounded(b1.send_text(["alice"], "locked", False))
        with self.assertRaises(WardError.WrongKey):
            await bounded(b1.unlock(key(4)))
        await bounded(b1.unlock(key(3)))
        self.assertFalse(await bounded(b1.is_locked()))

        # A call overlapping a pending next_event on the same device runs
        # (it interrupts the wait, which resumes after it).
        waiting = asyncio.ensure_future(next_message(a1))
        await asyncio.sleep(0.1)
        mine = await bounded(a1.send_text(["bob"], "Repeat the sample.", False))
        got = await next_message(b1)
        self.assertEqual((got.text, got.message_id), ("Repeat the sample.", mine))
        # a2 reopened and receives it as its own; then b1 answers, which
        # the pending wait on a1 reports.
        own = await next_message(a2)
        self.assertEqual((own.message_id, own.from_own_device), (mine, True))
        answer = await bounded(b1.send_text(["alice"], "Done.", False))
        got = await bounded(waiting)
        self.assertEqual((got.text, got.message_id), ("Done.", answer))
        self.assertEqual((await next_message(a2)).message_id, answer)

        # The listener: events arrive on the runtime's thread.
        listener = QueueListener(asyncio.get_running_loop())
        b1.start_listening(listener)
        heard = await bounded(a1.send_text(["bob"], "Listening?", True))
        while True:
            event = await bounded(listener.events.get())
            if isinstance(event, WardEvent.MESSAGE):
                break
        self.assertEqual((event.text, event.message_id, event.urgent), ("Listening?", heard, True))
        # Sending while the listener waits on the same device.
        await bounded(b1.send_text(["alice"], "Heard.", False))
        self.assertEqual((await next_message(a1)).text, "Heard.")
        b1.stop_listening()
        self.assertTrue(listener.errors.empty())

        # Wipe erases the store; the device is closed.
        await bounded(b1.wipe())
        self.assertFalse(os.path.exists(self.store("b1")))
        with self.assertRaises(WardError.Closed):
            await bounded(b1.send_text(["alice"], "gone", False))
        for device in (a1, a2):
            await bounded(device.shutdown())


if __name__ == "__main__":
    unittest.main(verbosity=2)
