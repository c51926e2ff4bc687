//! The relay's metrics (Prometheus / OpenMetrics text), and a minimal HTTP
//! endpoint serving them at `GET /metrics` on a separate address
//! (spec/08, "Metrics"; off unless `metrics_bind` is configured).
//!
//! Metrics count events; no label holds a user, a device, a message id or
//! anything a client sent: labels are `&'static str` names chosen by the
//! relay (request kinds, outcome codes).
//!
//! Every metric is named `ward_relay_<field>`; counters get OpenMetrics'
//! `_total` suffix (the field `auth_success_total` is exported as
//! `ward_relay_auth_success_total`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The most bytes of an HTTP request head the endpoint reads.
pub const MAX_REQUEST_LEN: usize = 8 * 1024;
/// How long a client has to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most HTTP connections served at once; more are closed unanswered.
pub const MAX_CONCURRENT_SCRAPES: usize = 16;

/// The labels of [`Metrics::requests_total`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request kind, for example `send` or `fetch`.
    pub request: &'static str,
    /// `ok`, or the error code's name (for example `stale_devices`).
    pub outcome: &'static str,
}

/// The relay's metrics. Cheap to update from any thread (atomics); share it
/// as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections open now (authenticated or not).
    pub connections_open: Gauge,
    /// Successful authentications (including enrollments).
    pub auth_success_total: Counter,
    /// Failed authentications and enrollments.
    pub auth_failure_total: Counter,
    /// Devices enrolled with a token.
    pub enrollments_total: Counter,
    /// Requests answered, by kind and outcome.
    pub requests_total: Family<RequestLabels, Counter>,
    /// Frames refused before decoding (too large, malformed).
    pub frames_refused_total: Counter,
    /// Messages stored (one per recipient copy).
    pub messages_stored_total: Counter,
    /// Ciphertext bytes stored (sum over recipient copies).
    pub message_bytes_stored_total: Counter,
    /// Messages pushed on delivery streams.
    pub messages_pushed_total: Counter,
    /// Messages acknowledged (deleted) by their recipient.
    pub messages_acknowledged_total: Counter,
    /// Messages deleted because their time to live passed.
    pub messages_expired_total: Counter,
    /// Sends refused because the sender's device list was stale.
    pub sends_stale_total: Counter,
    /// Storage operations that failed (backend or I/O errors).
    pub storage_errors_total: Counter,
    /// Connections closed because their device was revoked.
    pub connections_closed_revoked_total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `ward_relay` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ward_relay");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "QUIC connections open now",
            connections_open.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let auth_success_total = counter(
            &mut registry,
            "auth_success",
            "Successful device authentications, enrollments included",
        );
        let auth_failure_total = counter(
            &mut registry,
            "auth_failure",
            "Failed device authentications and enrollments",
        );
        let enrollments_total = counter(
            &mut registry,
            "enrollments",
            "Devices enrolled with a token",
        );
        let requests_total = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by request kind and outcome (ok or the error code)",
            requests_total.clone(),
        );
        let frames_refused_total = counter(
            &mut registry,
            "frames_refused",
            "Request frames refused before decoding (too large or malformed)",
        );
        let messages_stored_total = counter(
            &mut registry,
            "messages_stored",
            "Messages stored, one per recipient copy",
        );
        let message_bytes_stored_total = counter(
            &mut registry,
            "message_bytes_stored",
            "Ciphertext bytes stored, summed over recipient copies",
        );
        let messages_pushed_total = counter(
            &mut registry,
            "messages_pushed",
            "Messages pushed on delivery streams",
        );
        let messages_acknowledged_total = counter(
            &mut registry,
            "messages_acknowledged",
            "Messages acknowledged and deleted by their recipient",
        );
        let messages_expired_total = counter(
            &mut registry,
            "messages_expired",
            "Messages deleted because their time to live passed",
        );
        let sends_stale_total = counter(
            &mut registry,
            "sends_stale",
            "Sends refused because the device list was stale",
        );
        let storage_errors_total = counter(
            &mut registry,
            "storage_errors",
            "Storage operations that failed with a backend or I/O error",
        );
        let connections_closed_revoked_total = counter(
            &mut registry,
            "connections_closed_revoked",
            "Connections closed because their device was revoked",
        );
        Self {
            registry,
            connections_open,
            auth_success_total,
            auth_failure_total,
            enrollments_total,
            requests_total,
            frames_refused_total,
            messages_stored_total,
            message_bytes_stored_total,
            messages_pushed_total,
            messages_acknowledged_total,
            messages_expired_total,
            sends_stale_total,
            storage_errors_total,
            connections_closed_revoked_total,
        }
    }

    /// Counts one answered request of kind `request` with `outcome` (`ok`
    /// or the error code's name).
    pub fn request(&self, request: &'static str, outcome: &'static str) {
        self.requests_total
            .get_or_create(&RequestLabels { request, outcome })
            .inc();
    }

    /// The metrics in the OpenMetrics text format (ending with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a metric's encoder could.
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// Binds `addr` (TCP) and serves `GET /metrics` there until the task is
/// aborted. Returns the bound address (useful with port 0) and the task.
///
/// Plain HTTP/1.1, one request per connection (`Connection: close`): the
/// request head is read up to [`MAX_REQUEST_LEN`] bytes within
/// [`REQUEST_TIMEOUT`]; `/metrics` (any query string) answers 200, another
/// path 404, another method 405, an unreadable request 400. At most
/// [`MAX_CONCURRENT_SCRAPES`] connections are served at once. No TLS and no
/// authentication: bind it to loopback or a management network.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    let task = tokio::spawn(async move {
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                // Too many scrapes at once: close this one unanswered.
                continue;
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let served = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &metrics)).await;
                if let Ok(Err(e)) = served {
                    tracing::debug!(error = %e, "metrics endpoint: connection failed");
                }
                drop(slot);
            });
        }
    });
    Ok((local, task))
}

