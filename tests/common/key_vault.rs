//! A loopback Key Vault over HTTPS: get key, wrapkey and unwrapkey (RSA-OAEP-256)
//! with real RSA keys, and sign (ES256) with real P-256 keys, with versions. Like the real service it answers a request
//! without a token with a 401 challenge, checks the token's audience and expiry,
//! and answers 403 naming the operation an identity is not permitted.
#![allow(dead_code)]

use super::http::{HttpServer, Request, Response};
use super::tls::TestCa;
use base64::Engine;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct KeyVersion {
    pub version: String,
    pub kty: String,
    pub key: Option<RsaPrivateKey>,
    /// For kty EC: the P-256 key that signs.
    pub ec: Option<p256::ecdsa::SigningKey>,
    pub enabled: bool,
}

#[derive(Default)]
pub struct VaultState {
    pub keys: HashMap<String, Vec<KeyVersion>>,
    /// Object id -> permitted key operations (get, wrapKey, unwrapKey).
    pub permissions: HashMap<String, Vec<String>>,
    /// Every operation: "wrapKey name/version by oid", ...
    pub log: Vec<String>,
    pub base: String,
    counter: u32,
}

pub struct KeyVault {
    pub server: HttpServer,
    pub state: Arc<Mutex<VaultState>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

impl KeyVault {
    pub fn start(ca: &TestCa) -> Self {
        let state = Arc::new(Mutex::new(VaultState::default()));
        let st = state.clone();
        let server = HttpServer::start(
            Some(ca.server_config()),
            Arc::new(move |r: Request| handle(&st, r)),
        );
        state.lock().unwrap().base = format!("https://127.0.0.1:{}", server.port);
        KeyVault { server, state }
    }

    pub fn base(&self) -> String {
        self.state.lock().unwrap().base.clone()
    }

    /// Adds a new RSA version of `name` (made the newest); returns its version id.
    pub fn add_rsa_version(&self, name: &str) -> String {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        self.add_version(name, "RSA", Some(key))
    }

    pub fn add_version(&self, name: &str, kty: &str, key: Option<RsaPrivateKey>) -> String {
        let mut s = self.state.lock().unwrap();
        s.counter += 1;
        let version = format!("{:032x}", 0xabc0_0000u64 + u64::from(s.counter));
        s.keys.entry(name.into()).or_default().push(KeyVersion {
            version: version.clone(),
            kty: kty.into(),
            key,
            ec: None,
            enabled: true,
        });
        version
    }

    /// Adds a new P-256 version of `name` (kty EC); returns its version id.
    pub fn add_ec_version(&self, name: &str) -> String {
        let v = self.add_version(name, "EC", None);
        let mut s = self.state.lock().unwrap();
        s.keys.get_mut(name).unwrap().last_mut().unwrap().ec =
            Some(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng));
        v
    }

    pub fn disable(&self, name: &str, version: &str) {
        let mut s = self.state.lock().unwrap();
        for v in s.keys.get_mut(name).unwrap() {
            if v.version == version {
                v.enabled = false;
            }
        }
    }

