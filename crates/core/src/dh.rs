//! X25519 (RFC 7748), computed through the Edwards form of Curve25519.
//!
//! x25519-dalek computes X25519 with curve25519-dalek's Montgomery ladder,
//! which has only a serial implementation. curve25519-dalek's variable-base
//! multiplication on the birationally equivalent Edwards curve has vector
//! backends (AVX2, and AVX-512 IFMA where built for it), chosen at run time
//! from the CPU's features. So for a peer's key `u` on the curve, Ward maps
//! `u` to an Edwards point, multiplies it there by the clamped scalar and
//! maps the product back:
//!
//! ```text
//! X25519(k, u) = to_montgomery(clamp(k) * to_edwards(u, sign = 0))
//! ```
//!
//! The two Edwards points over one `u` are negatives of each other, and so
//! are their multiples, which share their Montgomery `u`: the sign chosen
//! does not change the result. A `u` on the quadratic twist (including
//! `u = -1`) has no Edwards point; for those the ladder computes the result,
//! so that the function returns exactly X25519 for every 32-byte input
//! (bit 255 ignored, non-canonical values reduced, as RFC 7748 says). The
//! branch depends only on the public `u`; both paths are constant time in
//! the scalar.
//!
//! Key generation needs no change: x25519-dalek already multiplies the base
//! point in the Edwards form, from curve25519-dalek's precomputed table.

use curve25519_dalek::MontgomeryPoint;
use subtle::ConstantTimeEq;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

/// `X25519(k, u)` for any 32-byte scalar and u-coordinate.
pub(crate) fn x25519(scalar: &[u8; 32], u: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let point = MontgomeryPoint(*u);
    match point.to_edwards(0) {
        Some(edwards) => {
            // `mul_clamped` takes the scalar by value, as x25519-dalek's
            // own calls do; the product and the result are wiped here.
            let mut product = edwards.mul_clamped(*scalar);
            let mut shared = product.to_montgomery();
            product.zeroize();
            let out = Zeroizing::new(shared.to_bytes());
            shared.zeroize();
            out
        }
        None => {
            // On the twist: the Montgomery ladder, as x25519-dalek does it.
            let mut shared = point.mul_clamped(*scalar);
            let out = Zeroizing::new(shared.to_bytes());
            shared.zeroize();
            out
        }
    }
}

/// X25519 with a stored secret, refusing an all-zero (non-contributory)
/// result, compared in constant time.
pub(crate) fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let shared = x25519(secret.as_bytes(), public);
    if bool::from(shared.ct_eq(&[0u8; 32])) {
        return None;
    }
    Some(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// X25519 by x25519-dalek's Montgomery ladder alone: the reference.
    fn ladder(scalar: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::x25519(*scalar, *u)
    }

    /// 2^255 - 19, little-endian.
    const P: [u8; 32] = {
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    };

    /// `p + delta` as 32 little-endian bytes (for small `delta`, wrapping
    /// into bit 255 when it overflows 2^255).
    fn p_plus(delta: i64) -> [u8; 32] {
        let mut out = P;
        let mut carry = delta as i128;
        for byte in out.iter_mut() {
            let sum = i128::from(*byte) + carry;
            *byte = sum.rem_euclid(256) as u8;
            carry = sum.div_euclid(256);
        }
        out
    }

    fn small(value: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// Edge u-coordinates: 0, 1, small values, p - 1 (= -1, on the twist),
    /// p and beyond (non-canonical), the top values of 255 bits, every one
    /// also with bit 255 set, and the small-order points of the curve.
    fn edge_points() -> Vec<[u8; 32]> {
        let mut points = vec![
            small(0),
            small(1),
            small(2),
            small(9),
            small(486_662),
            p_plus(-1),
            p_plus(-2),
            p_plus(0),
            p_plus(1),
            p_plus(9),
            p_plus(18),
            [0xff; 32],
            {
                let mut top = [0xff; 32];
                top[31] = 0x7f;
                top
            },
            // The points of order 8 on Curve25519 (RFC 7748 section 6.1 and
            // the usual small-order list).
            hex32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            hex32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        ];
        let high: Vec<[u8; 32]> = points
            .iter()
            .map(|p| {
                let mut h = *p;
                h[31] |= 0x80;
                h
            })
            .collect();
        points.extend(high);
        points
    }

    fn hex32(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or_else(|_| {
                unreachable!("constant hex");
            });
        }
        out
    }

    #[test]
    fn rfc7748_vectors() {
        // RFC 7748 section 5.2, both test vectors.
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
        ];
        for (k, u, out) in cases {
            assert_eq!(*x25519(&hex32(k), &hex32(u)), hex32(out));
        }
    }

    #[test]
    fn edge_points_match_the_ladder() {
        let scalars = [[0u8; 32], [0xff; 32], small(1), small(8), {
            let mut s = [0x5a; 32];
            s[31] = 0x40;
            s
        }];
        for u in edge_points() {
            for k in &scalars {
                assert_eq!(*x25519(k, &u), ladder(k, &u), "u = {u:02x?}");
            }
        }
    }

    #[test]
    fn twist_and_curve_points_are_both_exercised() {
        // The property below must see both paths: count how often a random
        // u lands on the curve (about half do).
        let mut on_curve = 0;
        for i in 0u64..64 {
            if MontgomeryPoint(small(i + 2)).to_edwards(0).is_some() {
                on_curve += 1;
            }
        }
        assert!(
            on_curve > 8 && on_curve < 56,
            "{on_curve} of 64 on the curve"
        );
    }

    #[test]
    fn agree_refuses_small_order_points() {
        let secret = StaticSecret::from([0x42; 32]);
        for u in edge_points() {
            let expected = ladder(secret.as_bytes(), &u);
            match agree(&secret, &u) {
                Some(shared) => assert_eq!(*shared, expected),
                None => assert_eq!(expected, [0u8; 32]),
            }
        }
        assert!(agree(&secret, &small(0)).is_none());
        assert!(agree(&secret, &small(1)).is_none());
        assert!(agree(&secret, &p_plus(0)).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn equals_the_ladder_for_random_inputs(k in any::<[u8; 32]>(), u in any::<[u8; 32]>()) {
            prop_assert_eq!(*x25519(&k, &u), ladder(&k, &u));
        }

        #[test]
        fn equals_the_ladder_on_edge_points(k in any::<[u8; 32]>(), i in 0usize..34) {
            let points = edge_points();
            let u = points[i % points.len()];
            prop_assert_eq!(*x25519(&k, &u), ladder(&k, &u));
        }

        #[test]
        fn equals_the_ladder_near_p(k in any::<[u8; 32]>(), delta in -64i64..64, high in any::<bool>()) {
            let mut u = p_plus(delta);
            if high {
                u[31] |= 0x80;
            }
            prop_assert_eq!(*x25519(&k, &u), ladder(&k, &u));
        }

        #[test]
        fn equals_the_ladder_on_public_keys(k in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
            // Honest peers' keys: points of the curve's prime-order subgroup.
            let u = x25519_dalek::PublicKey::from(&StaticSecret::from(other)).to_bytes();
            prop_assert!(MontgomeryPoint(u).to_edwards(0).is_some());
            prop_assert_eq!(*x25519(&k, &u), ladder(&k, &u));
        }
    }
}
