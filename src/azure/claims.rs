//! The few claims redvault reads from an access token (a JWT) to name the identity
//! in messages and to AUTH to Redis. The signature is not checked: the token came
//! from our own credential, and only the service it is sent to relies on it.

use base64::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Claims {
    /// The principal's object id.
    pub oid: Option<String>,
    /// The application (client) id.
    pub appid: Option<String>,
    pub aud: Option<String>,
    pub exp: Option<i64>,
}

impl Claims {
    /// The payload of a JWT, or empty claims when the token is not one (opaque tokens).
    pub fn of(token: &str) -> Claims {
        let Some(payload) = token.split('.').nth(1) else {
            return Claims::default();
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}
