//! A loopback managed-identity token endpoint speaking the IMDS protocol
//! (`GET /metadata/identity/oauth2/token?api-version&resource[&client_id|object_id|msi_res_id]`,
//! header `Metadata: true`). It issues unsigned JWTs with the claims Azurite and
//! our Key Vault double check (iss, aud, nbf, exp, oid), and records every request.
#![allow(dead_code)]

use super::http::{HttpServer, Request, Response};
use base64::Engine;
use std::sync::{Arc, Mutex};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

#[derive(Debug, Clone)]
pub struct UserAssigned {
    pub client_id: String,
    pub object_id: String,
    pub resource_id: String,
}

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub resource: String,
    /// `system`, or `client_id=...`, `object_id=...`, `msi_res_id=...`.
    pub identity: String,
    /// The object id the token was issued to, if any.
    pub issued_to: Option<String>,
}

pub struct TokenState {
    /// The object id of the host's system-assigned identity, if it has one.
    pub system_assigned: Option<String>,
    pub user_assigned: Vec<UserAssigned>,
    pub requests: Vec<TokenRequest>,
    /// Fixed at start: tokens are the same for the same identity and resource.
    pub expires_on: i64,
    pub not_before: i64,
    /// Issue storage tokens for this audience instead of the one asked for.
    pub aud_override: Option<String>,
}

pub struct TokenEndpoint {
    pub server: HttpServer,
    pub state: Arc<Mutex<TokenState>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned JWT (Azurite in `--oauth basic` does not check signatures).
pub fn jwt(resource: &str, oid: &str, nbf: i64, exp: i64) -> String {
    let b = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let header = b(serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "test"}));
    let claims = b(serde_json::json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": nbf,
        "nbf": nbf,
        "exp": exp,
        "oid": oid,
        "sub": oid,
        "tid": TENANT,
        "appid": format!("app-{oid}"),
    }));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

impl TokenEndpoint {
    /// `lifetime`: seconds from now that tokens are valid. At 300 or less,
    /// azure_identity refreshes the token before every use.
    pub fn start(
        system_assigned: Option<&str>,
        user_assigned: Vec<UserAssigned>,
        lifetime: i64,
    ) -> Self {
        let state = Arc::new(Mutex::new(TokenState {
            system_assigned: system_assigned.map(str::to_string),
            user_assigned,
            requests: vec![],
            expires_on: now() + lifetime,
            not_before: now() - 60,
            aud_override: None,
        }));
        let st = state.clone();
        let server = HttpServer::start(None, Arc::new(move |r: Request| handle(&st, r)));
        TokenEndpoint { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The token this endpoint issues to `oid` for `resource`.
    pub fn token_for(&self, resource: &str, oid: &str) -> String {
        let s = self.state.lock().unwrap();
        jwt(resource, oid, s.not_before, s.expires_on)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// Entra ID's token endpoint for workload identity (client-credentials grant
/// with a federated client assertion) and for a service principal's client
/// secret: `POST /<tenant>/oauth2/v2.0/token`.
fn handle_entra(s: &mut TokenState, r: Request) -> Response {
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&r.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let scope = form.get("scope").cloned().unwrap_or_default();
    let resource = scope.trim_end_matches("/.default").to_string();
    let oid = s
        .user_assigned
        .iter()
        .find(|u| u.client_id == client_id)
        .map(|u| u.object_id.clone())
        .filter(|_| {
            let assertion = form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && form
                    .get("client_assertion")
                    .is_some_and(|a| a == FEDERATED_ASSERTION);
            let secret = form
                .get("client_secret")
                .is_some_and(|s| s == CLIENT_SECRET);
            (assertion || secret)
                && form.get("grant_type").map(String::as_str) == Some("client_credentials")
        });
    s.requests.push(TokenRequest {
        resource: resource.clone(),
        identity: format!("workload client_id={client_id}"),
        issued_to: oid.clone(),
    });
    let Some(oid) = oid else {
        return Response::json(
            401,
            serde_json::json!({"error": "invalid_client", "error_description": "AADSTS700213: No matching federated identity record found"}),
        );
    };
    let token = jwt(&resource, &oid, s.not_before, s.expires_on);
    Response::json(
        200,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": s.expires_on - now(),
            "ext_expires_in": s.expires_on - now(),
            "access_token": token,
        }),
    )
}

/// The one client secret this endpoint accepts (a canary: no output may
/// hold it).
pub const CLIENT_SECRET: &str = "canary-client-secret-9d41e0";

/// What the tests write into the federated token file.
pub const FEDERATED_ASSERTION: &str =
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVkdmF1bHQifQ.";

fn handle(state: &Mutex<TokenState>, r: Request) -> Response {
    let mut s = state.lock().unwrap();
    if r.method == "POST" && r.path == format!("/{TENANT}/oauth2/v2.0/token") {
        return handle_entra(&mut s, r);
    }
    if r.path != "/metadata/identity/oauth2/token" || r.method != "GET" {
        return Response::json(404, serde_json::json!({"error": "not_found"}));
    }
    if r.headers.get("metadata").map(String::as_str) != Some("true") {
        return Response::json(
            400,
            serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
        );
    }
    let resource = r.query.get("resource").cloned().unwrap_or_default();
    let (identity, oid) = if let Some(c) = r.query.get("client_id") {
        (
            format!("client_id={c}"),
            s.user_assigned
                .iter()
                .find(|u| &u.client_id == c)
                .map(|u| u.object_id.clone()),
        )
    } else if let Some(o) = r.query.get("object_id") {
        (
            format!("object_id={o}"),
            s.user_assigned
                .iter()
                .find(|u| &u.object_id == o)
                .map(|u| u.object_id.clone()),
        )
    } else if let Some(m) = r.query.get("msi_res_id") {
        (
            format!("msi_res_id={m}"),
            s.user_assigned
                .iter()
                .find(|u| &u.resource_id == m)
                .map(|u| u.object_id.clone()),
        )
    } else {
        ("system".to_string(), s.system_assigned.clone())
    };
    s.requests.push(TokenRequest {
        resource: resource.clone(),
        identity,
        issued_to: oid.clone(),
    });
    let Some(oid) = oid else {
        // What IMDS answers for an identity the VM does not have.
        return Response::json(
            400,
            serde_json::json!({"error": "invalid_request", "error_description": "Identity not found"}),
        );
    };
    let aud = match &s.aud_override {
        Some(a) if resource == "https://storage.azure.com" => a.clone(),
        _ => resource.clone(),
    };
    let token = jwt(&aud, &oid, s.not_before, s.expires_on);
    Response::json(
        200,
        serde_json::json!({
            "access_token": token,
            "client_id": format!("app-{oid}"),
            "expires_in": (s.expires_on - now()).to_string(),
            "expires_on": s.expires_on.to_string(),
            "ext_expires_in": (s.expires_on - now()).to_string(),
            "not_before": s.not_before.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}
