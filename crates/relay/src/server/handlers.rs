//! One handler per request (spec/08, "Requests").

mod send;

use std::sync::Arc;

use ward_audit::{AuditEntry, Detail, EventKind, MessageId, Outcome, UserId};
use ward_proto::relay_v1::{self as wire, ErrorCode, request::Body as Req, response::Body as Resp};

use super::auth;
use super::connection::{AuthState, Connection, Session};
use super::refusal::{Refusal, code_name};
use super::{NONCE_LEN, Shared, close_code, now_ms};
use crate::storage::{DEVICE_KEY_LEN, DeviceKey, OneTimePreKey, QueuedMessage, StorageError};

type Handled = Result<Resp, Refusal>;

/// Answers one request. Returns the request's name (for metrics) and the
/// response body or refusal.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    request: wire::Request,
) -> (&'static str, Handled) {
    let Some(body) = request.body else {
        return (
            "unknown",
            Err(Refusal::new(
                ErrorCode::UnknownRequest,
                "request body unknown to this relay",
            )),
        );
    };
    match body {
        Req::Challenge(_) => ("challenge", challenge(connection)),
        Req::Authenticate(r) => ("authenticate", authenticate(shared, connection, r).await),
        Req::Enroll(r) => ("enroll", enroll(shared, connection, r).await),
        other => {
            let Some(session) = connection.session() else {
                return (
                    name(&other),
                    Err(Refusal::new(
                        ErrorCode::Unauthenticated,
                        "authenticate first",
                    )),
                );
            };
            let kind = name(&other);
            let result = match other {
                Req::UploadPrekeys(r) => upload_prekeys(shared, &session, r).await,
                Req::GetDevices(r) => get_devices(shared, r).await,
                Req::ClaimBundles(r) => claim_bundles(shared, &session, r).await,
                Req::Send(r) => send::send(shared, &session, r).await,
                Req::Fetch(r) => fetch(shared, &session, r).await,
                Req::Ack(r) => ack(shared, &session, r).await,
                Req::PrekeyStatus(_) => prekey_status(shared, &session).await,
                Req::WipeDone(_) => wipe_done(shared, &session).await,
                Req::GetRoleSchedule(r) => get_role_schedule(shared, r).await,
                Req::Challenge(_) | Req::Authenticate(_) | Req::Enroll(_) => Err(Refusal::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is authenticated",
                )),
            };
            (kind, result)
        }
    }
}

fn name(body: &Req) -> &'static str {
    match body {
        Req::Challenge(_) => "challenge",
        Req::Authenticate(_) => "authenticate",
        Req::Enroll(_) => "enroll",
        Req::UploadPrekeys(_) => "upload_prekeys",
        Req::GetDevices(_) => "get_devices",
        Req::ClaimBundles(_) => "claim_bundles",
        Req::Send(_) => "send",
        Req::Fetch(_) => "fetch",
        Req::Ack(_) => "ack",
        Req::PrekeyStatus(_) => "prekey_status",
        Req::WipeDone(_) => "wipe_done",
        Req::GetRoleSchedule(_) => "get_role_schedule",
    }
}

// ----- authentication -----

fn challenge(connection: &Connection) -> Handled {
    let mut auth = connection.auth.lock().map_err(|_| Refusal::internal())?;
    match &mut *auth {
        AuthState::Authenticated(_) => Err(Refusal::new(
            ErrorCode::AlreadyAuthenticated,
            "this connection is authenticated",
        )),
        AuthState::Anonymous { nonce, .. } => {
            let mut fresh = [0u8; NONCE_LEN];
            getrandom::fill(&mut fresh).map_err(|_| Refusal::internal())?;
            *nonce = Some(fresh);
            Ok(Resp::Challenge(wire::Challenge {
                nonce: fresh.to_vec(),
            }))
        }
    }
}

/// Takes the connection's nonce (consumed by any attempt). An attempt
/// without one is a failed attempt like any other: counted and audited.
async fn take_nonce(
    shared: &Arc<Shared>,
    connection: &Connection,
) -> Result<[u8; NONCE_LEN], Refusal> {
    let taken = {
        let mut auth = connection.auth.lock().map_err(|_| Refusal::internal())?;
        match &mut *auth {
            AuthState::Authenticated(_) => {
                return Err(Refusal::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is authenticated",
                ));
            }
            AuthState::Anonymous { nonce, .. } => nonce.take(),
        }
    };
    match taken {
        Some(nonce) => Ok(nonce),
        None => Err(auth_failed(
            shared,
            connection,
            None,
            None,
            Refusal::new(ErrorCode::AuthFailed, "ask for a challenge first"),
            "no_challenge",
        )
        .await),
    }
}

