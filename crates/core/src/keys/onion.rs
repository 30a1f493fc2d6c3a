//! v3 onion service identity keys and addresses.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::{EdwardsPoint, Scalar};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha512};
use sha3::Sha3_256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const SECRET_FILE_HEADER: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
const PUBLIC_FILE_HEADER: &[u8; 32] = b"== ed25519v1-public: type0 ==\0\0\0";
const CONTROL_PREFIX: &str = "ED25519-V3:";
const ADDRESS_VERSION: u8 = 3;
const ADDRESS_LEN: usize = 56;

/// A service's identity key as tor keeps it: the 64-byte "expanded" ed25519 secret
/// (clamped scalar followed by the signing nonce prefix). Tor never stores the seed, so
/// neither do we: keys imported from tor have no seed to begin with.
#[derive(Clone)]
pub struct OnionSecretKey(Zeroizing<[u8; 64]>);

impl OnionSecretKey {
    /// A fresh key from the OS RNG, expanded the way tor expands a new seed.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        super::os_random(seed.as_mut())?;
        let mut expanded = Zeroizing::new([0u8; 64]);
        expanded.copy_from_slice(&Sha512::digest(&seed[..]));
        expanded[0] &= 248;
        expanded[31] &= 63;
        expanded[31] |= 64;
        Ok(Self(expanded))
    }

    /// Accepts the 64 expanded bytes, refusing any whose scalar is not clamped as tor's are.
    pub fn from_expanded(bytes: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidKey { what: "onion service key", reason };
        if bytes.len() != 64 {
            return Err(invalid(format!("expected 64 bytes, got {}", bytes.len())));
        }
        if bytes[0] & 7 != 0 || bytes[31] & 128 != 0 || bytes[31] & 64 == 0 {
            return Err(invalid("its scalar is not clamped, so it is not an expanded ed25519 key".into()));
        }
        let mut key = Zeroizing::new([0u8; 64]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub fn expanded_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    pub fn public_key(&self) -> OnionPublicKey {
        let mut scalar_bytes = Zeroizing::new([0u8; 32]);
        scalar_bytes.copy_from_slice(&self.0[..32]);
        // Reducing mod l does not change the point: the base point has order l.
        let scalar = Scalar::from_bytes_mod_order(*scalar_bytes);
        OnionPublicKey(EdwardsPoint::mul_base(&scalar).compress().to_bytes())
    }

    pub fn address(&self) -> OnionAddress {
        self.public_key().address()
    }

    /// The key blob ADD_ONION takes: `ED25519-V3:<base64 of the 64 bytes>`.
    pub fn to_control_blob(&self) -> Zeroizing<String> {
        let mut s = String::with_capacity(CONTROL_PREFIX.len() + 88);
        s.push_str(CONTROL_PREFIX);
        data_encoding::BASE64.encode_append(self.0.as_ref(), &mut s);
        Zeroizing::new(s)
    }

    pub fn from_control_blob(blob: &str) -> Result<Self> {
        let body = blob.strip_prefix(CONTROL_PREFIX).ok_or_else(|| Error::InvalidKey {
            what: "onion service key",
            reason: format!("expected it to start with {CONTROL_PREFIX:?}"),
        })?;
        let bytes =
            Zeroizing::new(data_encoding::BASE64.decode(body.as_bytes()).map_err(|e| Error::InvalidKey {
                what: "onion service key",
                reason: format!("not valid base64 ({e})"),
            })?);
        Self::from_expanded(&bytes)
    }

    /// The content of tor's `hs_ed25519_secret_key` file (96 bytes).
    pub fn to_tor_secret_file(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(96));
        out.extend_from_slice(SECRET_FILE_HEADER);
        out.extend_from_slice(self.0.as_ref());
        out
    }

    pub fn from_tor_secret_file(content: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidKey { what: "hs_ed25519_secret_key file", reason };
        if content.len() != 96 {
            return Err(invalid(format!("expected 96 bytes, got {}", content.len())));
        }
        if &content[..32] != SECRET_FILE_HEADER {
            return Err(invalid("it does not start with tor's \"== ed25519v1-secret: type0 ==\" header".into()));
        }
        Self::from_expanded(&content[32..])
    }
}

impl fmt::Debug for OnionSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionSecretKey({} [secret redacted])", self.address())
    }
}

impl PartialEq for OnionSecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0[..] == other.0[..]
    }
}
impl Eq for OnionSecretKey {}

impl Serialize for OnionSecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_control_blob())
    }
}

impl<'de> Deserialize<'de> for OnionSecretKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let blob = Zeroizing::new(String::deserialize(d)?);
        Self::from_control_blob(&blob).map_err(serde::de::Error::custom)
    }
}

/// The 32-byte ed25519 public identity key of a service.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionPublicKey([u8; 32]);

impl OnionPublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn address(&self) -> OnionAddress {
        OnionAddress(*self)
    }
    /// The content of tor's `hs_ed25519_public_key` file (64 bytes).
    pub fn to_tor_public_file(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(PUBLIC_FILE_HEADER);
        out.extend_from_slice(&self.0);
        out
    }
}

impl fmt::Debug for OnionPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionPublicKey({})", self.address())
    }
}

/// A v3 onion address. Displayed with `.onion`; [`OnionAddress::service_id`] gives the
/// 56-character form tor's control port and `.auth_private` files use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionAddress(OnionPublicKey);

impl OnionAddress {
    fn checksum(pubkey: &[u8; 32]) -> [u8; 2] {
        let mut h = Sha3_256::new();
        h.update(b".onion checksum");
        h.update(pubkey);
        h.update([ADDRESS_VERSION]);
        let digest = h.finalize();
        [digest[0], digest[1]]
    }

