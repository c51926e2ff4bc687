//! The main job: a relay on 127.0.0.1 with its embedded SQLite store, and a
//! conversation between two clinicians with two devices each through it,
//! then their care team. At the end the relay's audit log is exported and
//! verified.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ward_audit::UserId;
use ward_client::{
    Event, IncomingMessage, Message, Messenger, MessengerOptions, Priority, ReceiptKind, StorageKey,
};
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
    // Each device keeps its keys, sessions and messages in a sealed store;
    // the storage key would come from the platform's key store.
    let stores = data_dir.join("devices");
    std::fs::create_dir_all(&stores)?;
    let options = || MessengerOptions {
        auto_lock_after: None,
        ..MessengerOptions::default()
    };
    let mut key_byte = 0u8;
    let mut device = |user: &str, name: &str| {
        key_byte += 1;
        let key = StorageKey::new([key_byte; 32]);
        let path = stores.join(format!("{name}.ward"));
        let token = enroll(user);
        async move {
            let token = token?;
            let messenger =
                Messenger::enroll(&path, &key, addr, fingerprint, &token, options()).await?;
            Ok::<_, Error>((messenger, path, key))
        }
    };
    let (mut okafor_phone, ..) = device("dr.okafor", "okafor-phone").await?;
    let (mut okafor_desk, ..) = device("dr.okafor", "okafor-desktop").await?;
    let (mut lindqvist_phone, ..) = device("rn.lindqvist", "lindqvist-phone").await?;
    let (lindqvist_tablet, tablet_path, tablet_key) =
        device("rn.lindqvist", "lindqvist-tablet").await?;
    println!("four devices enrolled, each with its sealed store");
    // The tablet goes offline; it will catch up when reopened.
    lindqvist_tablet.close().await;

    let urgent = lindqvist_phone
        .send(
            &["dr.okafor"],
            Message::urgent("Bed 4: potassium 6.1, please review"),
        )
        .await?;
    let got = next_message(&mut okafor_phone, "Okafor's phone").await?;
    next_message(&mut okafor_desk, "Okafor's desktop").await?;
    okafor_desk
        .send(
            &["rn.lindqvist"],
            Message::text("On my way. Repeat the sample."),
        )
        .await?;
    next_message(&mut lindqvist_phone, "Lindqvist's phone").await?;
    next_message(&mut okafor_phone, "Okafor's phone").await?;
    // Okafor read the urgent message on the phone: a read receipt.
    okafor_phone
        .send_receipt(&got.sender_user, ReceiptKind::Read, &[urgent])
        .await?;
    let mut read = false;
    while !read {
        if let Event::Receipt {
            from_user, kind, ..
        } = next_event(&mut lindqvist_phone).await?
        {
            println!(
                "{:<20} <- {from_user}: {kind:?} receipt",
                "Lindqvist's phone"
            );
            read = kind == ReceiptKind::Read;
        }
    }

    let mut lindqvist_tablet = Messenger::open(&tablet_path, &tablet_key, options()).await?;
    println!("Lindqvist's tablet reopened its store and reconnected");
    for _ in 0..2 {
        next_message(&mut lindqvist_tablet, "Lindqvist's tablet").await?;
    }

    // A care team: one message, encrypted once under Lindqvist's sender
    // key and stored once by the relay, read by every member device.
    let team = lindqvist_phone
        .create_group("4 West", &["dr.okafor"])
        .await?;
    println!("Lindqvist's phone created the care team \"4 West\"");
    lindqvist_phone
        .send_to_group(
            &team,
            Message::urgent("Bed 9: fall, no injury, please assess"),
        )
        .await?;
    next_message(&mut okafor_phone, "Okafor's phone").await?;
    next_message(&mut okafor_desk, "Okafor's desktop").await?;
    next_message(&mut lindqvist_tablet, "Lindqvist's tablet").await?;

    let safety = okafor_phone.safety_number("rn.lindqvist")?;
    println!(
        "safety number Dr Okafor's phone shows for Lindqvist:\n  {}",
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

/// The next event, within ten seconds.
async fn next_event(device: &mut Messenger) -> Result<Event, Error> {
    Ok(tokio::time::timeout(std::time::Duration::from_secs(10), device.next_event()).await??)
}

/// Waits for the next message (printing receipts on the way) and prints it.
async fn next_message(device: &mut Messenger, name: &str) -> Result<IncomingMessage, Error> {
    loop {
        match next_event(device).await? {
            Event::Message(m) => {
                let flag = match m.message.priority {
                    Priority::Urgent => "URGENT ",
                    Priority::Routine => "",
                };
                let own = if m.from_own_device {
                    " (sent from another of my devices)"
                } else {
                    ""
                };
                let team = match m.message.group_id {
                    Some(id) => match device.group(&id)? {
                        Some(group) => format!("[{}] ", group.name),
                        None => "[a group] ".to_owned(),
                    },
                    None => String::new(),
                };
                println!(
                    "{name:<20} <- {team}{}: {flag}{}{own}",
                    m.sender_user, m.message.text
                );
                return Ok(m);
            }
            Event::Receipt {
                from_user, kind, ..
            } => println!("{name:<20} <- {from_user}: {kind:?} receipt"),
            Event::NewDevice { user, .. } => println!("{name:<20}    new device of {user}"),
            Event::GroupChanged { by_user, .. } => {
                println!("{name:<20}    a care team changed (by {by_user})")
            }
            _ => {}
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