/// Records a failed attempt: audits it, and closes the connection after
/// too many. Returns the refusal to answer.
async fn auth_failed(
    shared: &Arc<Shared>,
    connection: &Connection,
    device: Option<DeviceKey>,
    user: Option<UserId>,
    refusal: Refusal,
    why: &str,
) -> Refusal {
    shared.metrics.auth_failure_total.inc();
    let failures = match connection.auth.lock() {
        Ok(mut auth) => match &mut *auth {
            AuthState::Anonymous { failures, .. } => {
                *failures += 1;
                *failures
            }
            AuthState::Authenticated(_) => 0,
        },
        Err(_) => u32::MAX,
    };
    let entry = AuditEntry {
        actor_user: user,
        actor_device: device.and_then(|d| d.audit_id()),
        outcome: ward_audit::ErrorCode::new(code_name(refusal.code))
            .map_or(Outcome::Ok, Outcome::Error),
        detail: Detail::new(why).ok(),
        ..AuditEntry::new(0, 0, EventKind::AuthFailure)
    };
    if let Err(e) = shared
        .storage(move |s| s.append_audit(&[entry], now_ms()))
        .await
    {
        tracing::error!(error = %e, "auditing a failed authentication failed");
    }
    tracing::info!(connection = connection.id, why, "authentication failed");
    if failures >= shared.limits.max_auth_failures {
        connection.quic.close(
            close_code::AUTH_FAILURES.into(),
            b"too many failed authentications",
        );
    }
    refusal
}

fn succeed(
    shared: &Shared,
    connection: &Connection,
    session: Session,
    one_time_prekeys: u64,
    signed_prekeys_missing: bool,
) -> Handled {
    let user_id = session.user.as_str().to_owned();
    let device_key = session.device.0.to_vec();
    let mut auth = connection.auth.lock().map_err(|_| Refusal::internal())?;
    if matches!(&*auth, AuthState::Authenticated(_)) {
        return Err(Refusal::new(
            ErrorCode::AlreadyAuthenticated,
            "this connection is authenticated",
        ));
    }
    tracing::info!(connection = connection.id, device = %session.device, "authenticated");
    *auth = AuthState::Authenticated(Arc::new(session));
    drop(auth);
    connection.authenticated.notify_one();
    shared.metrics.auth_success_total.inc();
    Ok(Resp::Authenticated(wire::Authenticated {
        user_id,
        device_key,
        one_time_prekeys,
        prekeys_low: one_time_prekeys < u64::from(shared.limits.prekeys_low_threshold),
        signed_prekeys_missing,
    }))
}

async fn authenticate(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    r: wire::Authenticate,
) -> Handled {
    let nonce = take_nonce(shared, connection).await?;
    let Ok(key) = <[u8; DEVICE_KEY_LEN]>::try_from(&r.device_key[..]) else {
        return Err(auth_failed(
            shared,
            connection,
            None,
            None,
            Refusal::new(ErrorCode::AuthFailed, "device key must be 32 bytes"),
            "bad_key",
        )
        .await);
    };
    let device = DeviceKey(key);
    let known = shared.storage(move |s| s.get_device(&device)).await;
    let stored = match known {
        Ok(stored) => stored,
        Err(StorageError::NotFound { .. }) => {
            return Err(auth_failed(
                shared,
                connection,
                Some(device),
                None,
                Refusal::new(ErrorCode::AuthFailed, "unknown device"),
                "unknown_device",
            )
            .await);
        }
        Err(e) => return Err(e.into()),
    };
    let transcript =
        ward_proto::auth::authentication_transcript(&connection.exporter, &nonce, &key);
    if !auth::verify(&key, &transcript, &r.signature) {
        return Err(auth_failed(
            shared,
            connection,
            Some(device),
            Some(stored.user),
            Refusal::new(ErrorCode::AuthFailed, "bad signature"),
            "bad_signature",
        )
        .await);
    }
    if !stored.is_active() {
        return Err(auth_failed(
            shared,
            connection,
            Some(device),
            Some(stored.user),
            Refusal::new(ErrorCode::Revoked, "device revoked"),
            "revoked",
        )
        .await);
    }
    let identity = ward_core::DeviceIdentity::from_bytes(&stored.identity).map_err(|_| {
        tracing::error!(device = %device, "stored identity does not verify");
        Refusal::internal()
    })?;
    let user = stored.user.clone();
    let entry_user = user.clone();
    let (count, signed_missing) = shared
        .storage(move |s| {
            s.append_audit(
                &[AuditEntry {
                    actor_user: Some(entry_user),
                    actor_device: device.audit_id(),
                    ..AuditEntry::new(0, 0, EventKind::AuthSuccess)
                }],
                now_ms(),
            )?;
            Ok((
                s.one_time_prekey_count(&device)?,
                !s.has_signed_prekeys(&device)?,
            ))
        })
        .await?;
    succeed(
        shared,
        connection,
        Session {
            device,
            user,
            identity,
        },
        count,
        signed_missing,
    )
}

