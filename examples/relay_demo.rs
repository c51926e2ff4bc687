//! The main job: a relay on 127.0.0.1 with its embedded SQLite store, and a
//! conversation between two clinicians with two devices each through it.
//! At the end the relay's audit log is exported and verified.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ward_audit::UserId;
use ward_client::Messenger;
use ward_relay::config::RelayConfig;
use ward_relay::metrics::Metrics;
use ward_relay::storage::{Role, Storage};

type Error = Box<dyn std::error::Error>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let data_dir = std::env::temp_dir().join(format!("ward-demo-{}", std::process::id()));
    let config = RelayConfig {
        data_dir: data_dir.clone(),
        bind: "127.0.0.1:0".parse()?,
        ..RelayConfig::default()
    };
    let ward_relay::server::Launched {
        relay,
        storage,
        fingerprint,
    } = ward_relay::server::launch(&config, Arc::new(Metrics::new()))?;
    let addr = relay.local_addr()?;
    println!("relay on {addr}, data in {}", data_dir.display());
    println!(
        "certificate fingerprint (pinned by clients): {}",
        hex(&fingerprint)
    );

    // Hospital IT creates the users and hands each device a one-time token.
    let enroll = |user: &str| -> Result<String, Error> {
        let (token, hash) = ward_relay::keys::new_enrollment_token();
        storage.issue_enrollment_token(
            &hash,
            &UserId::new(user)?,
            None,
            now_ms(),
            now_ms() + 3_600_000,
        )?;
        Ok(token)
    };
    for user in ["dr.okafor", "rn.lindqvist"] {
        storage.create_user(
            &UserId::new(user)?,
            &Role::new("clinician")?,
            None,
            now_ms(),
        )?;
    }
    let mut okafor_phone = Messenger::enroll(addr, fingerprint, &enroll("dr.okafor")?).await?;
    let mut okafor_desk = Messenger::enroll(addr, fingerprint, &enroll("dr.okafor")?).await?;
    let mut lindqvist_phone =
        Messenger::enroll(addr, fingerprint, &enroll("rn.lindqvist")?).await?;
    let mut lindqvist_tablet =
        Messenger::enroll(addr, fingerprint, &enroll("rn.lindqvist")?).await?;
    println!("four devices enrolled and connected");

    lindqvist_phone
        .send(&["dr.okafor"], b"Bed 4: potassium 6.1, please review")
        .await?;
    for (name, device) in [
        ("Okafor's phone", &mut okafor_phone),
        ("Okafor's desktop", &mut okafor_desk),
        ("Lindqvist's tablet", &mut lindqvist_tablet),
    ] {
        let got = device.receive().await?;
        println!(
            "{name:<20} <- {}: {}",
            got.sender_user,
            String::from_utf8_lossy(&got.plaintext)
        );
    }
    okafor_desk
        .send(&["rn.lindqvist"], b"On my way. Repeat the sample.")
        .await?;
    for (name, device) in [
        ("Lindqvist's phone", &mut lindqvist_phone),
        ("Lindqvist's tablet", &mut lindqvist_tablet),
        ("Okafor's phone", &mut okafor_phone),
    ] {
        let got = device.receive().await?;
        println!(
            "{name:<20} <- {}: {}",
            got.sender_user,
            String::from_utf8_lossy(&got.plaintext)
        );
    }

    let safety = ward_core::SafetyNumber::new(
        ward_core::Party {
            user_id: b"dr.okafor",
            devices: &[
                okafor_phone.identity().clone(),
                okafor_desk.identity().clone(),
            ],
        },
        ward_core::Party {
            user_id: b"rn.lindqvist",
            devices: &[
                lindqvist_phone.identity().clone(),
                lindqvist_tablet.identity().clone(),
            ],
        },
    )?;
    println!(
        "safety number both clinicians compare:\n  {}",
        safety.grouped()
    );

    for device in [okafor_phone, okafor_desk, lindqvist_phone, lindqvist_tablet] {
        device.close().await;
    }
    relay.shutdown().await?;
    let key = ward_relay::keys::load_audit_verifying_key(&data_dir)?;
    let export = storage.export_audit(&key)?.encode();
    let verified = ward_audit::verify_export(&export, Some(key.to_bytes()))?;
    println!(
        "audit log: {} entries, signed root {} (verified)",
        verified.size(),
        hex(&verified.root())
    );
    drop(storage);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
