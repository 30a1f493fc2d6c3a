//! x25519 client-authorization keys ("restricted discovery") and the text forms tor reads:
//! `descriptor:x25519:<pub>` (service side, `.auth`) and
//! `<service-id>:descriptor:x25519:<priv>` (client side, `.auth_private`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{decode_base32, OnionAddress};
use crate::error::{Error, Result};

const AUTH_PREFIX: &str = "descriptor:x25519:";

/// A client's x25519 private key, stored clamped so that every form we print is
/// byte-identical to what tor itself would write.
#[derive(Clone)]
pub struct ClientSecretKey(Zeroizing<[u8; 32]>);

fn clamp(bytes: &mut [u8; 32]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

impl ClientSecretKey {
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        super::os_random(bytes.as_mut())?;
        clamp(&mut bytes);
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        clamp(&mut bytes);
        Self(bytes)
    }

    pub fn public_key(&self) -> ClientPublicKey {
        let secret = StaticSecret::from(*self.0);
        ClientPublicKey(PublicKey::from(&secret).to_bytes())
    }

    /// Bare base32 (52 characters): what Tor Browser's authentication prompt takes.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(data_encoding::BASE32_NOPAD.encode(self.0.as_ref()))
    }

    /// Base64: what the control port's ONION_CLIENT_AUTH_ADD takes.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(data_encoding::BASE64.encode(self.0.as_ref()))
    }

    pub fn from_base32(text: &str) -> Result<Self> {
        let bytes = decode_base32::<32>("client private key", text.trim())?;
        Ok(Self::from_bytes(*bytes))
    }

    /// One line of a `.auth_private` file for tor's ClientOnionAuthDir.
    pub fn auth_private_line(&self, service: &OnionAddress) -> Zeroizing<String> {
        Zeroizing::new(format!("{}:{AUTH_PREFIX}{}", service.service_id(), self.to_base32().as_str()))
    }

    /// Parses a `.auth_private` line into the service address and the key.
    pub fn parse_auth_private_line(line: &str) -> Result<(OnionAddress, Self)> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (id, rest) = line.split_once(':').ok_or_else(|| Error::InvalidKey {
            what: ".auth_private line",
            reason: "expected <address>:descriptor:x25519:<key>".into(),
        })?;
        let address: OnionAddress = id.parse()?;
        let key = rest.strip_prefix(AUTH_PREFIX).ok_or_else(|| Error::InvalidKey {
            what: ".auth_private line",
            reason: format!("expected {AUTH_PREFIX:?} after the address"),
        })?;
        Ok((address, Self::from_base32(key)?))
    }
}

/// Reads a key received from a service's owner, in any form tails-server and tor hand
/// out: a `.auth_private` line (`client show`'s default), or the address and the bare key
/// (what `client show --as key` and the two QR codes give), one after the other in any
/// order. `address` is the service's address when the text holds only the key. Lines
/// starting with `#` are comments. Errors never repeat the text (it holds the secret).
pub fn parse_received_key(text: &str, address: Option<OnionAddress>) -> Result<(OnionAddress, ClientSecretKey)> {
    let invalid = |reason: &str| Error::InvalidKey { what: "received key", reason: reason.to_owned() };
    let words: Vec<&str> =
        text.lines().filter(|line| !line.trim_start().starts_with('#')).flat_map(str::split_whitespace).collect();
    let lines: Vec<&str> = words.iter().copied().filter(|w| w.contains(&format!(":{AUTH_PREFIX}"))).collect();
    let (found, key) = match lines[..] {
        [line] if words.len() == 1 => {
            let (found, key) = ClientSecretKey::parse_auth_private_line(line)?;
            (Some(found), key)
        }
        [] => {
            let mut addresses = Vec::new();
            let mut keys = Vec::new();
            for word in &words {
                let bare = word.trim_start_matches("http://").trim_end_matches('/');
                if let Ok(found) = bare.parse::<OnionAddress>() {
                    addresses.push(found);
                } else {
                    keys.push(*word);
                }
            }
            let key = match keys[..] {
                // A `.auth` line is the service's side: it holds the public key.
                [key] if key.starts_with(AUTH_PREFIX) => {
                    return Err(invalid(
                        "this is a client's public key (a `.auth` line, for the service's side); the friend \
                         needs the private key: the owner's `tails-server client show SERVICE CLIENT` prints it",
                    ))
                }
                [key] => ClientSecretKey::from_base32(key)?,
                [] => return Err(invalid("no key found: expected a line `<address>:descriptor:x25519:<key>`, or the key (52 base32 characters)")),
                _ => return Err(invalid("more than one key, or words that are neither an onion address nor a key")),
            };
            match addresses[..] {
                [] => (None, key),
                [found] => (Some(found), key),
                _ => return Err(invalid("more than one onion address")),
            }
        }
        _ => {
            return Err(invalid(
                "more than one key, or other words beside the `.auth_private` line: give one key at a time",
            ))
        }
    };
    match (found, address) {
        (Some(found), Some(given)) if found != given => Err(invalid(&format!("it is for {found}, not for {given}"))),
        (Some(found), _) | (None, Some(found)) => Ok((found, key)),
        (None, None) => Err(invalid(
            "it holds the key but not the service's address; give the address too (--address ADDRESS.onion)",
        )),
    }
}