async fn enroll(shared: &Arc<Shared>, connection: &Arc<Connection>, r: wire::Enroll) -> Handled {
    let nonce = take_nonce(shared, connection).await?;
    let identity = match ward_core::DeviceIdentity::from_bytes(&r.identity) {
        Ok(identity) => identity,
        Err(_) => {
            return Err(auth_failed(
                shared,
                connection,
                None,
                None,
                Refusal::new(
                    ErrorCode::EnrollmentRefused,
                    "identity is not a valid 128-byte DeviceIdentity",
                ),
                "bad_identity",
            )
            .await);
        }
    };
    let key = *identity.signing_key();
    let device = DeviceKey(key);
    let transcript = ward_proto::auth::enrollment_transcript(
        &connection.exporter,
        &nonce,
        &r.token,
        &r.identity,
    );
    if !auth::verify(&key, &transcript, &r.signature) {
        return Err(auth_failed(
            shared,
            connection,
            Some(device),
            None,
            Refusal::new(ErrorCode::AuthFailed, "bad signature"),
            "bad_signature",
        )
        .await);
    }
    let token_hash = crate::keys::token_hash(&r.token);
    let enrolled_identity = identity.clone();
    let redeemed = shared
        .storage(move |s| s.redeem_enrollment_token(&token_hash, &enrolled_identity, now_ms()))
        .await;
    let stored = match redeemed {
        Ok(stored) => stored,
        Err(
            e @ (StorageError::TokenInvalid
            | StorageError::TokenExpired
            | StorageError::TokenUsed
            | StorageError::AlreadyExists { .. }),
        ) => {
            let why = match e {
                StorageError::TokenInvalid => "token_invalid",
                StorageError::TokenExpired => "token_expired",
                StorageError::TokenUsed => "token_used",
                _ => "device_known",
            };
            return Err(auth_failed(
                shared,
                connection,
                Some(device),
                None,
                Refusal::new(ErrorCode::EnrollmentRefused, e.to_string()),
                why,
            )
            .await);
        }
        Err(e) => return Err(e.into()),
    };
    shared.metrics.enrollments_total.inc();
    tracing::info!(device = %device, user = %stored.user, "device enrolled");
    succeed(
        shared,
        connection,
        Session {
            device,
            user: stored.user,
            identity,
        },
        0,
        true,
    )
}

// ----- directory -----

fn device_key(bytes: &[u8]) -> Result<DeviceKey, Refusal> {
    <[u8; DEVICE_KEY_LEN]>::try_from(bytes)
        .map(DeviceKey)
        .map_err(|_| Refusal::invalid("device keys are 32 bytes"))
}

fn user_id(text: &str) -> Result<UserId, Refusal> {
    UserId::new(text).map_err(|_| Refusal::invalid("not a valid user id"))
}

