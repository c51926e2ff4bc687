//! The messenger's connection to its relay, and getting it back.
//!
//! A messenger is [`Link::Up`] (connected and authenticated, a task
//! reading its pushes) or [`Link::Down`] (waiting for its next attempt).
//! A request that finds the connection closed takes the link down;
//! [`Messenger::next_event`] connects again when the attempt is due, with
//! exponential backoff and jitter so that a restarted relay is not met by
//! every device at once, and [`Messenger::send`] tries once when it is due.
//! Coming back up, the messenger owes the relay its acknowledgments, its
//! prekeys and its outbox ([`Owed`]), which `next_event` settles before it
//! waits for pushes. Nothing of this is lost if a call is cut short: the
//! store holds what must be sent, and [`Owed`] is set again by the next
//! connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_core::Rng;
use tokio::sync::mpsc;
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};

use super::{ConnectionState, Event, Messenger};
use crate::{ClientError, Deliveries, RelayConnection};

type Result<T, E = ClientError> = core::result::Result<T, E>;

/// Pushes buffered between the delivery stream and `next_event`.
const PUSH_BUFFER: usize = 16;
/// A connection that ends sooner than this after it was made does not
/// reset the backoff: a relay that accepts devices and drops them is not
/// hammered by immediate retries.
const STABLE_AFTER: Duration = Duration::from_secs(10);

pub(super) type Push = Result<Option<wire::Push>>;

/// Aborts the task reading the delivery stream when dropped.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads pushes on a task of its own, so that waiting for them can be
/// interrupted (by the auto-lock timer, a cancelled call) without losing
/// half-read frames.
fn spawn_reader(mut deliveries: Deliveries) -> (mpsc::Receiver<Push>, Reader) {
    let (tx, rx) = mpsc::channel(PUSH_BUFFER);
    let task = tokio::spawn(async move {
        loop {
            let push = deliveries.next().await;
            let end = !matches!(push, Ok(Some(_)));
            if tx.send(push).await.is_err() || end {
                break;
            }
        }
    });
    (rx, Reader(task))
}

/// A live, authenticated connection.
pub(super) struct Connected {
    pub(super) connection: RelayConnection,
    pub(super) pushes: mpsc::Receiver<Push>,
    /// Pushes taken off `pushes` while locked, looking for a wipe.
    pub(super) held: VecDeque<Push>,
    since: Instant,
    /// The failed attempts before this connection was made.
    failures_before: u32,
    _reader: Reader,
}

pub(super) enum Link {
    Up(Box<Connected>),
    Down {
        /// Failed attempts since the link was last stable.
        failures: u32,
        /// When the next attempt is due.
        retry_at: Instant,
    },
}

impl Link {
    /// Up on `connection`, made after `failures_before` failed attempts,
    /// its pushes read by a task of their own.
    pub(super) fn up(
        connection: RelayConnection,
        deliveries: Deliveries,
        failures_before: u32,
    ) -> Self {
        let (pushes, reader) = spawn_reader(deliveries);
        Self::Up(Box::new(Connected {
            connection,
            pushes,
            held: VecDeque::new(),
            since: Instant::now(),
            failures_before,
            _reader: reader,
        }))
    }

    /// Down, with an attempt due now.
    pub(super) fn down_now() -> Self {
        Self::Down {
            failures: 0,
            retry_at: Instant::now(),
        }
    }

    pub(super) fn state(&self) -> ConnectionState {
        match self {
            Self::Up(_) => ConnectionState::Connected,
            Self::Down { retry_at, .. } => ConnectionState::Disconnected {
                retry_in: retry_at.saturating_duration_since(Instant::now()),
            },
        }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self, Self::Up(_))
    }

    /// Whether a connection attempt is due (always false while up).
    pub(super) fn attempt_due(&self) -> bool {
        matches!(self, Self::Down { retry_at, .. } if *retry_at <= Instant::now())
    }
}

/// Work the messenger owes the relay after (re)connecting, or after a call
/// was cut short; settled by `next_event` before it waits.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Owed {
    /// Acknowledge the stored messages the relay was not told of.
    pub(super) acks: bool,
    /// Rotate or upload prekeys: (the signed set is missing, one-time
    /// prekeys run low), as the relay said when authenticating.
    pub(super) prekeys: Option<(bool, bool)>,
    /// Resend the outbox's pending messages.
    pub(super) outbox: bool,
    /// Look for role holds that ended and thread messages that arrived
    /// after this user handed a role off (spec/15, "Handoff").
    pub(super) handoffs: bool,
}

