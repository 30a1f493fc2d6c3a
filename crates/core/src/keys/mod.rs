//! Onion service keys and client-authorization credentials, in the exact byte and text
//! forms tor uses (rend-spec-v3, tor's key files and control-port syntax).

mod client_auth;
mod onion;

pub use client_auth::{parse_received_key, ClientPublicKey, ClientSecretKey};
pub use onion::{OnionAddress, OnionPublicKey, OnionSecretKey};

use crate::error::{Error, Result};

/// Fills a buffer from the operating system's random number generator.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}

/// Decodes tor's unpadded RFC 4648 base32, case-insensitively, into exactly `N` bytes.
pub(crate) fn decode_base32<const N: usize>(what: &'static str, text: &str) -> Result<zeroize::Zeroizing<[u8; N]>> {
    let expected_len = (N * 8).div_ceil(5);
    let invalid = |reason: String| Error::InvalidKey { what, reason };
    if text.len() != expected_len {
        return Err(invalid(format!("expected {expected_len} base32 characters, got {}", text.chars().count())));
    }
    let upper = zeroize::Zeroizing::new(text.to_ascii_uppercase());
    let bytes = zeroize::Zeroizing::new(
        data_encoding::BASE32_NOPAD.decode(upper.as_bytes()).map_err(|e| invalid(format!("not valid base32 ({e})")))?,
    );
    let mut out = zeroize::Zeroizing::new([0u8; N]);
    out.copy_from_slice(&bytes);
    Ok(out)
}
