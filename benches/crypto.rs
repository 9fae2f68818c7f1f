//! Seal+open of a 100-byte value and the HMAC blind index, in ns/op.
//!
//!     cargo bench --bench crypto [-- ITERATIONS]

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use tollgate::crypto::hashing::Domain;
use tollgate::crypto::{Aad, Keyring, TokenHasher};
use tollgate::secret::{decode_key, encode_base64};

fn time(label: &str, iterations: u32, mut op: impl FnMut()) {
    for _ in 0..iterations / 10 {
        op(); // warm up
    }
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..iterations {
            op();
        }
        runs.push(started.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "{label:<40} {:>9.0} ns/op  (median of 3 x {iterations})",
        runs[1]
    );
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let key = decode_key::<32>(&encode_base64(&[7; 32])).expect("key");
    let ring = Keyring::new(&key, &[]);
    let hasher = TokenHasher::new(&key, &[]);
    let value = [0x5a_u8; 100];
    let aad = Aad::new("byok_keys", "secret", "user:42/provider:anthropic");

    let sealed = ring.seal(&value, &aad).expect("seal");
    time("seal 100 B (AES-256-GCM)", iterations, || {
        black_box(ring.seal(black_box(&value), &aad).expect("seal"));
    });
    time("open 100 B", iterations, || {
        black_box(ring.open(black_box(&sealed), &aad).expect("open"));
    });
    time("seal + open 100 B", iterations, || {
        let sealed = ring.seal(black_box(&value), &aad).expect("seal");
        black_box(ring.open(&sealed, &aad).expect("open"));
    });
    time("HMAC-SHA256 blind index (cus_… id)", iterations, || {
        black_box(hasher.digest(
            Domain::StripeCustomerId,
            black_box(b"cus_DUMMY0000000000000"),
        ));
    });
}
