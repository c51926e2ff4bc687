//! The main job: a relay on 127.0.0.1 with its embedded SQLite store, and a
//! conversation between two clinicians with two devices each through it,
//! then their care team, then an on-call role handed over at a shift
//! change (spec/15). At the end the relay's audit log is exported and
//! verified.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ward_audit::UserId;
use ward_client::{
    Event, IncomingMessage, Message, Messenger, MessengerOptions, Priority, ReceiptKind, StorageKey,
};
use ward_core::{AdminKey, Assignment, RoleSchedule};
use ward_relay::config::RelayConfig;
use ward_relay::metrics::Metrics;
use ward_relay::storage::{Role, RoleScheduleRecord, SqliteStorage, Storage};

/// The on-call role of the demo's last part.
const ON_CALL: &str = "cardiology-oncall";
const HOUR: u64 = 3600;

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
    for user in ["dr.okafor", "rn.lindqvist", "dr.haddad"] {
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
    // Hospital IT's administrator key signs the on-call rotas; it is kept
    // off the relay, and the apps pin its public key, so the relay cannot
    // redirect a role (`ward-relay admin role keygen`).
    let admin = AdminKey::generate(&mut ward_core::os_rng());
    let options = || MessengerOptions {
        auto_lock_after: None,
        role_admin_keys: vec![admin.public_key()],
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

    let (mut haddad_phone, ..) = device("dr.haddad", "haddad-phone").await?;
    println!("Haddad's phone enrolled: Dr Haddad is on call tonight");
    shift_change(
        &storage,
        &admin,
        &mut lindqvist_phone,
        &mut okafor_phone,
        &mut haddad_phone,
    )
    .await?;

    let safety = okafor_phone.safety_number("rn.lindqvist")?;
    println!(
        "safety number Dr Okafor's phone shows for Lindqvist:\n  {}",
        safety.grouped()
    );

    for device in [
        okafor_phone,
        okafor_desk,
        lindqvist_phone,
        lindqvist_tablet,
        haddad_phone,
    ] {
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

/// On call: Dr Okafor holds the role on the day shift, Dr Haddad at night.
/// Lindqvist writes to the role and Okafor answers in her thread; the rota
/// changes and ends Okafor's shift; Okafor's phone hands the thread to
/// Haddad's, end to end, and the role reaches Haddad from then on.
async fn shift_change(
    storage: &SqliteStorage,
    admin: &AdminKey,
    lindqvist: &mut Messenger,
    okafor: &mut Messenger,
    haddad: &mut Messenger,
) -> Result<(), Error> {
    let now = now_ms() / 1000;
    publish_rota(
        storage,
        admin,
        1,
        &[
            ("dr.okafor", now - 8 * HOUR, now + 4 * HOUR),
            ("dr.haddad", now + 4 * HOUR, now + 16 * HOUR),
        ],
    )?;
    println!("hospital IT signed the {ON_CALL} rota (version 1) and published it");
    let sent = lindqvist
        .send_to_role(
            ON_CALL,
            Message::urgent("Bed 4: chest pain, troponin pending"),
        )
        .await?;
    println!(
        "{:<20} -> {ON_CALL}: held by {} now",
        "Lindqvist's phone",
        sent.holders.join(", ")
    );
    next_message(okafor, "Okafor's phone").await?;
    okafor
        .reply_in_role_thread(ON_CALL, "rn.lindqvist", Message::text("Coming. ECG please"))
        .await?;
    next_message(lindqvist, "Lindqvist's phone").await?;

    // The shift changes: a new version of the rota, signed again.
    let change = now - 60;
    publish_rota(
        storage,
        admin,
        2,
        &[
            ("dr.okafor", now - 8 * HOUR, change),
            ("dr.haddad", change, now + 12 * HOUR),
        ],
    )?;
    println!("the rota changed (version 2): Okafor's shift ended a minute ago, Haddad's began");
    // Okafor's phone would do this by itself within minutes.
    for handoff in okafor.hand_off_roles().await? {
        println!(
            "{:<20}    handed {} to {}: {} thread messages",
            "Okafor's phone",
            handoff.role_id,
            handoff.to_users.join(", "),
            handoff.messages
        );
    }
    // Haddad's device checks the handoff against the signed rota.
    loop {
        if let Event::RoleHandoff {
            role_id,
            from_user,
            messages,
            ..
        } = next_event(haddad).await?
        {
            println!(
                "{:<20} <- {role_id}, handed over by {from_user}:",
                "Haddad's phone"
            );
            for m in messages {
                let flag = match m.message.priority {
                    Priority::Urgent => "URGENT ",
                    Priority::Routine => "",
                };
                println!("{:<20}      {}: {flag}{}", "", m.from_user, m.message.text);
            }
            break;
        }
    }
    let sent = lindqvist
        .send_to_role(ON_CALL, Message::text("Bed 4: troponin 0.9"))
        .await?;
    println!(
        "{:<20} -> {ON_CALL}: held by {} now",
        "Lindqvist's phone",
        sent.holders.join(", ")
    );
    next_message(haddad, "Haddad's phone").await?;
    haddad
        .reply_in_role_thread(
            ON_CALL,
            "rn.lindqvist",
            Message::text("Seen the ECG. On my way"),
        )
        .await?;
    loop {
        if next_message(lindqvist, "Lindqvist's phone")
            .await?
            .sender_user
            == "dr.haddad"
        {
            return Ok(());
        }
    }
}

/// Signs version `version` of the on-call rota, with `shifts` (user, from,
/// to, in seconds), and publishes it: what `ward-relay admin role sign` and
/// `role publish` do.
fn publish_rota(
    storage: &SqliteStorage,
    admin: &AdminKey,
    version: u64,
    shifts: &[(&str, u64, u64)],
) -> Result<(), Error> {
    let schedule = RoleSchedule {
        role_id: ON_CALL.to_owned(),
        display_name: "On-call cardiology".to_owned(),
        department: "Cardiology".to_owned(),
        version,
        issued_at: now_ms() / 1000,
        assignments: shifts
            .iter()
            .map(|&(user, from, to)| Assignment {
                user_id: user.to_owned(),
                starts_at: from,
                ends_at: to,
            })
            .collect(),
    };
    let signed = admin.sign(&schedule)?;
    storage.publish_role_schedule(
        &RoleScheduleRecord {
            role_id: ON_CALL.to_owned(),
            version,
            signed,
            published_at: now_ms(),
        },
        None,
        now_ms(),
    )?;
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
                let team = match (m.message.group_id, &m.message.role) {
                    (Some(id), _) => match device.group(&id)? {
                        Some(group) => format!("[{}] ", group.name),
                        None => "[a group] ".to_owned(),
                    },
                    (None, Some(thread)) => {
                        format!("[{}, thread of {}] ", thread.role_id, thread.party)
                    }
                    (None, None) => String::new(),
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