/// The backoff before attempt `failures + 1`: doubling from `min` up to
/// `max`, of which a random half is waited ("equal jitter"), so that
/// devices that lost the relay together come back spread out.
pub(super) fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let ceiling = min
        .checked_mul(1u32 << failures.min(20))
        .unwrap_or(max)
        .min(max);
    let half = ceiling / 2;
    let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    let jitter = if span == 0 {
        0
    } else {
        ward_core::os_rng().next_u64() % (span + 1)
    };
    half + Duration::from_micros(jitter)
}

/// Whether the relay refused the message itself (an unknown recipient, a
/// malformed or oversized message), so that sending it again cannot
/// succeed; other failures (the connection, a rate limit, a full queue, a
/// device list that kept changing) may pass, and the message stays in the
/// outbox.
pub(super) fn is_final(error: &ClientError) -> bool {
    use wire::ErrorCode as E;
    matches!(
        error,
        ClientError::Refused {
            code: E::NotFound
                | E::InvalidArgument
                | E::MessageTooLarge
                | E::MalformedFrame
                | E::FrameTooLarge
                | E::UnknownRequest,
            ..
        }
    )
}

/// Whether `error` says only that the relay could not be reached or the
/// connection broke: what reconnecting mends.
pub(super) fn is_connection_failure(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect(_)
            | ClientError::Connection(_)
            | ClientError::Stream(_)
            | ClientError::Offline
    )
}

impl Messenger {
    /// The connection's state.
    pub fn connection_state(&self) -> ConnectionState {
        self.link.state()
    }

    /// The bytes this device has sent to the relay over the current
    /// connection, as UDP payload (QUIC headers, retransmissions and
    /// acknowledgments included): for an app's diagnostics and for
    /// measuring what a send costs. `None` while disconnected.
    pub fn bytes_sent(&self) -> Option<u64> {
        match &self.link {
            Link::Up(up) => Some(up.connection.quic().stats().udp_tx.bytes),
            Link::Down { .. } => None,
        }
    }

    /// Tells the messenger that the device's network changed (Wi-Fi to
    /// cellular, back from airplane mode), as the platform reports it:
    /// the next connection attempt is due at once, with the backoff reset.
    pub fn network_changed(&mut self) {
        if let Link::Down { failures, retry_at } = &mut self.link {
            *failures = 0;
            *retry_at = Instant::now();
        }
    }

    /// Connects and authenticates if the link is down and an attempt is
    /// due; [`ClientError::Offline`] if it is down and not due. A failed
    /// attempt schedules the next one.
    pub(super) async fn ensure_link(&mut self) -> Result<()> {
        match &self.link {
            Link::Up(_) => Ok(()),
            _ if self.link.attempt_due() => self.connect().await,
            Link::Down { .. } => Err(ClientError::Offline),
        }
    }

