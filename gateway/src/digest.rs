//! SHA-256 in lower-case hex: how the gateway names a plugin version or a
//! certificate, as `sha256sum` (or `openssl ... -sha256`, without the
//! colons) prints it, so operators can compare.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
