//! Keeping the relay supplied with this device's prekeys (spec/02,
//! "Rotation and deletion"; spec/08, "Prekeys").

use std::time::Instant;

use ward_core::{OneTimePreKeyPair, SignedPreKeyPair};
use ward_proto::relay_v1::{self as wire, request::Body as Req, response::Body as Resp};

use super::{Messenger, now};
use crate::ClientError;
use crate::store::StoreError;

type Result<T, E = ClientError> = core::result::Result<T, E>;

impl Messenger {
    /// Rotates the signed prekey set when due, deletes superseded sets past
    /// their grace period, and tops up one-time prekeys when `low` — every
    /// new secret stored before it is uploaded (STO-23).
    pub(super) async fn maintain_prekeys(&mut self, upload_signed: bool, low: bool) -> Result<()> {
        self.last_maintenance = Instant::now();
        let now_secs = now().as_secs();
        let rotation = self.options.signed_prekey_rotation.as_secs();
        let grace = self.options.signed_prekey_grace.as_secs();
        let held = self.store.get_mut()?.signed_prekeys()?;
        let mut upload_signed = upload_signed;
        let current = match held.first() {
            Some(newest) if newest.created_at.saturating_add(rotation) > now_secs => newest.id,
            newest => {
                let id = newest.map_or(1, |n| n.id.wrapping_add(1).max(1));
                let pair = SignedPreKeyPair::generate(
                    &mut ward_core::os_rng(),
                    self.identity_pair()?,
                    id,
                    now_secs,
                );
                self.store.get_mut()?.save_signed_prekey(&pair)?;
                upload_signed = true;
                id
            }
        };
        // A set is superseded when its successor was made; keep it `grace`
        // longer for pre-key messages still in flight (spec/02).
        let superseded_since: Vec<(u32, u64)> = held
            .windows(2)
            .map(|w| (w[1].id, w[0].created_at))
            .chain(
                held.first()
                    .filter(|n| n.id != current)
                    .map(|n| (n.id, now_secs)),
            )
            .collect();
        for (id, since) in superseded_since {
            if since.saturating_add(grace) <= now_secs {
                self.store.get_mut()?.delete_signed_prekey(id)?;
            }
        }
        let signed_prekeys = if upload_signed {
            self.store
                .get()?
                .signed_prekey(current, self.identity_pair()?)?
                .ok_or(ClientError::Store(StoreError::Corrupt {
                    table: "signed_prekeys",
                    detail: "current set missing",
                }))?
                .public()
                .encode()
        } else {
            Vec::new()
        };
        let mut one_time_prekeys = Vec::new();
        if low {
            let first = self.store.get_mut()?.next_one_time_id()?.unwrap_or(1);
            let count = self.options.one_time_batch;
            let batch = OneTimePreKeyPair::generate_batch(&mut ward_core::os_rng(), first, count);
            self.store
                .get_mut()?
                .add_one_time_prekeys(&batch, first.wrapping_add(count))?;
            one_time_prekeys = batch
                .iter()
                .map(|k| wire::OneTimePreKey {
                    id: k.id(),
                    key: k.public().encode(),
                })
                .collect();
        }
        if signed_prekeys.is_empty() && one_time_prekeys.is_empty() {
            return Ok(());
        }
        let upload = wire::UploadPreKeys {
            signed_prekeys,
            one_time_prekeys,
        };
        match self.request(Req::UploadPrekeys(upload)).await? {
            Resp::PrekeysStored(_) => Ok(()),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }
}