async fn upload_prekeys(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    r: wire::UploadPreKeys,
) -> Handled {
    if !r.signed_prekeys.is_empty() {
        ward_core::SignedPreKeys::decode(&r.signed_prekeys, &session.identity).map_err(|_| {
            Refusal::invalid("signed prekeys do not decode or are not signed by this device")
        })?;
    }
    let limit = shared.limits.max_one_time_prekeys as usize;
    if r.one_time_prekeys.len() > limit {
        return Err(Refusal::new(
            ErrorCode::TooManyPrekeys,
            format!("at most {limit} one-time prekeys per device"),
        ));
    }
    let mut one_time = Vec::with_capacity(r.one_time_prekeys.len());
    for key in r.one_time_prekeys {
        let parsed = ward_core::OneTimePreKey::decode(&key.key)
            .map_err(|_| Refusal::invalid("a one-time prekey does not decode"))?;
        if parsed.id != key.id {
            return Err(Refusal::invalid(
                "a one-time prekey's id differs from its entry's id",
            ));
        }
        one_time.push(OneTimePreKey {
            id: key.id,
            encoded: key.key,
        });
    }
    let device = session.device;
    let signed = r.signed_prekeys;
    let (added, count) = shared
        .storage(move |s| {
            let signed = (!signed.is_empty()).then_some(&signed[..]);
            let added = s.upload_prekeys(&device, signed, &one_time, now_ms())?;
            Ok((added, s.one_time_prekey_count(&device)?))
        })
        .await?;
    Ok(Resp::PrekeysStored(wire::PreKeysStored {
        one_time_prekeys: count,
        added: u32::try_from(added).unwrap_or(u32::MAX),
    }))
}

async fn prekey_status(shared: &Arc<Shared>, session: &Arc<Session>) -> Handled {
    let device = session.device;
    let count = shared
        .storage(move |s| s.one_time_prekey_count(&device))
        .await?;
    Ok(Resp::PrekeyCount(wire::PreKeyCount {
        one_time_prekeys: count,
        prekeys_low: count < u64::from(shared.limits.prekeys_low_threshold),
    }))
}

/// Serves a role's latest schedule as it was signed; any authenticated
/// device may read it (the schedule is not PHI, and senders need it).
async fn get_role_schedule(shared: &Arc<Shared>, r: wire::GetRoleSchedule) -> Handled {
    if r.role_id.is_empty() || r.role_id.len() > ward_core::limits::MAX_ROLE_ID_LEN {
        return Err(Refusal::invalid("role_id must be 1 to 32 bytes"));
    }
    let record = shared
        .storage(move |s| s.get_role_schedule(&r.role_id))
        .await?;
    Ok(Resp::RoleSchedule(wire::RoleSchedule {
        signed: record.signed,
    }))
}

/// The most users one directory request may name.
const MAX_USERS_PER_REQUEST: usize = 256;

async fn get_devices(shared: &Arc<Shared>, r: wire::GetDevices) -> Handled {
    if r.user_ids.len() > MAX_USERS_PER_REQUEST {
        return Err(Refusal::invalid("too many users in one request"));
    }
    let users = r
        .user_ids
        .iter()
        .map(|u| user_id(u))
        .collect::<Result<Vec<_>, _>>()?;
    let listed = shared
        .storage(move |s| {
            users
                .into_iter()
                .map(|u| {
                    let devices = s.list_devices(&u)?;
                    Ok((u, devices))
                })
                .collect::<crate::storage::Result<Vec<_>>>()
        })
        .await?;
    Ok(Resp::Devices(wire::DeviceList {
        users: super::refusal::user_devices(&listed),
    }))
}

