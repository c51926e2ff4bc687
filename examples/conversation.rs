//! Two devices, in memory, open a session and talk, with messages arriving
//! out of order. Everything the relay would carry is printed as it goes.

use ward_core::{
    IdentityKeyPair, MessageKind, OneTimePreKeyPair, Party, PreKeyBundle, PreKeyMessage,
    SafetyNumber, Session, SignedPreKeyPair,
};

fn main() -> Result<(), ward_core::Error> {
    let mut rng = ward_core::os_rng();
    let now = 1_767_225_600; // the caller's clock: the core reads none

    // Dr. Okafor's phone publishes prekeys; Nurse Lindqvist's phone fetches them.
    let okafor = IdentityKeyPair::generate(&mut rng);
    let okafor_signed = SignedPreKeyPair::generate(&mut rng, &okafor, 1, now);
    let okafor_one_time = OneTimePreKeyPair::generate_batch(&mut rng, 1, 1).remove(0);
    let bundle = PreKeyBundle::new(
        okafor.public().clone(),
        okafor_signed.public().clone(),
        Some(okafor_one_time.public()),
    )?
    .encode();
    println!("relay stores Okafor's bundle: {} bytes", bundle.len());

    let lindqvist = IdentityKeyPair::generate(&mut rng);
    let mut to_okafor = Session::initiate(&mut rng, &lindqvist, &PreKeyBundle::decode(&bundle)?)?;
    let first = to_okafor.encrypt(&mut rng, b"Bed 4: potassium 6.1, please review")?;
    let second = to_okafor.encrypt(&mut rng, b"ECG attached in the next message")?;
    show("Lindqvist -> Okafor", &first);
    show("Lindqvist -> Okafor", &second);

    // The second message overtakes the first; either can open the session.
    let (mut to_lindqvist, text) = Session::accept(
        &okafor,
        &okafor_signed,
        Some(&okafor_one_time),
        &PreKeyMessage::decode(&second)?,
    )?;
    println!("Okafor reads:    {}", String::from_utf8_lossy(&text));
    println!(
        "Okafor reads:    {}",
        String::from_utf8_lossy(&to_lindqvist.decrypt(&first)?)
    );

    let reply = to_lindqvist.encrypt(&mut rng, b"On my way. Repeat the sample.")?;
    show("Okafor -> Lindqvist", &reply);
    println!(
        "Lindqvist reads: {}",
        String::from_utf8_lossy(&to_okafor.decrypt(&reply)?)
    );
    let next = to_okafor.encrypt(&mut rng, b"Repeat sent to the lab")?;
    show("Lindqvist -> Okafor", &next);
    println!(
        "Okafor reads:    {}",
        String::from_utf8_lossy(&to_lindqvist.decrypt(&next)?)
    );

    // A replay is refused, and the session is unchanged.
    match to_lindqvist.decrypt(&next) {
        Err(e) => println!("a replayed message is refused: {e}"),
        Ok(_) => println!("BUG: a replay decrypted"),
    }

    let safety = SafetyNumber::new(
        Party {
            user_id: b"lindqvist",
            devices: &[lindqvist.public().clone()],
        },
        Party {
            user_id: b"okafor",
            devices: &[okafor.public().clone()],
        },
    )?;
    println!("safety number both phones show:\n  {}", safety.grouped());
    Ok(())
}

fn show(direction: &str, wire: &[u8]) {
    let kind = match MessageKind::of(wire) {
        Ok(MessageKind::PreKey) => "pre-key message",
        Ok(MessageKind::Ratchet) => "ratchet message",
        Err(_) => "unreadable",
    };
    println!(
        "{direction}: {kind}, {} bytes of ciphertext on the wire",
        wire.len()
    );
}
