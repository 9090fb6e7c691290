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
        if !self.personal_data_removed {
            return Ok(self.request.query.clone());
        }
        let consent = &self.services.consent;
        let kept = form_urlencoded::parse(self.request.query.as_bytes()).filter(|(k, _)| !consent.is_click_id(k));
        Ok(form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish())
    }

    async fn query_param(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_query())?;
        if self.personal_data_removed && self.services.consent.is_click_id(&name) {
            return Ok(None);
        }
        Ok(form_urlencoded::parse(self.request.query.as_bytes()).find(|(k, _)| *k == name).map(|(_, v)| v.into_owned()))
    }

    async fn header(&mut self, name: String) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_request_header(&name))?;
        let values: Vec<&str> =
            self.request.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        let value = (!values.is_empty()).then(|| values.join(", "));
        if self.personal_data_removed && name.eq_ignore_ascii_case("referer") {
            return Ok(value.map(|v| self.services.consent.strip_url(&v)));
        }
        Ok(value)
    }

    async fn cookie(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.allow(|g| g.check_cookie(&name))?;
        if self.personal_data_removed && self.services.consent.is_click_id(&name) {
            return Ok(Vec::new());
        }
        Ok(crate::state::cookie_values(&self.request.headers, &name))
    }

    async fn body(&mut self) -> Result<Vec<u8>, Error> {
        self.allow(|g| g.check_body())?;
        Ok(self.request.body.to_vec())
    }

    async fn remote_address(&mut self) -> Result<Option<String>, Error> {
        self.allow(|g| g.check_remote_address())?;
        if self.personal_data_removed {
            return Ok(None);
        }
        Ok(self.request.remote_addr.map(|ip| ip.to_string()))
    }
}