    /// The address without `.onion`, lowercase (what tor calls the ServiceID).
    pub fn service_id(&self) -> String {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(self.0.as_bytes());
        raw[32..34].copy_from_slice(&Self::checksum(self.0.as_bytes()));
        raw[34] = ADDRESS_VERSION;
        data_encoding::BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
    }

    pub fn public_key(&self) -> OnionPublicKey {
        self.0
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.onion", self.service_id())
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

/// Kept as text with `.onion`, and checked (version, checksum) when read back.
impl Serialize for OnionAddress {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OnionAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for OnionAddress {
    type Err = Error;

    /// Parses an address with or without `.onion`, verifying its version and checksum.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidAddress { address: text.to_owned(), reason: reason.to_owned() };
        let id = text.strip_suffix(".onion").unwrap_or(text);
        if id.len() != ADDRESS_LEN {
            return Err(invalid("a v3 onion address has 56 characters before .onion"));
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(id.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid("it is not base32"))?;
        if raw[34] != ADDRESS_VERSION {
            return Err(invalid("it is not a version 3 address"));
        }
        let mut pubkey = [0u8; 32];
        pubkey.copy_from_slice(&raw[..32]);
        if raw[32..34] != Self::checksum(&pubkey) {
            return Err(invalid("its checksum is wrong (a typo?)"));
        }
        Ok(Self(OnionPublicKey(pubkey)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    // rend-spec-v3, appendix "Test vectors for onion addresses".
    const SPEC_PUBKEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SPEC_ADDRESS: &str = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion";

    #[test]
    fn address_matches_rend_spec_test_vector() {
        let pk = OnionPublicKey::from_bytes(hex(SPEC_PUBKEY).try_into().unwrap());
        assert_eq!(pk.address().to_string(), SPEC_ADDRESS);
        let parsed: OnionAddress = SPEC_ADDRESS.parse().unwrap();
        assert_eq!(parsed.public_key(), pk);
        let upper: OnionAddress = SPEC_ADDRESS.trim_end_matches(".onion").to_uppercase().parse().unwrap();
        assert_eq!(upper, parsed);
    }

    #[test]
    fn address_with_a_typo_is_refused() {
        let typo = SPEC_ADDRESS.replacen("25nj", "25nk", 1);
        let err = typo.parse::<OnionAddress>().unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!("abc.onion".parse::<OnionAddress>().unwrap_err().to_string().contains("56 characters"));
    }

    // RFC 8032 test 1: seed 9d61b1…, public key d75a98… (the same key as the address vector).
    #[test]
    fn expansion_matches_rfc8032_public_key() {
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let mut expanded = [0u8; 64];
        expanded.copy_from_slice(&Sha512::digest(&seed));
        expanded[0] &= 248;
        expanded[31] &= 63;
        expanded[31] |= 64;
        let key = OnionSecretKey::from_expanded(&expanded).unwrap();
        assert_eq!(key.public_key().as_bytes().to_vec(), hex(SPEC_PUBKEY));
        assert_eq!(key.address().to_string(), SPEC_ADDRESS);
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = OnionSecretKey::generate().unwrap();
        let b = OnionSecretKey::generate().unwrap();
        assert_ne!(a.address(), b.address());
        OnionSecretKey::from_expanded(a.expanded_bytes()).unwrap();
    }

    #[test]
    fn file_and_blob_forms() {
        let key = OnionSecretKey::generate().unwrap();
        let file = key.to_tor_secret_file();
        assert_eq!(file.len(), 96);
        assert_eq!(&file[..32], b"== ed25519v1-secret: type0 ==\0\0\0");
        assert_eq!(OnionSecretKey::from_tor_secret_file(&file).unwrap(), key);
        let blob = key.to_control_blob();
        assert_eq!(blob.len(), "ED25519-V3:".len() + 88);
        assert_eq!(OnionSecretKey::from_control_blob(&blob).unwrap(), key);
        let public = key.public_key().to_tor_public_file();
        assert_eq!(&public[..32], b"== ed25519v1-public: type0 ==\0\0\0");
        assert_eq!(&public[32..], key.public_key().as_bytes());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let key = OnionSecretKey::generate().unwrap();
        let mut file = key.to_tor_secret_file().to_vec();
        file[5] = b'X';
        assert!(OnionSecretKey::from_tor_secret_file(&file).unwrap_err().to_string().contains("header"));
        assert!(OnionSecretKey::from_tor_secret_file(&file[..95]).unwrap_err().to_string().contains("96 bytes"));
        assert!(OnionSecretKey::from_control_blob("ED25519-V3:AAAA").is_err());
        assert!(OnionSecretKey::from_control_blob("RSA1024:AAAA").is_err());
        let mut unclamped = *key.expanded_bytes();
        unclamped[0] |= 1;
        assert!(OnionSecretKey::from_expanded(&unclamped).unwrap_err().to_string().contains("clamped"));
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let key = OnionSecretKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_control_blob()[11..30]));
        assert!(shown.contains("redacted"));
    }

    proptest! {
        #[test]
        fn serde_round_trip(seed in any::<[u8; 32]>()) {
            let mut expanded = [0u8; 64];
            expanded.copy_from_slice(&Sha512::digest(seed));
            expanded[0] &= 248; expanded[31] &= 63; expanded[31] |= 64;
            let key = OnionSecretKey::from_expanded(&expanded).unwrap();
            let json = serde_json::to_string(&key).unwrap();
            let back: OnionSecretKey = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.address(), key.address());
            prop_assert_eq!(key.address().to_string().parse::<OnionAddress>().unwrap(), key.address());
        }
    }
}
