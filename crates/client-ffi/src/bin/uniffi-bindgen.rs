//! The UniFFI bindings generator, at the uniffi version this crate builds
//! with (run with `--features cli`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