/// Reads one request head and writes one response.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_REQUEST_LEN {
            break false;
        }
    };
    let response = if complete {
        route(&head, metrics)
    } else {
        response(400, "Bad Request", "text/plain", "bad request\n")
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

fn route(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response(400, "Bad Request", "text/plain", "bad request\n");
    };
    if !version.starts_with(b"HTTP/1.") {
        return response(400, "Bad Request", "text/plain", "bad request\n");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return response(404, "Not Found", "text/plain", "not found\n");
    }
    if method != b"GET" {
        return response(
            405,
            "Method Not Allowed",
            "text/plain",
            "method not allowed\n",
        );
    }
    response(200, "OK", CONTENT_TYPE, &metrics.render())
}

fn response(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status == 405 { "Allow: GET\r\n" } else { "" },
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn render_names_every_metric() {
        let metrics = Metrics::new();
        metrics.connections_open.inc();
        metrics.connections_open.inc();
        metrics.connections_open.dec();
        metrics.auth_success_total.inc();
        metrics.message_bytes_stored_total.inc_by(1234);
        metrics.request("send", "ok");
        metrics.request("send", "ok");
        metrics.request("send", "stale_devices");
        let text = metrics.render();
        for line in [
            "ward_relay_connections_open 1",
            "ward_relay_auth_success_total 1",
            "ward_relay_auth_failure_total 0",
            "ward_relay_message_bytes_stored_total 1234",
            "ward_relay_requests_total{request=\"send\",outcome=\"ok\"} 2",
            "ward_relay_requests_total{request=\"send\",outcome=\"stale_devices\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for name in [
            "enrollments",
            "frames_refused",
            "messages_stored",
            "messages_pushed",
            "messages_acknowledged",
            "messages_expired",
            "sends_stale",
            "storage_errors",
            "connections_closed_revoked",
        ] {
            let line = format!("ward_relay_{name}_total 0");
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = String::new();
        // The server closes after its response.
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_nothing_else() {
        let metrics = Arc::new(Metrics::new());
        metrics.enrollments_total.inc();
        let (addr, task) = serve((Ipv4Addr::LOCALHOST, 0).into(), Arc::clone(&metrics))
            .await
            .unwrap();

        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(CONTENT_TYPE), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("ward_relay_enrollments_total 1"), "{body}");

        // Updates show in the next scrape.
        metrics.enrollments_total.inc();
        let again = get(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(again.contains("ward_relay_enrollments_total 2"), "{again}");

        let missing = get(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let other = get(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let post = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let garbage = get(addr, b"hello\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");

        // A request head that never ends is cut off at the bound.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 2 * MAX_REQUEST_LEN));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close before taking all of it.
        let _ = stream.write_all(&huge).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400 "), "{out}");

        task.abort();
    }
}
