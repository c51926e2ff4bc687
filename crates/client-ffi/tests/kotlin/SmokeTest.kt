// Smoke test of ward-client-ffi's Kotlin bindings on the JVM, against a real
// relay: two users enroll, exchange messages through `ward-relay` on
// 127.0.0.1, a listener hears one, a message to an on-call role reaches its
// holder (a schedule signed with `ward-relay admin role`), who replies in the
// role thread and has nothing to hand off while the hold runs, and a refused
// send and a wrong storage key come back as typed exceptions.
//
// Run by scripts/ffi-test.sh, which compiles it with the generated bindings
// and sets:
//   WARD_RELAY   the ward-relay binary
// and -Djna.library.path to the directory holding libward_client_ffi.so.
// Every wait is bounded; any failure throws, and the JVM exits non-zero.

import java.io.File
import java.nio.file.Files
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uniffi.ward_client_ffi.WardDevice
import uniffi.ward_client_ffi.WardEvent
import uniffi.ward_client_ffi.WardException
import uniffi.ward_client_ffi.WardListener
import uniffi.ward_client_ffi.WardOptions

const val TIMEOUT_S = 20L
const val LISTENING = "ward-relay listening on "
const val FINGERPRINT = ", certificate sha256 fingerprint "

val relayBinary: String = System.getenv("WARD_RELAY") ?: error("WARD_RELAY is not set")

fun relayCommand(vararg args: String): ProcessBuilder =
    ProcessBuilder(listOf(relayBinary) + args).also { it.environment()["RUST_LOG"] = "off" }

fun admin(data: File, vararg args: String): String = relayCli("--data-dir", data.path, "admin", *args)

fun relayCli(vararg args: String): String {
    val process = relayCommand(*args)
        .redirectError(ProcessBuilder.Redirect.DISCARD)
        .start()
    val out = CompletableFuture.supplyAsync { process.inputStream.bufferedReader().readText() }
    check(process.waitFor(TIMEOUT_S, TimeUnit.SECONDS)) { "ward-relay ${args.toList()} hung" }
    check(process.exitValue() == 0) { "ward-relay ${args.toList()} failed" }
    return out.get(TIMEOUT_S, TimeUnit.SECONDS)
}

fun issueToken(data: File, user: String): String =
    admin(data, "token", "issue", user, "--valid-hours", "1")
        .lines()
        .single { it.startsWith("ward-enroll-") }

fun key(n: Int) = ByteArray(32) { n.toByte() }

// No auto-lock during the test; the other options keep their defaults.
fun options() = WardOptions(autoLockAfterMs = 0uL)

suspend fun nextMessage(device: WardDevice): WardEvent.Message {
    while (true) {
        val event = device.nextEvent()
        if (event is WardEvent.Message) return event
    }
}

class ChannelListener : WardListener {
    val events = Channel<WardEvent>(Channel.UNLIMITED)
    val errors = Channel<WardException>(Channel.UNLIMITED)

    override fun onEvent(event: WardEvent) {
        events.trySend(event)
    }

    override fun onError(error: WardException) {
        errors.trySend(error)
    }
}

