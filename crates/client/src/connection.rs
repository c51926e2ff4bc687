//! A device's connection to its relay (spec/08).

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use ward_core::IdentityKeyPair;
use ward_proto::auth::{EXPORTER_LABEL, EXPORTER_LEN, NONCE_LEN};
use ward_proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};

use crate::ClientError;
use crate::tls::{ALPN, pinned_client_config};

/// A QUIC connection to a relay.
#[derive(Debug)]
pub struct RelayConnection {
    endpoint: quinn::Endpoint,
    quic: quinn::Connection,
}

fn stream_error(e: impl core::fmt::Display) -> ClientError {
    ClientError::Stream(e.to_string())
}

impl RelayConnection {
    /// Connects to the relay at `addr`, accepting only the certificate
    /// whose SHA-256 is `fingerprint`. `server_name` is sent as SNI.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        fingerprint: [u8; 32],
    ) -> Result<Self, ClientError> {
        Self::connect_with_alpn(addr, server_name, fingerprint, ALPN).await
    }

    /// [`connect`](Self::connect) offering another ALPN id (for tests of
    /// the relay's refusal).
    pub async fn connect_with_alpn(
        addr: SocketAddr,
        server_name: &str,
        fingerprint: [u8; 32],
        alpn: &[u8],
    ) -> Result<Self, ClientError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut config = pinned_client_config(fingerprint, alpn)?;
        let mut transport = quinn::TransportConfig::default();
        // Below the relay's idle timeout, so that an idle but live device
        // stays connected and keeps receiving pushes.
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
        config.transport_config(std::sync::Arc::new(transport));
        endpoint.set_default_client_config(config);
        let quic = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await?;
        Ok(Self { endpoint, quic })
    }

    /// The underlying QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.quic
    }

    /// Sends one request and waits for its response. A refusal is
    /// [`ClientError::Refused`].
    pub async fn request(&self, body: Req) -> Result<Resp, ClientError> {
        let frame = frame::encode(&wire::Request { body: Some(body) });
        let response = self.request_raw(&frame).await?;
        let response: wire::Response =
            frame::decode(&response, MAX_FRAME_LEN).map_err(ClientError::Frame)?;
        match response.body {
            Some(Resp::Error(e)) => Err(ClientError::Refused {
                code: e.code(),
                message: e.message,
                current_devices: e.current_devices,
                retry_after_ms: e.retry_after_ms,
            }),
            Some(body) => Ok(body),
            None => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Writes `bytes` on a new request stream as they are, and returns the
    /// relay's whole answer (a frame, unparsed).
    pub async fn request_raw(&self, bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
        let (mut send, mut recv) = self.quic.open_bi().await?;
        send.write_all(bytes).await.map_err(stream_error)?;
        // The relay may refuse before reading everything; it answers anyway.
        let _ = send.finish();
        let limit = HEADER_LEN + MAX_FRAME_LEN as usize;
        recv.read_to_end(limit).await.map_err(stream_error)
    }

    fn exporter(&self) -> Result<[u8; EXPORTER_LEN], ClientError> {
        let mut out = [0u8; EXPORTER_LEN];
        self.quic
            .export_keying_material(&mut out, EXPORTER_LABEL, b"")
            .map_err(|_| ClientError::Connect("no TLS keying material".to_owned()))?;
        Ok(out)
    }

    async fn challenge(&self) -> Result<[u8; NONCE_LEN], ClientError> {
        match self
            .request(Req::Challenge(wire::ChallengeRequest {}))
            .await?
        {
            Resp::Challenge(c) => <[u8; NONCE_LEN]>::try_from(&c.nonce[..])
                .map_err(|_| ClientError::UnexpectedResponse),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Authenticates as an enrolled device.
    pub async fn authenticate(
        &self,
        identity: &IdentityKeyPair,
    ) -> Result<wire::Authenticated, ClientError> {
        let nonce = self.challenge().await?;
        let key = *identity.public().signing_key();
        let transcript =
            ward_proto::auth::authentication_transcript(&self.exporter()?, &nonce, &key);
        let body = Req::Authenticate(wire::Authenticate {
            device_key: key.to_vec(),
            signature: identity.sign(&transcript).to_vec(),
        });
        match self.request(body).await? {
            Resp::Authenticated(a) => Ok(a),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Enrolls this device with an enrollment token, and authenticates.
    pub async fn enroll(
        &self,
        token: &str,
        identity: &IdentityKeyPair,
    ) -> Result<wire::Authenticated, ClientError> {
        let nonce = self.challenge().await?;
        let public = identity.public().to_bytes();
        let transcript =
            ward_proto::auth::enrollment_transcript(&self.exporter()?, &nonce, token, &public);
        let body = Req::Enroll(wire::Enroll {
            token: token.to_owned(),
            identity: public.to_vec(),
            signature: identity.sign(&transcript).to_vec(),
        });
        match self.request(body).await? {
            Resp::Authenticated(a) => Ok(a),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// The delivery stream the relay opens after authentication. A QUIC
    /// stream becomes visible to its peer with its first bytes, so the
    /// stream is accepted on the first [`Deliveries::next`].
    pub async fn deliveries(&self) -> Result<Deliveries, ClientError> {
        Ok(Deliveries {
            quic: self.quic.clone(),
            recv: None,
        })
    }

    /// Closes the connection and waits (up to a second) for the relay to
    /// learn of it.
    pub async fn close(self) {
        self.quic.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// The relay's delivery stream: [`wire::Push`] frames in queue order.
#[derive(Debug)]
pub struct Deliveries {
    quic: quinn::Connection,
    recv: Option<quinn::RecvStream>,
}

impl Deliveries {
    /// The next push, or `None` when the relay ended the stream.
    pub async fn next(&mut self) -> Result<Option<wire::Push>, ClientError> {
        let recv = match &mut self.recv {
            Some(recv) => recv,
            None => self.recv.insert(self.quic.accept_uni().await?),
        };
        let mut header = [0u8; HEADER_LEN];
        match recv.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => return Err(stream_error(e)),
        }
        let len = frame::body_len(header, MAX_FRAME_LEN).map_err(ClientError::Frame)?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body)
            .await
            .map_err(|_| ClientError::Frame(FrameError::Truncated))?;
        wire::Push::decode(&body[..])
            .map(Some)
            .map_err(|_| ClientError::Frame(FrameError::Malformed))
    }
}