    /// One connection attempt, bounded by
    /// [`MessengerOptions::connect_timeout`](super::MessengerOptions::connect_timeout).
    /// On success the link is up and the work of [`Owed`] is due; a
    /// connection that cannot be made schedules the next attempt.
    pub(super) async fn connect(&mut self) -> Result<()> {
        let identity = self.identity.as_ref().ok_or(ClientError::Locked)?;
        let (addr, fingerprint) = (self.relay_addr, self.relay_fingerprint);
        let server_name = self.options.server_name.as_str();
        let attempt = async {
            let connection = RelayConnection::connect(addr, server_name, fingerprint).await?;
            let auth = connection.authenticate(identity).await?;
            let deliveries = connection.deliveries().await?;
            Ok::<_, ClientError>((connection, auth, deliveries))
        };
        let outcome = tokio::time::timeout(self.options.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Connect(
                    "the relay did not answer in time".to_owned(),
                ))
            });
        match outcome {
            Ok((connection, auth, deliveries)) => {
                let was_reported_down = self.reported_down;
                let failures = match self.link {
                    Link::Down { failures, .. } => failures,
                    Link::Up(_) => 0,
                };
                self.link = Link::up(connection, deliveries, failures);
                self.owed = Owed {
                    acks: true,
                    prekeys: Some((auth.signed_prekeys_missing, auth.prekeys_low)),
                    outbox: true,
                    // Keep one that was owed before the connection broke.
                    handoffs: self.owed.handoffs,
                };
                if was_reported_down {
                    self.reported_down = false;
                    self.transient
                        .push_back(Event::Connection(ConnectionState::Connected));
                }
                tracing::debug!("connected to the relay");
                Ok(())
            }
            Err(e) => {
                self.attempt_failed();
                Err(e)
            }
        }
    }

    /// Schedules the next attempt after a failed one.
    fn attempt_failed(&mut self) {
        let failures = match self.link {
            Link::Down { failures, .. } => failures,
            Link::Up(_) => 0,
        };
        let wait = backoff(
            self.options.reconnect_min,
            self.options.reconnect_max,
            failures,
        );
        self.link = Link::Down {
            failures: failures.saturating_add(1),
            retry_at: Instant::now() + wait,
        };
        self.report_down();
    }

    /// The connection broke: the link goes down, with an attempt due at
    /// once, unless the connection was young and made only after failed
    /// attempts (then after the backoff those call for). Pushes read but
    /// not handled are dropped with it: the relay delivers them again,
    /// since they were not acknowledged.
    pub(super) fn link_lost(&mut self) {
        let Link::Up(up) = &self.link else {
            return;
        };
        let link = match (up.since.elapsed() >= STABLE_AFTER, up.failures_before) {
            (true, _) | (false, 0) => Link::Down {
                failures: u32::from(up.since.elapsed() < STABLE_AFTER),
                retry_at: Instant::now(),
            },
            (false, failures) => Link::Down {
                failures: failures.saturating_add(1),
                retry_at: Instant::now()
                    + backoff(
                        self.options.reconnect_min,
                        self.options.reconnect_max,
                        failures,
                    ),
            },
        };
        tracing::debug!("lost the connection to the relay");
        self.link = link;
        self.report_down();
    }

    /// Queues one `Disconnected` event per outage.
    pub(super) fn report_down(&mut self) {
        if !self.reported_down {
            self.reported_down = true;
            self.transient
                .push_back(Event::Connection(self.link.state()));
        }
    }

    /// One request; `RATE_LIMITED` refusals are waited out (`retry_after_ms`,
    /// spec/08 RLY-32) up to [`MessengerOptions::max_rate_limit_wait`](super::MessengerOptions::max_rate_limit_wait)
    /// in all. A request that finds the connection closed takes the link
    /// down; while it is down, requests fail with [`ClientError::Offline`].
    pub(super) async fn request(&mut self, body: Req) -> Result<Resp> {
        let mut waited = Duration::ZERO;
        loop {
            let Link::Up(up) = &self.link else {
                return Err(ClientError::Offline);
            };
            let timeout = self.options.request_timeout;
            let result =
                match tokio::time::timeout(timeout, up.connection.request(body.clone())).await {
                    Ok(result) => result,
                    Err(_) => {
                        // A relay that does not answer a request (every one is
                        // a quick exchange) is presumed gone: the connection
                        // is given up rather than waited on until its idle
                        // timeout.
                        up.connection
                            .quic()
                            .close(0u32.into(), b"request timed out");
                        Err(ClientError::Stream(
                            "the relay did not answer in time".to_owned(),
                        ))
                    }
                };
            if let Err(e) = &result
                && is_connection_failure(e)
                && up.connection.quic().close_reason().is_none()
            {
                // A stream that broke on a live connection: the connection
                // is given up too, so that a connection failure always
                // means a link that is down (and retried with backoff),
                // never a loop on the same broken state.
                up.connection
                    .quic()
                    .close(0u32.into(), b"request stream failed");
            }
            if result.is_err() && up.connection.quic().close_reason().is_some() {
                self.link_lost();
            }
            match result {
                Err(ClientError::Refused {
                    code: wire::ErrorCode::RateLimited,
                    message,
                    current_devices,
                    retry_after_ms,
                }) => {
                    let wait = Duration::from_millis(retry_after_ms.max(1));
                    if waited + wait > self.options.max_rate_limit_wait {
                        return Err(ClientError::Refused {
                            code: wire::ErrorCode::RateLimited,
                            message,
                            current_devices,
                            retry_after_ms,
                        });
                    }
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_waits_at_least_half() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(30));
        for failures in 0..40 {
            let ceiling = (min * 2u32.saturating_pow(failures.min(20))).min(max);
            for _ in 0..20 {
                let wait = backoff(min, max, failures);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{failures}: {wait:?}"
                );
            }
        }
        assert_eq!(backoff(Duration::ZERO, max, 3), Duration::ZERO);
    }

    #[test]
    fn backoff_is_spread_out() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(min, max, 4)).collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }
}