fun main() {
    val tmp = Files.createTempDirectory("ward-kotlin-").toFile()
    val data = File(tmp, "relay")
    admin(data, "user", "add", "alice", "--role", "doctor")
    admin(data, "user", "add", "bob", "--role", "nurse")
    val aliceToken = issueToken(data, "alice")
    val bobToken = issueToken(data, "bob")

    // On-call cardiology, held by Bob now: an administrator key made and
    // used apart from the relay, the schedule published under it.
    val adminKey = File(tmp, "admin.key").path
    val adminPublic = relayCli("--data-dir", data.path, "admin", "role", "keygen", "--out", adminKey).trim()
    val now = System.currentTimeMillis() / 1000
    val schedule = File(tmp, "oncall.toml")
    schedule.writeText(
        "role_id = \"cardiology-oncall\"\ndisplay_name = \"On-call cardiology\"\nversion = 1\n" +
            "[[assignment]]\nuser = \"bob\"\nfrom = ${now - 3600}\nto = ${now + 3600}\n",
    )
    val signed = File(tmp, "oncall.signed").path
    relayCli("admin", "role", "sign", "--key", adminKey, "--schedule", schedule.path, "--out", signed)
    val config = File(tmp, "relay.toml")
    config.writeText("data_dir = \"${data.path}\"\nrole_admin_keys = [\"$adminPublic\"]\n")
    relayCli("--config", config.path, "admin", "role", "publish", signed)
    val pinned = adminPublic.chunked(2).map { it.toInt(16).toByte() }.toByteArray()

    val relay = relayCommand("serve", "--bind", "127.0.0.1:0", "--data-dir", data.path)
        .redirectError(ProcessBuilder.Redirect.DISCARD)
        .start()
    try {
        val line = CompletableFuture.supplyAsync { relay.inputStream.bufferedReader().readLine() }
            .get(TIMEOUT_S, TimeUnit.SECONDS)
        check(line != null && line.startsWith(LISTENING)) { "the relay did not start: $line" }
        val (addr, fingerprint) = line.removePrefix(LISTENING).trim().split(FINGERPRINT)

        runBlocking {
            withTimeout(TIMEOUT_S * 3000) {
                val aliceStore = File(tmp, "alice.ward").path
                val pinnedOptions = WardOptions(autoLockAfterMs = 0uL, roleAdminKeys = listOf(pinned))
                val alice = WardDevice.enroll(aliceStore, key(1), addr, fingerprint, aliceToken, pinnedOptions)
                val bob = WardDevice.enroll(File(tmp, "bob.ward").path, key(2), addr, fingerprint, bobToken, pinnedOptions)
                check(alice.user() == "alice" && bob.user() == "bob")

                // Alice to Bob, across the FFI's async calls.
                val sent = alice.sendText(listOf("bob"), "Bed 4: potassium 6.1", true)
                check(sent.size == 16)
                val got = nextMessage(bob)
                check(got.senderUser == "alice") { "sender ${got.senderUser}" }
                check(got.senderDevice.contentEquals(alice.deviceKey()))
                check(got.messageId.contentEquals(sent))
                check(got.text == "Bed 4: potassium 6.1") { "text ${got.text}" }
                check(got.urgent && !got.fromOwnDevice)

                // Bob answers through a listener: a foreign callback from Rust.
                val listener = ChannelListener()
                alice.startListening(listener)
                val reply = bob.sendText(listOf("alice"), "On my way.", false)
                var heard: WardEvent
                do {
                    heard = listener.events.receive()
                } while (heard !is WardEvent.Message)
                check(heard.text == "On my way." && heard.messageId.contentEquals(reply))
                check(!heard.urgent && heard.senderUser == "bob")
                alice.stopListening()
                check(listener.errors.tryReceive().isFailure) { "the listener reported an error" }

                // To whoever holds the role now: Bob.
                val toRole = alice.sendToRole("cardiology-oncall", "Bed 7: troponin rising", true)
                check(toRole.holders == listOf("bob")) { "holders ${toRole.holders}" }
                val paged = nextMessage(bob)
                check(paged.messageId.contentEquals(toRole.messageId) && paged.text == "Bed 7: troponin rising")
                val thread = paged.role ?: error("no role thread")
                check(thread.roleId == "cardiology-oncall" && thread.party == "alice") { "thread ${thread.roleId}" }
                // Bob answers in Alice's thread with the role.
                val answer = bob.replyInRoleThread(thread.roleId, thread.party, "Coming. ECG please", false)
                check(answer.holders == listOf("bob")) { "holders ${answer.holders}" }
                val answered = nextMessage(alice)
                check(answered.messageId.contentEquals(answer.messageId) && answered.role == thread)
                // His hold runs for another hour: nothing to hand off yet.
                check(bob.handOffRoles().isEmpty()) { "a handoff before the hold ended" }

                // A care team: created here, read by Bob's device.
                val team = alice.createGroup("4 West", listOf("bob"))
                check(team.size == 16)
                val toTeam = alice.sendToGroup(team, "Bed 9: fall, please assess", true)
                val teamMessage = nextMessage(bob)
                check(teamMessage.messageId.contentEquals(toTeam) && teamMessage.groupId!!.contentEquals(team))
                check(bob.group(team)!!.name == "4 West")

                // Typed errors.
                try {
                    alice.sendText(listOf("nobody"), "hello?", false)
                    error("a send to an unknown user was accepted")
                } catch (refused: WardException.Refused) {
                    check(refused.code == "NOT_FOUND") { "refused with ${refused.code}" }
                }
                alice.shutdown()
                try {
                    WardDevice.open(aliceStore, key(9), options())
                    error("the store opened under a wrong key")
                } catch (expected: WardException.WrongKey) {
                }
                val reopened = WardDevice.open(aliceStore, key(1), options())
                check(reopened.user() == "alice")
                reopened.shutdown()
                bob.shutdown()
            }
        }
        println("kotlin smoke test: ok")
    } finally {
        relay.destroy()
        if (!relay.waitFor(TIMEOUT_S, TimeUnit.SECONDS)) relay.destroyForcibly()
        tmp.deleteRecursively()
    }
}