impl fmt::Debug for ClientSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientSecretKey([secret redacted], public {})", self.public_key())
    }
}

impl PartialEq for ClientSecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0[..] == other.0[..]
    }
}
impl Eq for ClientSecretKey {}

impl Serialize for ClientSecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base32())
    }
}
impl<'de> Deserialize<'de> for ClientSecretKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        Self::from_base32(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `u` (as X25519 reads it: the top bit ignored, values from p up reduced) is the
/// u-coordinate of a point of small order, on the curve or its twist. Clamped scalars are
/// multiples of 8, so with such a point every shared secret is all zeros: whoever knows the
/// service's address could compute it and decrypt the descriptor layer meant for the client.
///
/// There are five such u (orders 2, 4, 4 and the two of order 8), compared here rather than
/// multiplying by 8: that ladder, run for every client each time a store was read, was most
/// of a command's time on a full store. The tests check the list against the multiplication.
fn has_small_order(u: &[u8; 32]) -> bool {
    let mut u = *u;
    u[31] &= 0x7f;
    // p = 2^255 - 19: the encodings p .. 2^255 - 1 stand for 0 .. 18.
    if u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed {
        let reduced = u[0] - 0xed;
        u = [0; 32];
        u[0] = reduced;
    }
    SMALL_ORDER_U.contains(&u)
}

/// The canonical u-coordinates of the small-order points: 0, 1, p - 1, and the two points of
/// order 8 (little-endian, as X25519 encodes them).
const SMALL_ORDER_U: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    {
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        minus_one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
        0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
];

/// A client's x25519 public key: what the service side needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPublicKey([u8; 32]);

impl ClientPublicKey {
    /// The one way to make a public key from outside bytes (`parse`, and so serde, go
    /// through here): refuses the keys that defeat client authorization.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self> {
        if has_small_order(&bytes) {
            return Err(Error::InvalidKey {
                what: "client public key",
                reason: "it is a small-order point (its x25519 shared secret with any key is all zeros); with it \
                         anyone knowing the address could decrypt the descriptor. Ask the client for a new key"
                    .into(),
            });
        }
        Ok(Self(bytes))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base32, 52 characters, as in `.auth` files and ADD_ONION's ClientAuthV3=.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// The line of a service-side `authorized_clients/NAME.auth` file.
    pub fn auth_line(&self) -> String {
        format!("{AUTH_PREFIX}{}", self.to_base32())
    }

    /// Accepts the bare base32 key or a whole `descriptor:x25519:` line.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bare = text.strip_prefix(AUTH_PREFIX).unwrap_or(text);
        if bare.contains(':') {
            return Err(Error::InvalidKey {
                what: "client public key",
                reason: format!("expected base32 or {AUTH_PREFIX:?} followed by base32 (only x25519 keys exist)"),
            });
        }
        let bytes = decode_base32::<32>("client public key", bare)?;
        Self::from_bytes(*bytes)
    }
}

impl fmt::Display for ClientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base32())
    }
}
impl fmt::Debug for ClientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientPublicKey({self})")
    }
}

