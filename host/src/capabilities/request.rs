//! `sluice:template/request`: reading the incoming request.

use crate::bindings::request::Host;
use crate::bindings::types::Error;
use crate::state::Invocation;

impl Host for Invocation {
    async fn method(&mut self) -> String {
        self.request.method.clone()
    }

    async fn path(&mut self) -> String {
        self.request.path.clone()
    }

    async fn query_string(&mut self) -> Result<String, Error> {
        self.allow(|g| g.check_query())?;
        Ok(self.request.query.clone())
    }

    async fn query_param(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_query())?;
        Ok(form_urlencoded::parse(self.request.query.as_bytes()).find(|(k, _)| *k == name).map(|(_, v)| v.into_owned()))
    }

    async fn header(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_request_header(&name))?;
        let values: Vec<&str> =
            self.request.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        Ok((!values.is_empty()).then(|| values.join(", ")))
    }

    async fn cookie(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.allow(|g| g.check_cookie(&name))?;
        let mut values = Vec::new();
        for header in self.request.headers.get_all(http::header::COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for cookie in cookie::Cookie::split_parse_encoded(text).flatten() {
                if cookie.name() == name {
                    values.push(cookie.value().to_string());
                }
            }
        }
        Ok(values)
    }

    async fn body(&mut self) -> Result<Vec<u8>, Error> {
        self.allow(|g| g.check_body())?;
        Ok(self.request.body.to_vec())
    }

    async fn remote_address(&mut self) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_remote_address())?;
        Ok(self.request.remote_addr.map(|ip| ip.to_string()))
    }
}
