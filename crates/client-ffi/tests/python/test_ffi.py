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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.environ["WARD_FFI_BINDINGS"])

from ward_client_ffi import (  # noqa: E402
    WardAttachment,
    WardDevice,
    WardError,
    WardEvent,
    WardListener,
    WardMessage,
    WardOptions,
    WardReceiptKind,
    WardRoleThread,
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


def start_relay(data_dir, bind="127.0.0.1:0"):
    """Starts `ward-relay serve` on 127.0.0.1; returns (process, addr, fingerprint)."""
    process = subprocess.Popen(
        [RELAY, "serve", "--bind", bind, "--data-dir", data_dir],
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


def stop_relay(process, kill=False):
    """Stops the relay (SIGTERM, or SIGKILL with `kill`), even a paused one."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        if kill:
            process.kill()
        else:
            process.terminate()
    try:
        process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


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
        stop_relay(cls.relay)
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

        # Attachments travel with the message, key and digest intact.
        scan = WardAttachment(
            reference="blob:wound-day-3",
            content_type="image/jpeg",
            size=48213,
            sha256=bytes(range(32)),
            key=bytes([0x5C]) * 32,
        )
        with_file = await bounded(
            a1.send_message(["bob"], WardMessage(text="Wound, day 3", urgent=False, attachments=[scan]))
        )
        got = await next_message(b1)
        self.assertEqual((got.message_id, got.text), (with_file, "Wound, day 3"))
        self.assertEqual(got.attachments, [scan])
        with self.assertRaises(WardError.InvalidArgument):
            bad = WardAttachment(
                reference="blob:x", content_type="image/jpeg", size=1, sha256=b"\x00" * 31, key=key(1)
            )
            await bounded(a1.send_message(["bob"], WardMessage(text="", urgent=False, attachments=[bad])))

        # Wipe erases the store; the device is closed.
        await bounded(b1.wipe())
        self.assertFalse(os.path.exists(self.store("b1")))
        with self.assertRaises(WardError.Closed):
            await bounded(b1.send_text(["alice"], "gone", False))
        for device in (a1, a2):
            await bounded(device.shutdown())


async def events_for(device, seconds):
    """The events a device reports within `seconds`."""
    events = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return events
        try:
            events.append(await asyncio.wait_for(device.next_event(), left))
        except asyncio.TimeoutError:
            return events


def messages(events):
    return [e.message_id for e in events if isinstance(e, WardEvent.MESSAGE)]


class RelayFaultTest(unittest.IsolatedAsyncioTestCase):
    """A relay that stalls, is killed, and comes back on the same address."""

    async def asyncSetUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ward-ffi-faults-")
        self.data = os.path.join(self.tmp, "relay")
        for user in ("carol", "dave"):
            admin(self.data, "user", "add", user, "--role", "nurse")
        self.relay, self.addr, self.fingerprint = start_relay(self.data)

    async def asyncTearDown(self):
        stop_relay(self.relay)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def store(self, name):
        return os.path.join(self.tmp, f"{name}.ward")

    def quick(self):
        # Short bounds, so that a relay that is down is noticed within the test.
        return WardOptions(
            auto_lock_after_ms=0,
            connect_timeout_ms=1000,
            reconnect_min_ms=200,
            reconnect_max_ms=1000,
            request_timeout_ms=2000,
        )

    async def enroll(self, user, n):
        token = issue_token(self.data, user)
        return await bounded(
            WardDevice.enroll(self.store(user), key(n), self.addr, self.fingerprint, token, self.quick())
        )

    async def test_a_message_seen_while_the_relay_stalled_is_not_reported_again(self):
        """Issue 11: the relay stops (SIGSTOP) before Dave's acknowledgment
        completes, his wait is cancelled, the next call shows the message,
        the app shuts the device down and opens it again."""
        carol = await self.enroll("carol", 1)
        dave = await self.enroll("dave", 2)
        sent = await bounded(carol.send_text(["dave"], "K+ 6.1, repeat the sample", True))
        await asyncio.sleep(0.5)  # the push reaches Dave's device
        self.relay.send_signal(signal.SIGSTOP)
        try:
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(dave.next_event(), 1.0)
            got = await next_message(dave)
            self.assertEqual(got.message_id, sent)
            # Shut down while the relay still stalls: the acknowledgment
            # cannot complete.
            await bounded(dave.shutdown())
        finally:
            self.relay.send_signal(signal.SIGCONT)
        dave = await bounded(WardDevice.open(self.store("dave"), key(2), self.quick()))
        self.assertEqual(messages(await events_for(dave, 2.0)), [])
        later = await bounded(carol.send_text(["dave"], "thanks", False))
        self.assertEqual((await next_message(dave)).message_id, later)
        for device in (carol, dave):
            await bounded(device.shutdown())

    async def test_devices_reconnect_to_a_relay_killed_and_restarted(self):
        carol = await self.enroll("carol", 1)
        dave = await self.enroll("dave", 2)
        listener = QueueListener(asyncio.get_running_loop())
        dave.start_listening(listener)
        first = await bounded(carol.send_text(["dave"], "before", False))

        async def dave_hears(message_id):
            while True:
                event = await bounded(listener.events.get())
                if isinstance(event, WardEvent.MESSAGE):
                    self.assertEqual(event.message_id, message_id)
                    return

        await dave_hears(first)

        # Killed and restarted on the same address: Carol's next send
        # reaches the new relay, which resets her old connection at once;
        # she connects again and the send goes through.
        port = self.addr.rsplit(":", 1)[1]
        stop_relay(self.relay, kill=True)
        self.relay, _, _ = start_relay(self.data, f"127.0.0.1:{port}")
        second = await bounded(carol.send_text(["dave"], "after a restart", False))
        await dave_hears(second)

        # Killed and not restarted: the send is kept for later.
        stop_relay(self.relay, kill=True)
        with self.assertRaises(WardError.Pending) as pending:
            await bounded(carol.send_text(["dave"], "while down", True))
        kept = pending.exception.message_id
        self.assertEqual(len(kept), 16)
        self.relay, _, _ = start_relay(self.data, f"127.0.0.1:{port}")
        # Carol's wait connects again and sends it.
        events = []
        while not any(isinstance(e, WardEvent.SENT) and e.message_id == kept for e in events):
            events.append(await bounded(carol.next_event()))
        connections = [e.connected for e in events if isinstance(e, WardEvent.CONNECTION)]
        self.assertEqual(connections[-1], True, events)
        self.assertIn(False, connections)
        await dave_hears(kept)
        self.assertTrue(await bounded(carol.is_connected()))
        dave.stop_listening()
        self.assertTrue(listener.errors.empty())
        heard = []
        while not listener.events.empty():
            heard.append(listener.events.get_nowait())
        self.assertEqual(messages(heard), [])
        for device in (carol, dave):
            await bounded(device.shutdown())


def relay_cli(*args):
    """Runs `ward-relay ARGS...`, which must succeed; returns its output."""
    out = subprocess.run(
        [RELAY, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "RUST_LOG": "off"},
    )
    return out.stdout.strip()


ROLE = "cardiology-oncall"
HOUR = 3600


class RoleRelayCase(unittest.IsolatedAsyncioTestCase):
    """A relay with three clinicians, and the administrator's role tools
    (spec/15): a key made apart from the relay, schedules signed with it and
    published. Shared by the role tests; runs no test of its own."""

    async def asyncSetUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ward-ffi-roles-")
        self.data = os.path.join(self.tmp, "relay")
        for user in ("nurse.diaz", "dr.adams", "dr.baker"):
            admin(self.data, "user", "add", user, "--role", "clinician")
        self.relay, self.addr, self.fingerprint = start_relay(self.data)

    async def asyncTearDown(self):
        stop_relay(self.relay)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def keygen(self, name):
        """A new administrator key in the file `name`; returns its public key in hex."""
        return relay_cli("--data-dir", self.data, "admin", "role", "keygen", "--out", self.path(name))

    def publish_rota(self, key_name, trusted_public, version, shifts):
        """Signs version `version` of the role's schedule, with the shifts
        `(user, from, to)` (seconds since the epoch), under the key
        `key_name`, and publishes it to a relay that trusts
        `trusted_public`. Returns what `role publish` printed."""
        schedule = self.path(f"schedule-{version}.toml")
        with open(schedule, "w") as f:
            f.write(f'role_id = "{ROLE}"\ndisplay_name = "On-call cardiology"\nversion = {version}\n')
            for user, start, end in shifts:
                f.write(f'[[assignment]]\nuser = "{user}"\nfrom = {start}\nto = {end}\n')
        signed = self.path(f"schedule-{version}.signed")
        relay_cli("admin", "role", "sign", "--key", self.path(key_name), "--schedule", schedule, "--out", signed)
        config = self.path(f"relay-{version}.toml")
        with open(config, "w") as f:
            f.write(f'data_dir = "{self.data}"\nrole_admin_keys = ["{trusted_public}"]\n')
        return relay_cli("--config", config, "admin", "role", "publish", signed)

    def sign_and_publish(self, key_name, trusted_public, version, holder):
        """A schedule in which `holder` holds the role for the hour around now."""
        now = int(time.time())
        return self.publish_rota(key_name, trusted_public, version, [(holder, now - HOUR, now + HOUR)])

    async def enroll(self, user, n, role_keys=()):
        token = issue_token(self.data, user)
        opts = WardOptions(auto_lock_after_ms=0, role_admin_keys=list(role_keys))
        return await bounded(
            WardDevice.enroll(self.path(f"{user}.ward"), key(n), self.addr, self.fingerprint, token, opts)
        )


class RoleTest(RoleRelayCase):
    """On-call roles (spec/15): an administrator key kept off the relay, a
    schedule signed with it and published, a send to whoever holds the role;
    a relay that trusts another key cannot redirect the role."""

    async def test_a_message_to_a_role_reaches_its_holder_and_a_forged_schedule_is_refused(self):
        public = self.keygen("admin.key")
        published = self.sign_and_publish("admin.key", public, 1, "dr.adams")
        self.assertEqual(published, "role cardiology-oncall version 1: 1 assignments")
        nurse = await self.enroll("nurse.diaz", 1, [bytes.fromhex(public)])
        adams = await self.enroll("dr.adams", 2)
        baker = await self.enroll("dr.baker", 3)

        sent = await bounded(nurse.send_to_role(ROLE, "Bed 4: chest pain", True))
        self.assertEqual(sent.holders, ["dr.adams"])
        self.assertEqual(sent.schedule_version, 1)
        got = await next_message(adams)
        self.assertEqual((got.message_id, got.text, got.urgent), (sent.message_id, "Bed 4: chest pain", True))

        # The relay's operator is made to trust another key, and publishes
        # a schedule that sends the role to Dr Baker: the nurse's device,
        # which pinned the organisation's key, refuses it and sends nothing.
        forger = self.keygen("forger.key")
        self.sign_and_publish("forger.key", forger, 2, "dr.baker")
        with self.assertRaises(WardError.RoleRefused):
            await bounded(nurse.send_to_role(ROLE, "redirected?", False))
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(next_message(baker), 1.0)
        for device in (nurse, adams, baker):
            await bounded(device.shutdown())


async def next_handoff(device):
    """The next RoleHandoff or HandoffRefused event; others are skipped."""
    while True:
        event = await bounded(device.next_event())
        if isinstance(event, (WardEvent.ROLE_HANDOFF, WardEvent.HANDOFF_REFUSED)):
            return event


class HandoffTest(RoleRelayCase):
    """A shift change (spec/15, "Threads and handoff"): the nurse writes to
    the role, the day holder answers in her thread, a new version of the rota
    ends the day holder's hold, and the day holder's device hands the thread
    to the night holder, end to end; the night holder answers the nurse in
    the same thread."""

    async def test_the_outgoing_holder_hands_the_thread_to_the_next(self):
        public = self.keygen("admin.key")
        pinned = [bytes.fromhex(public)]
        now = int(time.time())
        self.publish_rota(
            "admin.key",
            public,
            1,
            [("dr.adams", now - 3 * HOUR, now + 3 * HOUR), ("dr.baker", now + 3 * HOUR, now + 15 * HOUR)],
        )
        nurse = await self.enroll("nurse.diaz", 1, pinned)
        adams = await self.enroll("dr.adams", 2, pinned)
        baker = await self.enroll("dr.baker", 3, pinned)
        thread = WardRoleThread(role_id=ROLE, party="nurse.diaz")

        # Day shift: the nurse writes to the role; Dr Adams answers in her thread.
        sent = await bounded(nurse.send_to_role(ROLE, "Bed 4: chest pain, troponin pending", True))
        self.assertEqual(sent.holders, ["dr.adams"])
        got = await next_message(adams)
        self.assertEqual((got.message_id, got.role), (sent.message_id, thread))
        reply = await bounded(adams.reply_in_role_thread(ROLE, "nurse.diaz", "Coming. ECG please", False))
        self.assertEqual((reply.holders, reply.schedule_version), (["dr.adams"], 1))
        got = await next_message(nurse)
        self.assertEqual(
            (got.sender_user, got.message_id, got.text, got.role),
            ("dr.adams", reply.message_id, "Coming. ECG please", thread),
        )
        # His hold has not ended: nothing to hand over.
        self.assertEqual(await bounded(adams.hand_off_roles()), [])

        # The rota changes: Dr Adams's hold ended a minute ago, Dr Baker's began.
        change = now - 60
        self.publish_rota(
            "admin.key",
            public,
            2,
            [("dr.adams", now - 3 * HOUR, change), ("dr.baker", change, now + 12 * HOUR)],
        )
        handed = await bounded(adams.hand_off_roles())
        self.assertEqual(len(handed), 1)
        self.assertEqual(
            (handed[0].role_id, handed[0].ends_at, handed[0].to_users, handed[0].messages),
            (ROLE, change, ["dr.baker"], 2),
        )
        event = await next_handoff(baker)
        self.assertIsInstance(event, WardEvent.ROLE_HANDOFF)
        self.assertEqual((event.role_id, event.from_user, event.ends_at), (ROLE, "dr.adams", change))
        self.assertEqual(
            [(m.from_user, m.message_id, m.text, m.urgent, m.party) for m in event.messages],
            [
                ("nurse.diaz", sent.message_id, "Bed 4: chest pain, troponin pending", True, "nurse.diaz"),
                ("dr.adams", reply.message_id, "Coming. ECG please", False, "nurse.diaz"),
            ],
        )
        self.assertTrue(all(m.sent_at_ms > 0 for m in event.messages))
        # Handed over once: asking again sends nothing.
        self.assertEqual(await bounded(adams.hand_off_roles()), [])

        # The next message to the role reaches Dr Baker directly, and his
        # reply in the thread reaches the nurse.
        sent = await bounded(nurse.send_to_role(ROLE, "Bed 9: review", False))
        self.assertEqual((sent.holders, sent.schedule_version), (["dr.baker"], 2))
        got = await next_message(baker)
        self.assertEqual((got.message_id, got.text, got.role), (sent.message_id, "Bed 9: review", thread))
        reply = await bounded(baker.reply_in_role_thread(ROLE, "nurse.diaz", "Seen beds 4 and 9", False))
        self.assertEqual(reply.holders, ["dr.baker"])
        got = await next_message(nurse)
        self.assertEqual(
            (got.sender_user, got.message_id, got.role), ("dr.baker", reply.message_id, thread)
        )
        self.assertEqual(messages(await events_for(adams, 0.5)), [])
        for device in (nurse, adams, baker):
            await bounded(device.shutdown())


class GroupTest(unittest.IsolatedAsyncioTestCase):
    """A care team (spec/14): created on one device, a message encrypted
    once and read by every member, a member removed who then reads nothing
    more."""

    async def asyncSetUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ward-ffi-groups-")
        self.data = os.path.join(self.tmp, "relay")
        for user in ("nurse.diaz", "dr.adams", "dr.baker"):
            admin(self.data, "user", "add", user, "--role", "clinician")
        self.relay, self.addr, self.fingerprint = start_relay(self.data)

    async def asyncTearDown(self):
        stop_relay(self.relay)
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def enroll(self, user, n):
        token = issue_token(self.data, user)
        path = os.path.join(self.tmp, f"{user}.ward")
        return await bounded(WardDevice.enroll(path, key(n), self.addr, self.fingerprint, token, options()))

    async def test_a_care_team_reads_a_message_and_a_removed_member_reads_nothing_more(self):
        nurse = await self.enroll("nurse.diaz", 1)
        adams = await self.enroll("dr.adams", 2)
        baker = await self.enroll("dr.baker", 3)
        group_id = await bounded(nurse.create_group("4 West", ["dr.adams", "dr.baker"]))
        self.assertEqual(len(group_id), 16)
        for device in (adams, baker):
            while True:
                event = await bounded(device.next_event())
                if isinstance(event, WardEvent.GROUP_CHANGED):
                    break
            self.assertEqual(event.group_id, group_id)
            self.assertEqual(event.by_user, "nurse.diaz")
            group = await bounded(device.group(group_id))
            self.assertEqual(group.name, "4 West")
            self.assertEqual(sorted(m.user_id for m in group.members), ["dr.adams", "dr.baker", "nurse.diaz"])

        sent = await bounded(nurse.send_to_group(group_id, "Bed 12 febrile", True))
        for device in (adams, baker):
            got = await next_message(device)
            self.assertEqual((got.message_id, got.text, got.urgent, got.group_id), (sent, "Bed 12 febrile", True, group_id))

        await bounded(nurse.remove_from_group(group_id, "dr.baker"))
        while True:
            event = await bounded(baker.next_event())
            if isinstance(event, WardEvent.GROUP_CHANGED):
                break
        self.assertFalse((await bounded(baker.group(group_id))).is_member)
        sent = await bounded(nurse.send_to_group(group_id, "Baker is off shift", False))
        got = await next_message(adams)
        self.assertEqual((got.message_id, got.text), (sent, "Baker is off shift"))
        self.assertEqual(messages(await events_for(baker, 1.0)), [])
        for device in (nurse, adams, baker):
            await bounded(device.shutdown())


if __name__ == "__main__":
    unittest.main(verbosity=2)
