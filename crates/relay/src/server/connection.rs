//! One client connection: its authentication state, its request streams
//! and its delivery stream.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prost::Message;
use tokio::sync::Notify;
use ward_audit::{AuditEntry, EventKind};
use ward_proto::frame::{self, FrameError, HEADER_LEN};
use ward_proto::relay_v1::{self as wire, ErrorCode};

use super::refusal::{Refusal, code_name};
use super::{
    DeliverySignal, EXPORTER_LABEL, EXPORTER_LEN, NONCE_LEN, Online, Shared, close_code, handlers,
};
use crate::storage::{DeviceKey, StorageError};

/// How many queued messages the delivery task reads at a time.
const DELIVERY_BATCH: u32 = 256;

/// An authenticated device on this connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) device: DeviceKey,
    pub(crate) user: ward_audit::UserId,
    pub(crate) identity: ward_core::DeviceIdentity,
}

pub(crate) enum AuthState {
    Anonymous {
        nonce: Option<[u8; NONCE_LEN]>,
        failures: u32,
    },
    Authenticated(Arc<Session>),
}

/// A token bucket: `rate` tokens per second, at most `burst`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The per-connection state every request stream of it shares.
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) quic: quinn::Connection,
    pub(crate) exporter: [u8; EXPORTER_LEN],
    pub(crate) auth: Mutex<AuthState>,
    bucket: Mutex<Bucket>,
    /// Signalled once the connection authenticates.
    pub(crate) authenticated: Notify,
}

impl Connection {
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        match &*self.auth.lock().ok()? {
            AuthState::Authenticated(session) => Some(Arc::clone(session)),
            AuthState::Anonymous { .. } => None,
        }
    }

    /// Takes one request token, or says how long to wait for one.
    fn take_token(&self, shared: &Shared) -> Result<(), u64> {
        let rate = f64::from(shared.limits.requests_per_second.max(1));
        let burst = f64::from(shared.limits.request_burst.max(1));
        let Ok(mut bucket) = self.bucket.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate * 1000.0;
            Err(wait.ceil() as u64)
        }
    }
}

/// Drives one incoming connection to its end.
pub(crate) async fn run(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let quic = match incoming.await {
        Ok(quic) => quic,
        Err(e) => {
            // Wrong ALPN, bad TLS, or a handshake timeout.
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let mut exporter = [0u8; EXPORTER_LEN];
    if quic
        .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .is_err()
    {
        quic.close(close_code::SHUTDOWN.into(), b"no keying material");
        return;
    }
    let connection = Arc::new(Connection {
        id: shared.new_connection_id(),
        quic: quic.clone(),
        exporter,
        auth: Mutex::new(AuthState::Anonymous {
            nonce: None,
            failures: 0,
        }),
        bucket: Mutex::new(Bucket {
            tokens: f64::from(shared.limits.request_burst.max(1)),
            last: Instant::now(),
        }),
        authenticated: Notify::new(),
    });
    shared.metrics.connections_open.inc();
    tracing::debug!(connection = connection.id, remote = %quic.remote_address(), "connected");

    let auth_deadline = tokio::time::sleep(shared.limits.auth_timeout());
    tokio::pin!(auth_deadline);
    let mut delivery = None;
    loop {
        tokio::select! {
            stream = quic.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(serve_stream(
                        Arc::clone(&shared),
                        Arc::clone(&connection),
                        send,
                        recv,
                    ));
                }
                Err(_) => break,
            },
            () = connection.authenticated.notified(), if delivery.is_none() => {
                if let Some(session) = connection.session() {
                    delivery = Some(start_delivery(&shared, &connection, session));
                }
            }
            () = &mut auth_deadline, if delivery.is_none() => {
                if connection.session().is_none() {
                    quic.close(close_code::AUTH_TIMEOUT.into(), b"authentication timeout");
                    break;
                }
            }
        }
    }
    if let Some((session, task)) = delivery {
        task.abort();
        shared.go_offline(&session.device, connection.id);
    }
    shared.metrics.connections_open.dec();
    tracing::debug!(connection = connection.id, "disconnected");
}

fn start_delivery(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    session: Arc<Session>,
) -> (Arc<Session>, tokio::task::JoinHandle<()>) {
    let signal = Arc::new(DeliverySignal::default());
    shared.go_online(
        session.device,
        Online {
            connection_id: connection.id,
            quic: connection.quic.clone(),
            signal: Arc::clone(&signal),
        },
    );
    let task = tokio::spawn(deliver(
        Arc::clone(shared),
        connection.quic.clone(),
        Arc::clone(&session),
        signal,
    ));
    (session, task)
}

