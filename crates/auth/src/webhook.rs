//! The payment provider's webhook signature: `Payment-Signature: t=<unix seconds>,v1=<hex>[,v1=…]`
//! where each `v1` is HMAC-SHA256 of `"<t>.<raw body>"` keyed with the shared secret. Checked on
//! the raw bytes, before any JSON parsing; any one matching `v1` is enough (the provider rolls
//! secrets by sending two); the comparison is constant-time (`Mac::verify_slice`); `t` must be
//! within the tolerance of now, in the past or the future (a replayed capture is refused).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery is refused (all answered the same way: 400 `invalid_signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed Payment-Signature header")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// `v1=` signature of `body` at time `t` (for senders: tests and the `api webhook` command).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The whole header value for `body` signed at `t`.
pub fn header(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

/// Verifies `header` for `body` at `now` (unix seconds) with `tolerance_secs` either way.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), SignatureError> {
    let mut t: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match k {
            "t" if t.is_none() => t = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "t" => return Err(SignatureError::Malformed),
            // A v1 that is not hex cannot match; other schemes are ignored (forward compatible).
            "v1" => {
                if let Ok(sig) = hex::decode(v) {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() && !header.contains("v1=") {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac;
    if signatures.iter().any(|sig| expected.clone().verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"whsec_test";

    #[test]
    fn a_signed_body_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let h = header(S, 1_000, body);
        assert_eq!(verify(S, &h, body, 1_000, 300), Ok(()));
        assert_eq!(verify(S, &h, body, 1_300, 300), Ok(()));
        assert_eq!(verify(S, &h, body, 700, 300), Ok(()));
    }

    #[test]
    fn any_of_several_v1_is_enough() {
        let body = b"{}";
        let good = sign(S, 5, body);
        let h = format!("t=5,v1={},v1={good},v0=zz", "00".repeat(32));
        assert_eq!(verify(S, &h, body, 5, 300), Ok(()));
    }

    #[test]
    fn refusals() {
        let body = b"{}";
        let h = header(S, 1_000, body);
        assert_eq!(verify(S, &h, b"{} ", 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", &h, body, 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(S, &h, body, 1_301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(S, &h, body, 699, 300), Err(SignatureError::Stale));
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1000", "t=1,t=1,v1=00", "garbage"] {
            assert_eq!(
                verify(S, bad, body, 1_000, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        // A signature over another timestamp does not verify under this one.
        let other = format!("t=1001,v1={}", sign(S, 1_000, body));
        assert_eq!(verify(S, &other, body, 1_000, 300), Err(SignatureError::Mismatch));
    }
}