async fn claim_bundles(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    r: wire::ClaimBundles,
) -> Handled {
    let user = user_id(&r.user_id)?;
    if r.device_keys.len() > shared.limits.max_envelopes as usize {
        return Err(Refusal::invalid("too many devices in one request"));
    }
    let wanted = r
        .device_keys
        .iter()
        .map(|k| device_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let requester = session.device;
    let threshold = u64::from(shared.limits.prekeys_low_threshold);
    let claimed = shared
        .storage(move |s| {
            let devices = s.list_devices(&user)?;
            let targets: Vec<DeviceKey> = if wanted.is_empty() {
                devices.iter().map(|d| d.key).collect()
            } else {
                for key in &wanted {
                    if !devices.iter().any(|d| d.key == *key) {
                        return Err(StorageError::NotFound {
                            what: "device of this user",
                        });
                    }
                }
                wanted
            };
            let mut bundles = Vec::with_capacity(targets.len());
            let mut low = Vec::new();
            for target in targets {
                match s.claim_bundle(&requester, &target, now_ms()) {
                    Ok(bundle) => {
                        if bundle.one_time_prekey.is_some() {
                            let left = s.one_time_prekey_count(&target)?;
                            if left < threshold {
                                low.push((target, left));
                            }
                        }
                        bundles.push(bundle);
                    }
                    // A device that has not uploaded prekeys yet.
                    Err(StorageError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((bundles, low))
        })
        .await?;
    let (bundles, low) = claimed;
    for (device, left) in low {
        shared.prekeys_low(&device, left);
    }
    Ok(Resp::Bundles(wire::Bundles {
        bundles: bundles
            .into_iter()
            .map(|b| wire::Bundle {
                identity: b.identity.to_vec(),
                signed_prekeys: b.signed_prekeys,
                one_time_prekey: b.one_time_prekey.map(|k| wire::OneTimePreKey {
                    id: k.id,
                    key: k.encoded,
                }),
            })
            .collect(),
    }))
}

// ----- messages -----

pub(crate) fn delivery(m: &QueuedMessage) -> wire::Delivery {
    wire::Delivery {
        seq: m.seq,
        sender_device: m.sender.0.to_vec(),
        sender_user: m.sender_user.as_str().to_owned(),
        message_id: m.message_id.0.to_vec(),
        enqueued_at_ms: m.enqueued_at,
        expires_at_ms: m.expires_at,
        ciphertext: m.ciphertext.clone(),
    }
}

fn message_id(bytes: &[u8]) -> Result<MessageId, Refusal> {
    <[u8; ward_audit::entry::MESSAGE_ID_LEN]>::try_from(bytes)
        .map(MessageId)
        .map_err(|_| Refusal::invalid("message ids are 16 bytes"))
}

async fn fetch(shared: &Arc<Shared>, session: &Arc<Session>, r: wire::Fetch) -> Handled {
    let limit = match r.limit {
        0 => shared.limits.max_fetch.min(100),
        n => n.min(shared.limits.max_fetch),
    };
    let device = session.device;
    let user = session.user.clone();
    let budget = shared.limits.max_frame_len as usize;
    let messages = shared
        .storage(move |s| {
            let mut messages = s.fetch(&device, r.after_seq, limit)?;
            // Keep the response within one frame of the relay's own limit.
            let mut total = 0usize;
            let keep = messages
                .iter()
                .take_while(|m| {
                    total += m.ciphertext.len() + 128;
                    total <= budget
                })
                .count()
                .max(1)
                .min(messages.len());
            messages.truncate(keep);
            let entries: Vec<AuditEntry> = messages
                .iter()
                .map(|m| AuditEntry {
                    actor_user: Some(m.sender_user.clone()),
                    actor_device: m.sender.audit_id(),
                    target_user: Some(user.clone()),
                    target_device: device.audit_id(),
                    message_id: Some(m.message_id),
                    size: Some(m.ciphertext.len() as u64),
                    detail: Detail::new("fetched").ok(),
                    ..AuditEntry::new(0, 0, EventKind::Delivery)
                })
                .collect();
            if !entries.is_empty() {
                s.append_audit(&entries, now_ms())?;
            }
            Ok(messages)
        })
        .await?;
    Ok(Resp::Messages(wire::Messages {
        messages: messages.iter().map(delivery).collect(),
    }))
}

/// The most ids one acknowledgment may carry.
const MAX_ACK_IDS: usize = 1_000;

async fn ack(shared: &Arc<Shared>, session: &Arc<Session>, r: wire::Ack) -> Handled {
    if r.message_ids.len() > MAX_ACK_IDS {
        return Err(Refusal::invalid(format!(
            "at most {MAX_ACK_IDS} ids per acknowledgment"
        )));
    }
    let ids = r
        .message_ids
        .iter()
        .map(|id| message_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let device = session.device;
    let (deleted, unknown) = shared
        .storage(move |s| {
            let done = s.acknowledge(&device, &ids, now_ms())?;
            let deleted = u32::try_from(done.acked.len()).unwrap_or(u32::MAX);
            let unknown = done.unknown.iter().map(|id| id.0.to_vec()).collect();
            Ok((deleted, unknown))
        })
        .await?;
    shared
        .metrics
        .messages_acknowledged_total
        .inc_by(u64::from(deleted));
    Ok(Resp::Acked(wire::Acked {
        deleted,
        unknown_ids: unknown,
    }))
}

// ----- remote wipe -----

/// The device erased its store (spec/08, "Remote wipe"): clear the
/// instruction, audit, revoke. The revocation poll closes the connection
/// (`0x3`) right after this answer.
async fn wipe_done(shared: &Arc<Shared>, session: &Arc<Session>) -> Handled {
    let device = session.device;
    shared
        .storage(move |s| s.complete_wipe(&device, now_ms()))
        .await?;
    tracing::info!(device = %device, "device acknowledged its wipe and was revoked");
    Ok(Resp::WipeAcknowledged(wire::WipeAcknowledged {}))
}