/// Pushes the device's queue, then each new message, on one
/// unidirectional stream, in queue order. A device with a pending wipe
/// (spec/08, "Remote wipe") gets `Push.wipe`, before any delivery if the
/// wipe was pending when it authenticated, and nothing after it.
async fn deliver(
    shared: Arc<Shared>,
    quic: quinn::Connection,
    session: Arc<Session>,
    signal: Arc<DeliverySignal>,
) {
    let Ok(mut stream) = quic.open_uni().await else {
        return;
    };
    let device = session.device;
    match shared.storage(move |s| s.wipe_pending(&device)).await {
        Ok(true) => return push_wipe(&quic, stream).await,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, device = %device, "reading a pending wipe failed");
            quic.close(close_code::SHUTDOWN.into(), b"relay storage failed");
            return;
        }
    }
    let mut after_seq = 0;
    loop {
        if signal.wipe.load(Ordering::SeqCst) {
            return push_wipe(&quic, stream).await;
        }
        let batch = shared
            .storage(move |s| s.fetch(&device, after_seq, DELIVERY_BATCH))
            .await;
        let batch = match batch {
            Ok(batch) => batch,
            Err(StorageError::Revoked { .. }) => {
                // Revoked between the revocation poll's passes: close as
                // the poll would have.
                shared.disconnect_revoked(&device);
                quic.close(close_code::REVOKED.into(), b"device revoked");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, device = %device, "reading a queue failed");
                quic.close(close_code::SHUTDOWN.into(), b"relay storage failed");
                return;
            }
        };
        if let Some(last) = batch.last() {
            after_seq = last.seq;
            let mut frames = Vec::new();
            let mut entries = Vec::with_capacity(batch.len());
            for message in &batch {
                entries.push(AuditEntry {
                    actor_user: Some(message.sender_user.clone()),
                    actor_device: message.sender.audit_id(),
                    target_user: Some(session.user.clone()),
                    target_device: device.audit_id(),
                    message_id: Some(message.message_id),
                    size: Some(message.ciphertext.len() as u64),
                    ..AuditEntry::new(0, 0, EventKind::Delivery)
                });
                frames.extend_from_slice(&frame::encode(&wire::Push {
                    body: Some(wire::push::Body::Delivery(handlers::delivery(message))),
                }));
            }
            if stream.write_all(&frames).await.is_err() {
                return;
            }
            shared
                .metrics
                .messages_pushed_total
                .inc_by(batch.len() as u64);
            if let Err(e) = shared
                .storage(move |s| s.append_audit(&entries, super::now_ms()))
                .await
            {
                tracing::error!(error = %e, "auditing deliveries failed");
            }
            if batch.len() == DELIVERY_BATCH as usize {
                continue;
            }
        }
        tokio::select! {
            () = signal.wake.notified() => {}
            _ = quic.closed() => return,
        }
        if signal.wipe.load(Ordering::SeqCst) {
            return push_wipe(&quic, stream).await;
        }
        let low = signal
            .prekeys_low
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(one_time_prekeys) = low {
            let notice = wire::Push {
                body: Some(wire::push::Body::PrekeysLow(wire::PreKeysLow {
                    one_time_prekeys,
                })),
            };
            if stream.write_all(&frame::encode(&notice)).await.is_err() {
                return;
            }
        }
    }
}

/// Writes `Push.wipe`, then keeps the delivery stream open and silent until
/// the connection ends (the device answers with `WipeDone`, and is then
/// revoked and disconnected).
async fn push_wipe(quic: &quinn::Connection, mut stream: quinn::SendStream) {
    let push = wire::Push {
        body: Some(wire::push::Body::Wipe(wire::Wipe {})),
    };
    if stream.write_all(&frame::encode(&push)).await.is_err() {
        return;
    }
    quic.closed().await;
}

/// Serves one request stream: one request frame in, one response frame out.
async fn serve_stream(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let read = tokio::time::timeout(
        shared.limits.idle_timeout(),
        read_request(&mut recv, shared.limits.max_frame_len),
    )
    .await
    .unwrap_or_else(|_| Err(Refusal::malformed("request not received in time")));
    let (kind, result) = match read {
        Ok(request) => match connection.take_token(&shared) {
            Ok(()) => handlers::dispatch(&shared, &connection, request).await,
            Err(wait) => (
                "any",
                Err(Refusal {
                    retry_after_ms: wait,
                    ..Refusal::new(ErrorCode::RateLimited, "too many requests")
                }),
            ),
        },
        Err(refusal) => {
            shared.metrics.frames_refused_total.inc();
            // Do not read the rest of a refused frame.
            let _ = recv.stop(0u32.into());
            ("frame", Err(refusal))
        }
    };
    let body = match result {
        Ok(body) => {
            shared.metrics.request(kind, "ok");
            body
        }
        Err(refusal) => {
            shared.metrics.request(kind, code_name(refusal.code));
            wire::response::Body::Error(refusal.into_wire())
        }
    };
    let response = frame::encode(&wire::Response { body: Some(body) });
    if send.write_all(&response).await.is_ok() {
        let _ = send.finish();
    }
}

/// Reads exactly one request frame and the end of the stream.
async fn read_request(recv: &mut quinn::RecvStream, max: u32) -> Result<wire::Request, Refusal> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header)
        .await
        .map_err(|_| Refusal::malformed("stream ended before a frame header"))?;
    let len = frame::body_len(header, max).map_err(|e| match e {
        FrameError::TooLarge { .. } => Refusal::new(ErrorCode::FrameTooLarge, e.to_string()),
        other => Refusal::malformed(other.to_string()),
    })?;
    // Read to the end of the stream, but never more than the frame: a
    // body that has not arrived is not buffered ahead of its bytes.
    let body = recv.read_to_end(len).await.map_err(|e| match e {
        quinn::ReadToEndError::TooLong => Refusal::malformed("bytes after the frame"),
        quinn::ReadToEndError::Read(_) => Refusal::malformed("stream failed inside a frame"),
    })?;
    if body.len() != len {
        return Err(Refusal::malformed(FrameError::Truncated.to_string()));
    }
    wire::Request::decode(&body[..]).map_err(|_| Refusal::malformed("not a valid Request"))
}
