//! The HTTP transport for token requests when an endpoint is overridden: requests
//! meant for the managed-identity endpoint (169.254.169.254) or the Entra ID
//! authority go to the configured addresses instead, and any other request that
//! would leave loopback is refused. This is how tests run the real credential
//! code against a loopback token server without ever reaching the metadata address.

use azure_core::error::{Error, ErrorKind};
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Url};
use std::sync::Arc;

pub(crate) const IMDS_HOST: &str = "169.254.169.254";
pub(crate) const AUTHORITY_HOST: &str = "login.microsoftonline.com";

#[derive(Debug)]
pub(crate) struct EndpointOverride {
    inner: Arc<dyn HttpClient>,
    token_endpoint: Option<Url>,
    authority: Option<Url>,
}

impl EndpointOverride {
    pub(crate) fn new(token_endpoint: Option<Url>, authority: Option<Url>) -> Self {
        EndpointOverride {
            inner: azure_core::http::new_http_client(None),
            token_endpoint,
            authority,
        }
    }
}

/// Whether a URL's host is a loopback address (or `localhost`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn rebase(url: &mut Url, onto: &Url) -> Result<(), ()> {
    url.set_scheme(onto.scheme())?;
    url.set_host(onto.host_str()).map_err(|_| ())?;
    url.set_port(onto.port())?;
    Ok(())
}

#[async_trait::async_trait]
impl HttpClient for EndpointOverride {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut req = request.clone();
        let target = match req.url().host_str() {
            Some(IMDS_HOST) => self.token_endpoint.as_ref(),
            Some(AUTHORITY_HOST) => self.authority.as_ref(),
            _ => None,
        };
        if let Some(onto) = target {
            rebase(req.url_mut(), onto).map_err(|_| {
                Error::with_message(ErrorKind::Other, "cannot rewrite the token endpoint URL")
            })?;
        }
        if !is_loopback(req.url()) {
            let host = req.url().host_str().unwrap_or("?").to_string();
            return Err(Error::with_message(
                ErrorKind::Connection,
                format!("refusing to call {host}: with a token endpoint override set, only loopback addresses are reached"),
            ));
        }
        self.inner.execute_request(&req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    /// With an override set, a request for any other host fails before a
    /// connection is attempted; the metadata address is rewritten, never called.
    #[tokio::test]
    async fn only_loopback_is_reached() {
        // Port 9 on loopback: nothing listens, so a rewritten request fails to
        // connect (on loopback) rather than being refused by the policy.
        let t = EndpointOverride::new(Some(Url::parse("http://127.0.0.1:9").unwrap()), None);
        for far in [
            "https://example.com/x",
            "http://10.0.0.1/",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ] {
            let req = Request::new(Url::parse(far).unwrap(), Method::Get);
            let err = t.execute_request(&req).await.unwrap_err().to_string();
            assert!(err.contains("refusing to call"), "{far}: {err}");
        }
        let imds = Request::new(
            Url::parse("http://169.254.169.254/metadata/identity/oauth2/token").unwrap(),
            Method::Get,
        );
        let err = t.execute_request(&imds).await.unwrap_err().to_string();
        assert!(
            !err.contains("refusing"),
            "the metadata address must be rewritten: {err}"
        );
    }
}
