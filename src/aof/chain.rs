//! The signed chain of AOF segments. Each segment's header carries an
//! attestation: a statement of what the segment is (source, generation, its
//! offsets, the link of the segment it follows, the digest and length of its
//! plaintext, its data key id, the time of its last record) signed by the
//! writer's key. The link of a segment is a digest of its attestation, so a
//! segment that is missing, reordered, from another generation or source, or
//! not from a trusted signer does not fit the chain. docs/FORMAT.md gives the
//! bytes.

use super::AofError;
use crate::signing::{Domain, SignError, Signer, Trust, SIGNATURE_LEN, SIGNER_ID_LEN};
use sha2::{Digest, Sha256};

/// The link a generation's first segment names: it follows the base.
pub const GENESIS: [u8; 32] = [0; 32];
const STATEMENT_KIND: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub source: String,
    pub generation: String,
    pub from: u64,
    pub to: u64,
    /// The link of the segment that ends at `from` (GENESIS for the first).
    pub prev: [u8; 32],
    pub plaintext_sha256: [u8; 32],
    pub plaintext_bytes: u64,
    pub data_key_id: [u8; 16],
    /// Receive time of the segment's last record, Unix ms.
    pub last_time_ms: u64,
    pub signer: [u8; SIGNER_ID_LEN],
}

/// A statement whose signature verified, and the segment's own link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub statement: Statement,
    pub link: [u8; 32],
    pub signer: String,
}

/// The digest later segments name: SHA-256 of the whole attestation.
pub fn link_of(attestation: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"redvault/2 link\0");
    h.update(attestation);
    h.finalize().into()
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let n = u16::try_from(s.len()).expect("names are short");
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

impl Statement {
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        b.push(STATEMENT_KIND);
        put_str(&mut b, &self.source);
        put_str(&mut b, &self.generation);
        b.extend_from_slice(&self.from.to_be_bytes());
        b.extend_from_slice(&self.to.to_be_bytes());
        b.extend_from_slice(&self.prev);
        b.extend_from_slice(&self.plaintext_sha256);
        b.extend_from_slice(&self.plaintext_bytes.to_be_bytes());
        b.extend_from_slice(&self.data_key_id);
        b.extend_from_slice(&self.last_time_ms.to_be_bytes());
        b.extend_from_slice(&self.signer);
        b
    }

    /// The attestation bytes: the statement, then its signature.
    pub async fn sign(&self, signer: &Signer) -> Result<Vec<u8>, SignError> {
        debug_assert_eq!(self.signer, signer.id_bytes());
        let mut b = self.body();
        let sig = signer.sign(Domain::Segment, &b).await?;
        b.extend_from_slice(&sig);
        Ok(b)
    }

    fn parse(att: &[u8]) -> Option<(Statement, &[u8], &[u8])> {
        let (body, sig) = att.split_at(att.len().checked_sub(SIGNATURE_LEN)?);
        let mut r = body;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, rest) = (r.get(..n)?, r.get(n..)?);
            r = rest;
            Some(a)
        };
        if take(1)? != [STATEMENT_KIND] {
            return None;
        }
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let source = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let generation = String::from_utf8(take(n)?.to_vec()).ok()?;
        let u64_of = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
        let from = u64_of(take(8)?);
        let to = u64_of(take(8)?);
        let prev = take(32)?.try_into().ok()?;
        let plaintext_sha256 = take(32)?.try_into().ok()?;
        let plaintext_bytes = u64_of(take(8)?);
        let data_key_id = take(16)?.try_into().ok()?;
        let last_time_ms = u64_of(take(8)?);
        let signer = take(SIGNER_ID_LEN)?.try_into().ok()?;
        if !r.is_empty() {
            return None;
        }
        Some((
            Statement {
                source,
                generation,
                from,
                to,
                prev,
                plaintext_sha256,
                plaintext_bytes,
                data_key_id,
                last_time_ms,
                signer,
            },
            body,
            sig,
        ))
    }
}

/// The statement and link of an attestation this process made itself (the
/// daemon's uploader, for chain heads): parsed, not verified.
pub fn own_statement(att: &[u8]) -> Option<(Statement, [u8; 32])> {
    Statement::parse(att).map(|(st, _, _)| (st, link_of(att)))
}

/// Parses an attestation and checks its signature against the trusted signers.
pub fn verify(att: &[u8], trust: &Trust, label: &str) -> Result<Attested, AofError> {
    let (statement, body, sig) = Statement::parse(att)
        .ok_or_else(|| AofError::Invalid(format!("segment {label}: malformed attestation")))?;
    let signer = trust
        .verify_by_id(Domain::Segment, body, &statement.signer, sig)
        .map_err(|e| AofError::Invalid(format!("segment {label}: {e}")))?;
    Ok(Attested {
        statement,
        link: link_of(att),
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(s: &Signer) -> Statement {
        Statement {
            source: "cache1".into(),
            generation: "g".into(),
            from: 10,
            to: 20,
            prev: GENESIS,
            plaintext_sha256: [7; 32],
            plaintext_bytes: 99,
            data_key_id: [1; 16],
            last_time_ms: 5,
            signer: s.id_bytes(),
        }
    }

    #[test]
    fn attestations_verify_and_link() {
        let a = Signer::generate();
        let mut trust = Trust::new(false);
        trust.add_signer(&a);
        let att = futures::executor::block_on(statement(&a).sign(&a)).unwrap();
        let got = verify(&att, &trust, "x").unwrap();
        assert_eq!(got.statement, statement(&a));
        assert_eq!(got.link, link_of(&att));
        let mut flipped = att.clone();
        flipped[5] ^= 1;
        assert!(verify(&flipped, &trust, "x").is_err());
        assert!(verify(&att[..att.len() - 1], &trust, "x").is_err());
        let b = Signer::generate();
        let att_b = futures::executor::block_on(statement(&b).sign(&b)).unwrap();
        let e = verify(&att_b, &trust, "x").unwrap_err();
        assert!(e.to_string().contains("not a trusted signer"), "{e}");
    }
}
