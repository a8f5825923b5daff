//! The bootstrapsigner's detached JWS (k8s.io/cluster-bootstrap/token/jws): HS256 over the
//! `cluster-info` kubeconfig, keyed by the bootstrap token's secret, payload left out. The lab's
//! bootstrapsigner and kubeadm sign and check with it; apply only checks (it never signs).

use base64::Engine;

/// cluster-info's key for a token's signature is this and the token id
/// (bootstrapapi.JWSSignatureKeyPrefix).
pub const SIGNATURE_PREFIX: &str = "jws-kubeconfig-";

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

/// `ComputeDetachedSignature(content, tokenID, tokenSecret)`: `<header>..<signature>`, the
/// header being go-jose's `{"alg":"HS256","kid":"<tokenID>"}` (keys sorted, as Go marshals
/// maps).
pub fn compute_detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({"alg": "HS256", "kid": token_id}).to_string();
    let protected = b64.encode(header.as_bytes());
    let payload = b64.encode(content.as_bytes());
    let signing_input = format!("{protected}.{payload}");
    let sig = hmac_sha256(token_secret.as_bytes(), signing_input.as_bytes());
    // The signature is over the payload; the detached form leaves the payload out.
    format!("{protected}..{}", b64.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of k8s.io/cluster-bootstrap/token/jws/jws_test.go.
    const CONTENT: &str = "Hello from the other side. I must have called a thousand times.";
    const SECRET: &str = "my voice is my passcode";
    const ID: &str = "joshua";

    #[test]
    fn matches_cluster_bootstraps_vectors() {
        assert_eq!(
            compute_detached_signature(CONTENT, ID, SECRET),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            compute_detached_signature("", ID, SECRET),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