impl Serialize for ClientPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base32())
    }
}
impl<'de> Deserialize<'de> for ClientPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::OnionPublicKey;
    use proptest::prelude::*;

    fn hex32(s: &str) -> [u8; 32] {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap().try_into().unwrap()
    }

    // RFC 7748 section 6.1: Alice's private and public keys.
    #[test]
    fn public_key_matches_rfc7748_vector() {
        let secret =
            ClientSecretKey::from_bytes(hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
        assert_eq!(
            secret.public_key().as_bytes(),
            &hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn text_forms() {
        let secret = ClientSecretKey::generate().unwrap();
        let b32 = secret.to_base32();
        assert_eq!(b32.len(), 52);
        assert!(b32.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(ClientSecretKey::from_base32(&b32).unwrap(), secret);
        assert_eq!(ClientSecretKey::from_base32(&b32.to_lowercase()).unwrap(), secret);
        assert_eq!(data_encoding::BASE64.decode(secret.to_base64().as_bytes()).unwrap(), secret.0.to_vec());

        let public = secret.public_key();
        let line = public.auth_line();
        assert!(line.starts_with("descriptor:x25519:") && line.len() == 18 + 52);
        assert_eq!(ClientPublicKey::parse(&line).unwrap(), public);
        assert_eq!(ClientPublicKey::parse(&public.to_base32()).unwrap(), public);

        let address = OnionPublicKey::from_bytes([7; 32]).address();
        let private_line = secret.auth_private_line(&address);
        assert_eq!(private_line.as_str(), format!("{}:descriptor:x25519:{}", address.service_id(), b32.as_str()));
        let (a, s) = ClientSecretKey::parse_auth_private_line(&private_line).unwrap();
        assert_eq!((a, s), (address, secret));
    }

    #[test]
    fn received_keys_are_read_in_every_form_they_are_handed_out() {
        let secret = ClientSecretKey::generate().unwrap();
        let address = OnionPublicKey::from_bytes([7; 32]).address();
        let other = OnionPublicKey::from_bytes([9; 32]).address();
        let line = secret.auth_private_line(&address);
        let b32 = secret.to_base32();
        let id = address.service_id();
        for text in [
            format!("{}\n", line.as_str()),
            format!("# from alice\n\n  {}\r\n", line.as_str()),
            format!("{id}.onion:descriptor:x25519:{}", b32.as_str()),
            // `client show --as qr`: the address, then the key, as two scans pasted together.
            format!("{address}\n{}", b32.as_str()),
            format!("{} http://{address}/", b32.as_str().to_lowercase()),
        ] {
            assert_eq!(parse_received_key(&text, None).unwrap(), (address, secret.clone()), "{text}");
        }
        assert_eq!(parse_received_key(&b32, Some(address)).unwrap(), (address, secret.clone()));
        assert_eq!(parse_received_key(&line, Some(address)).unwrap(), (address, secret.clone()));

        let public_line = secret.public_key().auth_line();
        for (text, given, why) in [
            (b32.to_string(), None, "give the address too (--address"),
            (line.to_string(), Some(other), "it is for"),
            (public_line, Some(address), "public key"),
            (format!("{}\n{}", line.as_str(), line.as_str()), None, "one key at a time"),
            (format!("{address} {other} {}", b32.as_str()), None, "more than one onion address"),
            (format!("{address} {} {}", b32.as_str(), b32.as_str()), None, "more than one key"),
            ("# only a comment\n".to_owned(), None, "no key found"),
            (format!("{address} hunter2"), None, "52 base32 characters"),
        ] {
            let err = parse_received_key(&text, given).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(!err.contains(b32.as_str()) && !err.contains(&b32.to_lowercase()), "the key in {err}");
        }
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        for (bad, why) in [
            ("", "52 base32 characters"),
            ("AAAA", "52 base32 characters"),
            (&"A".repeat(53), "52 base32 characters"),
            (&"1".repeat(52), "not valid base32"),
            ("descriptor:ed25519:AAAA", "only x25519"),
            (&format!("{}=", "A".repeat(51)), "not valid base32"),
        ] {
            let err = ClientPublicKey::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // 52 characters carry 260 bits: non-zero trailing bits are not a canonical key.
        let err = ClientPublicKey::parse(&format!("{}B", "A".repeat(51))).unwrap_err().to_string();
        assert!(err.contains("not valid base32"), "{err}");
    }

    /// libsodium's blocklist (crypto_scalarmult/curve25519/ref10/x25519_ref10.c), compared
    /// as libsodium does: the top bit ignored.
    const LIBSODIUM_BLOCKLIST: [&str; 7] = [
        "0000000000000000000000000000000000000000000000000000000000000000", // 0
        "0100000000000000000000000000000000000000000000000000000000000000", // 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1
    ];

    /// The definition: multiplying by 8 (the cofactor) sends exactly the small-order points,
    /// and no other, to the identity (u = 0).
    fn times_eight_is_identity(u: &[u8; 32]) -> bool {
        let eight = curve25519_dalek::Scalar::from(8u8);
        (curve25519_dalek::MontgomeryPoint(*u) * eight).to_bytes() == [0u8; 32]
    }

    fn libsodium_says_small_order(u: &[u8; 32]) -> bool {
        LIBSODIUM_BLOCKLIST.iter().any(|b| {
            let b = hex32(b);
            u[..31] == b[..31] && u[31] & 0x7f == b[31]
        })
    }

    fn refused_as_small_order(bytes: [u8; 32]) -> bool {
        let line = format!("descriptor:x25519:{}", data_encoding::BASE32_NOPAD.encode(&bytes));
        let verdicts = [
            ClientPublicKey::from_bytes(bytes).map(|_| ()),
            ClientPublicKey::parse(&line).map(|_| ()),
            ClientPublicKey::parse(&line["descriptor:x25519:".len()..]).map(|_| ()),
            serde_json::from_value::<ClientPublicKey>(serde_json::json!(&line[18..]))
                .map(|_| ())
                .map_err(|e| Error::InvalidKey { what: "client public key", reason: e.to_string() }),
        ];
        let refused = verdicts.iter().filter(|v| v.is_err()).count();
        assert!(refused == 0 || refused == verdicts.len(), "paths disagree on {bytes:02x?}: {verdicts:?}");
        if let Err(e) = &verdicts[0] {
            let text = e.to_string();
            assert!(text.contains("invalid client public key: it is a small-order point"), "{text}");
            assert!(text.contains("Ask the client for a new key"), "{text}");
        }
        refused > 0
    }

    #[test]
    fn small_order_keys_are_refused_on_every_path() {
        let mut named = vec![
            ("0", [0u8; 32]),
            ("1", hex32(LIBSODIUM_BLOCKLIST[1])),
            ("p - 1", hex32(LIBSODIUM_BLOCKLIST[4])),
            ("p", hex32(LIBSODIUM_BLOCKLIST[5])),
            ("p + 1", hex32(LIBSODIUM_BLOCKLIST[6])),
            ("order 8 (e0eb...)", hex32(LIBSODIUM_BLOCKLIST[2])),
            ("order 8 (5f9c...)", hex32(LIBSODIUM_BLOCKLIST[3])),
        ];
        // X25519 ignores the top bit: the same points with it set.
        for i in 0..named.len() {
            let (name, mut bytes) = named[i];
            bytes[31] |= 0x80;
            named.push((name, bytes));
        }
        for (name, bytes) in named {
            assert!(refused_as_small_order(bytes), "u = {name} ({bytes:02x?}) was accepted");
            // What makes them dangerous: the shared secret with any (clamped) key is all zeros.
            let secret = ClientSecretKey::generate().unwrap();
            let shared = StaticSecret::from(*secret.0).diffie_hellman(&PublicKey::from(bytes));
            assert_eq!(shared.as_bytes(), &[0u8; 32], "u = {name}");
        }
    }

    #[test]
    fn the_check_agrees_with_libsodiums_blocklist() {
        // Every non-canonical encoding (p .. 2^255 - 1, with and without the top bit), and
        // small values: refused exactly when libsodium refuses them.
        let mut candidates = Vec::new();
        for low in 0xedu8..=0xff {
            let mut u = [0xff; 32];
            u[0] = low;
            u[31] = 0x7f;
            candidates.push(u);
            u[31] = 0xff;
            candidates.push(u);
        }
        for small in 0u8..=20 {
            let mut u = [0; 32];
            u[0] = small;
            candidates.push(u);
        }
        for u in candidates {
            assert_eq!(refused_as_small_order(u), libsodium_says_small_order(&u), "{u:02x?}");
            assert_eq!(has_small_order(&u), times_eight_is_identity(&u), "{u:02x?}");
        }
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        // RFC 7748's public keys, and generated ones.
        for hex in [
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        ] {
            assert!(!refused_as_small_order(hex32(hex)), "{hex}");
        }
        for _ in 0..32 {
            let public = ClientSecretKey::generate().unwrap().public_key();
            assert!(!refused_as_small_order(*public.as_bytes()));
        }
    }

    proptest! {
        /// Blocklisted values, with the top bit set or not and perhaps one other bit flipped
        /// (random bytes alone would almost never come near the blocklist).
        #[test]
        fn small_order_check_matches_libsodium(
            index in 0..LIBSODIUM_BLOCKLIST.len(),
            top in any::<bool>(),
            flip in proptest::option::of(0..255usize),
        ) {
            let mut bytes = hex32(LIBSODIUM_BLOCKLIST[index]);
            if top {
                bytes[31] |= 0x80;
            }
            if let Some(bit) = flip {
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            prop_assert_eq!(has_small_order(&bytes), libsodium_says_small_order(&bytes), "{:02x?}", bytes);
            prop_assert_eq!(has_small_order(&bytes), times_eight_is_identity(&bytes), "{:02x?}", bytes);
        }

        #[test]
        fn random_keys_agree_with_libsodium(bytes in any::<[u8; 32]>()) {
            prop_assert_eq!(has_small_order(&bytes), libsodium_says_small_order(&bytes));
            prop_assert_eq!(has_small_order(&bytes), times_eight_is_identity(&bytes));
        }

        #[test]
        fn serde_round_trip(bytes in any::<[u8; 32]>()) {
            let secret = ClientSecretKey::from_bytes(bytes);
            let json = serde_json::to_string(&secret).unwrap();
            prop_assert_eq!(serde_json::from_str::<ClientSecretKey>(&json).unwrap(), secret.clone());
            let public = secret.public_key();
            let json = serde_json::to_string(&public).unwrap();
            prop_assert_eq!(serde_json::from_str::<ClientPublicKey>(&json).unwrap(), public);
        }
    }
}
