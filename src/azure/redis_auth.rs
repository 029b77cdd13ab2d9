//! Entra ID authentication to Redis: AUTH with the principal's object id as the
//! user name and an access token for `https://redis.azure.com` as the password.

use super::identity::Identity;
use super::REDIS_SCOPE;
use crate::resp::{CredentialError, RedisAuth, RedisCredentials};
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug)]
pub struct EntraRedisAuth {
    identity: Arc<Identity>,
    user: Option<String>,
}

impl EntraRedisAuth {
    pub fn new(identity: Arc<Identity>, user: Option<String>) -> Self {
        EntraRedisAuth { identity, user }
    }
}

#[async_trait]
impl RedisAuth for EntraRedisAuth {
    async fn credentials(&self) -> Result<RedisCredentials, CredentialError> {
        let token = self
            .identity
            .token(REDIS_SCOPE)
            .await
            .map_err(|e| CredentialError(e.to_string()))?;
        let user = match (&self.user, &token.claims.oid) {
            (Some(u), _) => u.clone(),
            (None, Some(oid)) => oid.clone(),
            (None, None) => {
                return Err(CredentialError(format!(
                    "the Redis token of {} carries no object id (oid); set azure.redis.user",
                    self.identity.name()
                )))
            }
        };
        Ok(RedisCredentials {
            user,
            password: token.secret.clone(),
            expires_on: Some(token.expires_on),
        })
    }
}