    pub fn permit(&self, oid: &str, ops: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .permissions
            .insert(oid.into(), ops.iter().map(|s| s.to_string()).collect());
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn handle(state: &Mutex<VaultState>, r: Request) -> Response {
    let mut s = state.lock().unwrap();
    if !r.query.contains_key("api-version") {
        return error(400, "BadParameter", "api-version is required");
    }
    let Some(auth) = r.headers.get("authorization") else {
        let mut rsp = error(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        rsp.headers.push((
            "www-authenticate".into(),
            format!("Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"", super::token_endpoint::TENANT),
        ));
        return rsp;
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or_default();
    let claims: serde_json::Value = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if claims["aud"] != "https://vault.azure.net" || claims["exp"].as_i64().unwrap_or(0) < now {
        return error(
            401,
            "Unauthorized",
            "AKV10022: Invalid audience or expired token.",
        );
    }
    let oid = claims["oid"].as_str().unwrap_or_default().to_string();
    let segs: Vec<&str> = r.path.split('/').filter(|p| !p.is_empty()).collect();
    let (name, version, op) = match (r.method.as_str(), segs.as_slice()) {
        ("GET", ["keys", n]) => (*n, None, "get"),
        ("GET", ["keys", n, v]) => (*n, Some(*v), "get"),
        ("POST", ["keys", n, "wrapkey"]) => (*n, None, "wrapKey"),
        ("POST", ["keys", n, v, "wrapkey"]) => (*n, Some(*v), "wrapKey"),
        ("POST", ["keys", n, "unwrapkey"]) => (*n, None, "unwrapKey"),
        ("POST", ["keys", n, v, "unwrapkey"]) => (*n, Some(*v), "unwrapKey"),
        ("POST", ["keys", n, "sign"]) => (*n, None, "sign"),
        ("POST", ["keys", n, v, "sign"]) => (*n, Some(*v), "sign"),
        _ => return error(404, "NotFound", "no such operation"),
    };
    let permitted = s
        .permissions
        .get(&oid)
        .is_some_and(|p| p.iter().any(|x| x == op));
    if !permitted {
        return error(
            403,
            "Forbidden",
            &format!("The user, group or application 'oid={oid}' does not have keys {} permission on key vault 'test-vault'.", op.to_lowercase()),
        );
    }
    let base = s.base.clone();
    let Some(versions) = s.keys.get(name) else {
        return error(
            404,
            "KeyNotFound",
            &format!("A key with (name/id) {name} was not found in this key vault."),
        );
    };
    let Some(kv) = (match version {
        Some(v) => versions.iter().find(|k| k.version == v),
        None => versions.last(),
    }) else {
        return error(
            404,
            "KeyNotFound",
            &format!(
                "A key with (name/id) {name}/{} was not found in this key vault.",
                version.unwrap_or("")
            ),
        );
    };
    let kid = format!("{base}/keys/{name}/{}", kv.version);
    if !kv.enabled {
        return error(
            403,
            "Forbidden",
            &format!("Operation {op} is not allowed on a disabled key."),
        );
    }
    let entry = format!("{op} {name}/{} by {oid}", kv.version);
    if op == "get" {
        if let Some(ec) = &kv.ec {
            let point = ec.verifying_key().to_encoded_point(false);
            let rsp = Response::json(
                200,
                serde_json::json!({
                    "key": {"kid": kid, "kty": kv.kty, "crv": "P-256", "key_ops": ["sign", "verify"],
                            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
                    "attributes": {"enabled": kv.enabled},
                }),
            );
            s.log.push(entry);
            return rsp;
        }
        let (n, e) = kv
            .key
            .as_ref()
            .map(|k| (b64(&k.n().to_bytes_be()), b64(&k.e().to_bytes_be())))
            .unwrap_or_default();
        let rsp = Response::json(
            200,
            serde_json::json!({
                "key": {"kid": kid, "kty": kv.kty, "key_ops": ["wrapKey", "unwrapKey"], "n": n, "e": e},
                "attributes": {"enabled": kv.enabled},
            }),
        );
        s.log.push(entry);
        return rsp;
    }
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    if op == "sign" {
        let rsp = sign(kv, &body, &kid);
        if rsp.status == 200 {
            s.log.push(entry);
        }
        return rsp;
    }
    if body["alg"] != "RSA-OAEP-256" {
        return error(400, "BadParameter", "alg must be RSA-OAEP-256 here");
    }
    let Some(value) = body["value"].as_str().and_then(|v| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .ok()
    }) else {
        return error(400, "BadParameter", "value is not base64url");
    };
    let Some(key) = kv.key.as_ref() else {
        return error(400, "BadParameter", "Key and algorithm are not compatible.");
    };
    let out = if op == "wrapKey" {
        key.to_public_key()
            .encrypt(&mut rand::thread_rng(), Oaep::new::<sha2::Sha256>(), &value)
            .ok()
    } else {
        key.decrypt(Oaep::new::<sha2::Sha256>(), &value).ok()
    };
    let Some(out) = out else {
        return error(400, "BadParameter", "Bad Request");
    };
    s.log.push(entry);
    Response::json(200, serde_json::json!({"kid": kid, "value": b64(&out)}))
}

/// `sign`: ES256 over a 32-byte digest, as r||s. The service does not
/// normalise s; this double always answers the high-s form of the
/// signature, so the client's normalisation is exercised every time.
fn sign(kv: &KeyVersion, body: &serde_json::Value, kid: &str) -> Response {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let Some(ec) = kv.ec.as_ref() else {
        return error(400, "BadParameter", "Key and algorithm are not compatible.");
    };
    if body["alg"] != "ES256" {
        return error(400, "BadParameter", "alg must be ES256 for a P-256 key");
    }
    let Some(digest) = body["value"].as_str().and_then(|v| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .ok()
    }) else {
        return error(400, "BadParameter", "value is not base64url");
    };
    if digest.len() != 32 {
        return error(400, "BadParameter", "ES256 signs a 32-byte digest");
    }
    let sig: p256::ecdsa::Signature = ec.sign_prehash(&digest).unwrap();
    let sig = match sig.normalize_s() {
        Some(_) => sig,
        None => {
            let (r, s) = sig.split_scalars();
            p256::ecdsa::Signature::from_scalars(r, -*s).unwrap()
        }
    };
    Response::json(
        200,
        serde_json::json!({"kid": kid, "value": b64(&sig.to_bytes())}),
    )
}
