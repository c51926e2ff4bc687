//! The SDK in under 40 lines: enroll a device at a relay, send a message,
//! print what arrives until the first answer.
//!
//! sdk-minimal RELAY_ADDR FINGERPRINT_HEX TOKEN STORE_PATH TO_USER TEXT
use ward_client::{Event, Message, Messenger, MessengerOptions, StorageKey};

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, fingerprint, token, store, to, text] = <[String; 6]>::try_from(args).map_err(
        |_| "usage: sdk-minimal RELAY_ADDR FINGERPRINT_HEX TOKEN STORE_PATH TO_USER TEXT",
    )?;
    let fingerprint: [u8; 32] = hex::decode(fingerprint)?
        .try_into()
        .map_err(|_| "the fingerprint is 64 hex digits")?;
    // An app takes the storage key from the iOS Keychain or Android Keystore.
    let key = StorageKey::new([7; 32]);
    let options = MessengerOptions::default();
    let mut device =
        Messenger::enroll(&store, &key, addr.parse()?, fingerprint, &token, options).await?;

    device.send(&[to.as_str()], Message::text(text)).await?;
    loop {
        match device.next_event().await? {
            Event::Receipt {
                from_user, kind, ..
            } => println!("{from_user}: {kind:?}"),
            Event::Message(m) => {
                println!("{}: {}", m.sender_user, m.message.text);
                break;
            }
            _ => {}
        }
    }
    device.close().await;
    Ok(())
}
