//! Compiles `schemas/*.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = [
        "schemas/ward_core.proto",
        "schemas/ward_relay.proto",
        "schemas/ward_content.proto",
    ];
    for schema in schemas {
        println!("cargo:rerun-if-changed={schema}");
    }
    let descriptors = protox::compile(schemas, ["schemas"])?;

    // Messages that carry secret key material: no derived Debug (it would print
    // the bytes) and zeroize on drop, so decoding state never leaves copies.
    let secret_messages = [
        ".ward.core.v1.ChainState",
        ".ward.core.v1.SkippedKey",
        ".ward.core.v1.PendingPreKey",
        ".ward.core.v1.SessionState",
        ".ward.core.v1.SenderKeyDistribution",
        ".ward.core.v1.SenderSkippedKey",
        ".ward.core.v1.SenderChainState",
        ".ward.core.v1.GroupChains",
        ".ward.core.v1.GroupStateRecord",
    ];
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    for path in secret_messages {
        config.type_attribute(
            path,
            "#[derive(::zeroize::Zeroize, ::zeroize::ZeroizeOnDrop)]",
        );
    }
    // Message content (spec/12): no derived Debug (it would print patient
    // data and attachment keys) and zeroized on drop. `Content` holds only
    // its oneof, whose members clear themselves.
    let content_messages = [
        ".ward.content.v1.Message",
        ".ward.content.v1.Attachment",
        ".ward.content.v1.Receipt",
        ".ward.content.v1.Content.body",
        ".ward.content.v1.GroupControl",
        ".ward.content.v1.GroupKey",
        ".ward.content.v1.Resent",
        ".ward.content.v1.ChainRequest",
        ".ward.content.v1.RoleThread",
        ".ward.content.v1.Handoff",
        ".ward.content.v1.HandedOver",
    ];
    for path in content_messages {
        config.type_attribute(
            path,
            "#[derive(::zeroize::Zeroize, ::zeroize::ZeroizeOnDrop)]",
        );
    }
    // Public messages are cleared too when nested in a secret one.
    for path in [
        ".ward.core.v1.DeviceIdentity",
        ".ward.core.v1.GroupMember",
        ".ward.core.v1.GroupRoster",
        ".ward.core.v1.GroupHistoryEntry",
        ".ward.core.v1.GroupWelcome",
    ] {
        config.type_attribute(path, "#[derive(::zeroize::Zeroize)]");
    }
    // One call: `skip_debug` replaces the paths given before. A path names
    // a message and what nests in it for `type_attribute`, but each oneof
    // needs its own entry here.
    config.skip_debug(secret_messages.iter().chain(&content_messages).chain(&[
        ".ward.content.v1.Content",
        ".ward.content.v1.GroupControl.body",
    ]));
    config.compile_fds(descriptors)?;
    Ok(())
}
